package tests

import (
	"net/url"
	"testing"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

// TestFilterValidation: POST /filter, /sync's inline filter and the
// RoomEventFilter of /messages and /context share one validator (inline
// filters skipped it), which also refuses room and user lists that are not
// IDs (Complement's TestFilter).
func TestFilterValidation(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice")
		room := createRoom(t, alice, nil)
		ev := sendText(t, alice, room, "hi")
		me := url.PathEscape(alice.UserID.String())
		roomBase := "/_matrix/client/v3/rooms/" + url.PathEscape(room.String())

		bad := []string{
			`{"event_format": "nonsense"}`,
			`{"room": {"state": {"lazy_load_members": "nonsense"}}}`,
			`{"room": {"state": {"include_redundant_members": "nonsense"}}}`,
			`{"room": {"timeline": {"types": "nonsense"}}}`,
			`{"room": {"rooms": ["not_a_room_id"]}}`,
			`{"room": {"not_rooms": ["not_a_room_id"]}}`,
			`{"room": {"timeline": {"rooms": ["not_a_room_id"]}}}`,
			`{"room": {"timeline": {"senders": ["not_a_sender_id"]}}}`,
			`{"room": {"state": {"not_senders": ["not_a_sender_id"]}}}`,
			`{"presence": {"senders": ["@"]}}`,
			`{"room": {"timeline": {"contains_url": "nonsense"}}}`,
			`{"room": {"ephemeral": {"limit": -1}}}`,
			`[]`,
		}
		for _, f := range bad {
			if r := clientCall(t, alice, "POST", "/_matrix/client/v3/user/"+me+"/filter", f); r.Status != 400 {
				t.Errorf("POST /filter %s = %d %s, want 400", f, r.Status, r.Raw)
			}
			if r := clientCall(t, alice, "GET", "/_matrix/client/v3/sync?timeout=0&filter="+url.QueryEscape(f), nil); r.Status != 400 || r.errcode() != "M_INVALID_PARAM" {
				t.Errorf("/sync with inline %s = %d %.200s, want 400 M_INVALID_PARAM", f, r.Status, r.Raw)
			}
		}
		// The same checks on a RoomEventFilter.
		for _, f := range []string{`{"senders": ["not_a_sender_id"]}`, `{"not_rooms": ["not_a_room_id"]}`, `{"limit": -1}`,
			`{"contains_url": "nonsense"}`, `{"types": "nonsense"}`} {
			for _, path := range []string{roomBase + "/messages?dir=b&filter=", roomBase + "/context/" + url.PathEscape(ev.String()) + "?filter="} {
				if r := clientCall(t, alice, "GET", path+url.QueryEscape(f), nil); r.Status != 400 {
					t.Errorf("%s%s = %d %.200s, want 400", path, f, r.Status, r.Raw)
				}
			}
		}

		good := []string{
			`{}`,
			`{"event_format": "client", "room": {"rooms": ["` + room.String() + `", "!opaqueV12RoomID"], "timeline": {"limit": 5, "senders": ["` + alice.UserID.String() + `"]}}}`,
			`{"room": {"state": {"lazy_load_members": true}, "timeline": {"not_senders": ["@someone:elsewhere.example"], "types": ["m.room.*"]}}}`,
		}
		for _, f := range good {
			if r := clientCall(t, alice, "POST", "/_matrix/client/v3/user/"+me+"/filter", f); r.Status != 200 {
				t.Errorf("POST /filter %s = %d %s", f, r.Status, r.Raw)
			}
			if r := clientCall(t, alice, "GET", "/_matrix/client/v3/sync?timeout=0&filter="+url.QueryEscape(f), nil); r.Status != 200 {
				t.Errorf("/sync with inline %s = %d %.200s", f, r.Status, r.Raw)
			}
		}
		if r := clientCall(t, alice, "GET", roomBase+"/messages?dir=b&filter="+url.QueryEscape(`{"senders": ["`+alice.UserID.String()+`"], "limit": 1}`), nil); r.Status != 200 {
			t.Errorf("/messages with a good filter = %d %s", r.Status, r.Raw)
		}
	})
}
