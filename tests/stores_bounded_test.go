package tests

import (
	"fmt"
	"net/url"
	"strings"
	"testing"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

// TestStoredClientTextIsBounded: filters, report reasons and key backup data
// are stored as the client sent them; each has a bound (a 9 MB value was
// accepted within the 10 MiB body cap), and a refused request stores nothing.
func TestStoredClientTextIsBounded(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice")
		big := strings.Repeat("x", 70<<10)
		me := url.PathEscape(alice.UserID.String())

		r := clientCall(t, alice, "POST", "/_matrix/client/v3/user/"+me+"/filter", `{"org.example.pad":"`+big+`"}`)
		if r.Status != 413 || r.errcode() != "M_TOO_LARGE" {
			t.Errorf("70 KiB filter = %d %s", r.Status, r.errcode())
		}
		if r := clientCall(t, alice, "GET", "/_matrix/client/v3/user/"+me+"/filter/0", nil); r.Status != 404 {
			t.Errorf("a refused filter was stored: %d %s", r.Status, r.Raw)
		}

		room := createRoom(t, alice, nil)
		ev := sendText(t, alice, room, "reported")
		reportPath := fmt.Sprintf("/_matrix/client/v3/rooms/%s/report/%s", url.PathEscape(room.String()), url.PathEscape(ev.String()))
		if r := clientCall(t, alice, "POST", reportPath, map[string]any{"reason": strings.Repeat("r", 5000)}); r.Status != 400 || r.errcode() != "M_INVALID_PARAM" {
			t.Errorf("5000-byte report reason = %d %s", r.Status, r.errcode())
		}
		if r := clientCall(t, alice, "POST", reportPath, map[string]any{"reason": "spam"}); r.Status != 200 {
			t.Errorf("ordinary report = %d %s", r.Status, r.Raw)
		}

		algo := "m.megolm_backup.v1.curve25519-aes-sha2"
		if r := clientCall(t, alice, "POST", "/_matrix/client/v3/room_keys/version", map[string]any{"algorithm": algo, "auth_data": map[string]any{"public_key": big}}); r.Status != 413 || r.errcode() != "M_TOO_LARGE" {
			t.Errorf("70 KiB auth_data = %d %s", r.Status, r.errcode())
		}
		if r := clientCall(t, alice, "GET", "/_matrix/client/v3/room_keys/version", nil); r.Status != 404 {
			t.Errorf("a refused backup version was stored: %d %s", r.Status, r.Raw)
		}
		r = clientCall(t, alice, "POST", "/_matrix/client/v3/room_keys/version", map[string]any{"algorithm": algo, "auth_data": map[string]any{"public_key": "abc"}})
		version, _ := r.Body["version"].(string)
		if r.Status != 200 || version == "" {
			t.Fatalf("create backup version = %d %s", r.Status, r.Raw)
		}
		keyPath := fmt.Sprintf("/_matrix/client/v3/room_keys/keys/%s/sess1?version=%s", url.PathEscape(room.String()), version)
		key := func(data string) map[string]any {
			return map[string]any{"first_message_index": 0, "forwarded_count": 0, "is_verified": false, "session_data": map[string]any{"ciphertext": data}}
		}
		if r := clientCall(t, alice, "PUT", keyPath, key(big)); r.Status != 413 || r.errcode() != "M_TOO_LARGE" {
			t.Errorf("70 KiB session_data = %d %s", r.Status, r.errcode())
		}
		if r := clientCall(t, alice, "GET", keyPath, nil); r.Status != 404 {
			t.Errorf("a refused backup key was stored: %d %s", r.Status, r.Raw)
		}
		if r := clientCall(t, alice, "PUT", keyPath, key("small")); r.Status != 200 {
			t.Errorf("ordinary backup key = %d %s", r.Status, r.Raw)
		}
	})
}
