package tests

import (
	"net/url"
	"strings"
	"testing"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

// TestTransactionIDsAndToDeviceTypesAreBounded: a transaction ID is stored
// with the sender's device and a to-device event type with every recipient's
// message (and relayed to their /sync). Neither may be as long as a request
// line: beyond 255 bytes they are refused with M_INVALID_PARAM and nothing is
// stored or delivered; ordinary ones still work.
func TestTransactionIDsAndToDeviceTypesAreBounded(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		room := shareRoom(t, alice, bob)
		roomPath := "/_matrix/client/v3/rooms/" + url.PathEscape(string(room))
		since := syncOnce(t, bob, "", "", 0).NextBatch
		long := strings.Repeat("t", 60_000)
		want := func(what string, r rawResp) {
			t.Helper()
			if r.Status != 400 || r.errcode() != "M_INVALID_PARAM" {
				t.Errorf("%s: %d %.200s, want 400 M_INVALID_PARAM", what, r.Status, r.Raw)
			}
		}
		want("message with a 60 kB transaction ID", clientCall(t, alice, "PUT", roomPath+"/send/m.room.message/"+long,
			map[string]any{"msgtype": "m.text", "body": "long txn"}))
		msg := sendText(t, alice, room, "ordinary")
		want("redaction with a 60 kB transaction ID", clientCall(t, alice, "PUT", roomPath+"/redact/"+url.PathEscape(string(msg))+"/"+long, map[string]any{}))
		toBob := map[string]any{"messages": map[string]any{bob.UserID.String(): map[string]any{bob.DeviceID.String(): map[string]string{"marker": "long"}}}}
		want("to-device with a 60 kB transaction ID", clientCall(t, alice, "PUT", "/_matrix/client/v3/sendToDevice/m.test/"+long, toBob))
		want("to-device with a 60 kB event type", clientCall(t, alice, "PUT", "/_matrix/client/v3/sendToDevice/"+long+"/txn1", toBob))

		ok := strings.Repeat("x", 255)
		if r := clientCall(t, alice, "PUT", "/_matrix/client/v3/sendToDevice/m.test/"+ok,
			map[string]any{"messages": map[string]any{bob.UserID.String(): map[string]any{bob.DeviceID.String(): map[string]string{"marker": "ok"}}}}); r.Status != 200 {
			t.Fatalf("to-device with a 255-byte transaction ID: %d %s", r.Status, r.Raw)
		}
		got := syncOnce(t, bob, since, "", 0)
		if hasToDevice(got, "long") || !hasToDevice(got, "ok") {
			t.Errorf("to-device delivered: %+v; want only the ordinary one", got.ToDevice.Events)
		}
		if jr := got.Rooms.Join[room]; jr != nil {
			for _, e := range jr.Timeline.Events {
				if e.Content.Raw["body"] == "long txn" || e.Type.Type == "m.room.redaction" {
					t.Errorf("refused event was sent: %s %v", e.Type.Type, e.Content.Raw)
				}
			}
		}
	})
}
