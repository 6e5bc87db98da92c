package tests

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"testing"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

// findNulls lists the JSON paths in raw whose value is null. The spec's
// response schemas never ask for null where an array or object goes; a Go
// nil slice or map encoded as null breaks strict clients.
func findNulls(raw []byte) []string {
	var v any
	if json.Unmarshal(raw, &v) != nil {
		return nil
	}
	var out []string
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch x := v.(type) {
		case nil:
			// GET /joined_members answers an unset profile field with
			// null, as Synapse does and Complement checks: a scalar.
			if !strings.HasSuffix(path, ".display_name") && !strings.HasSuffix(path, ".avatar_url") {
				out = append(out, path)
			}
		case map[string]any:
			for k, e := range x {
				walk(path+"."+k, e)
			}
		case []any:
			for i, e := range x {
				walk(fmt.Sprintf("%s[%d]", path, i), e)
			}
		}
	}
	walk("$", v)
	return out
}

// TestNoNullCollections walks the read endpoints (and the POSTs that answer
// with lists) as a fresh user with one empty room, and as another user who
// shares nothing, and checks that no answer holds a null: "notifications":
// null was the reported case.
func TestNoNullCollections(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		a := url.PathEscape(alice.UserID.String())
		dev := alice.DeviceID.String()
		created := clientCall(t, alice, "POST", "/_matrix/client/v3/createRoom", map[string]any{})
		room, _ := created.Body["room_id"].(string)
		if room == "" {
			t.Fatalf("createRoom = %d %s", created.Status, created.Raw)
		}
		r := url.PathEscape(room)
		msgs := clientCall(t, alice, "GET", "/_matrix/client/v3/rooms/"+r+"/messages?dir=b&limit=1", nil)
		chunk, _ := msgs.Body["chunk"].([]any)
		if len(chunk) == 0 {
			t.Fatalf("messages = %s", msgs.Raw)
		}
		ev := url.PathEscape(obj(chunk[0])["event_id"].(string))
		filter := clientCall(t, alice, "POST", "/_matrix/client/v3/user/"+a+"/filter", map[string]any{})
		filterID, _ := filter.Body["filter_id"].(string)
		sync := clientCall(t, alice, "GET", "/_matrix/client/v3/sync?timeout=0", nil)
		since, _ := sync.Body["next_batch"].(string)

		v3 := "/_matrix/client/v3"
		type call struct {
			method, path string
			body         any
		}
		calls := []call{
			{"GET", "/_matrix/client/versions", nil},
			{"GET", v3 + "/capabilities", nil},
			{"GET", v3 + "/account/whoami", nil},
			{"GET", v3 + "/account/3pid", nil},
			{"GET", v3 + "/devices", nil},
			{"GET", v3 + "/devices/" + dev, nil},
			{"GET", v3 + "/pushers", nil},
			{"GET", v3 + "/pushrules/", nil},
			{"GET", v3 + "/pushrules/global/", nil},
			{"GET", v3 + "/notifications", nil},
			{"GET", v3 + "/notifications?only=highlight", nil},
			{"GET", v3 + "/joined_rooms", nil},
			{"GET", v3 + "/sync?timeout=0", nil},
			{"GET", v3 + "/sync?timeout=0&full_state=true&filter=" + filterID, nil},
			{"GET", v3 + "/sync?timeout=0&since=" + url.QueryEscape(since), nil},
			{"GET", v3 + "/keys/changes?from=" + url.QueryEscape(since) + "&to=" + url.QueryEscape(since), nil},
			{"POST", v3 + "/keys/query", map[string]any{"device_keys": map[string]any{alice.UserID.String(): []string{}}}},
			{"POST", v3 + "/keys/query", map[string]any{"device_keys": map[string]any{}}},
			{"POST", v3 + "/keys/claim", map[string]any{"one_time_keys": map[string]any{}}},
			{"POST", v3 + "/keys/upload", map[string]any{}},
			{"GET", v3 + "/user/" + a + "/filter/" + filterID, nil},
			{"GET", v3 + "/publicRooms", nil},
			{"POST", v3 + "/publicRooms", map[string]any{}},
			{"POST", v3 + "/user_directory/search", map[string]any{"search_term": "nobody-matches-this"}},
			{"GET", v3 + "/presence/" + a + "/status", nil},
			{"GET", v3 + "/profile/" + a, nil},
			{"GET", v3 + "/login", nil},
			{"GET", v3 + "/rooms/" + r + "/members", nil},
			{"GET", v3 + "/rooms/" + r + "/joined_members", nil},
			{"GET", v3 + "/rooms/" + r + "/messages?dir=b", nil},
			{"GET", v3 + "/rooms/" + r + "/messages?dir=f&limit=0", nil},
			{"GET", v3 + "/rooms/" + r + "/state", nil},
			{"GET", v3 + "/rooms/" + r + "/context/" + ev, nil},
			{"GET", v3 + "/rooms/" + r + "/event/" + ev, nil},
			{"GET", v3 + "/rooms/" + r + "/aliases", nil},
			{"GET", "/_matrix/client/v1/rooms/" + r + "/relations/" + ev, nil},
			{"GET", "/_matrix/client/v1/rooms/" + r + "/threads", nil},
			{"GET", "/_matrix/client/v1/rooms/" + r + "/hierarchy", nil},
			{"GET", v3 + "/user/" + a + "/rooms/" + r + "/tags", nil},
			{"GET", "/_matrix/client/v1/media/config", nil},
			{"GET", "/_matrix/client/v1/room_summary/" + r, nil},
			{"POST", "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync", map[string]any{
				"lists": map[string]any{"all": map[string]any{"ranges": [][]int{{0, 10}}, "timeline_limit": 1}},
				"extensions": map[string]any{"e2ee": map[string]any{"enabled": true}, "to_device": map[string]any{"enabled": true},
					"account_data": map[string]any{"enabled": true}, "receipts": map[string]any{"enabled": true}, "typing": map[string]any{"enabled": true}}}},
		}
		for _, c := range calls {
			res := clientCall(t, alice, c.method, c.path, c.body)
			if res.Status != 200 {
				t.Errorf("%s %s = %d %.200s", c.method, c.path, res.Status, res.Raw)
				continue
			}
			if nulls := findNulls([]byte(res.Raw)); len(nulls) > 0 {
				t.Errorf("%s %s: null at %s: %.300s", c.method, c.path, strings.Join(nulls, ", "), res.Raw)
			}
		}
		// A user who shares nothing with alice.
		for _, c := range []call{
			{"POST", v3 + "/keys/query", map[string]any{"device_keys": map[string]any{alice.UserID.String(): []string{}}}},
			{"GET", v3 + "/notifications", nil},
			{"GET", v3 + "/sync?timeout=0", nil},
			{"GET", v3 + "/joined_rooms", nil},
		} {
			res := clientCall(t, bob, c.method, c.path, c.body)
			if nulls := findNulls([]byte(res.Raw)); res.Status != 200 || len(nulls) > 0 {
				t.Errorf("bob: %s %s = %d, null at %v: %.300s", c.method, c.path, res.Status, nulls, res.Raw)
			}
		}
	})
}
