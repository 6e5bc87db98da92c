package tests

import (
	"strings"
	"testing"

	"maunium.net/go/mautrix"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

// TestPasswordChangeDropsOtherSessionsPushers: a password change that logs
// the other devices out also deletes the pushers they set (they kept
// notifying a logged-out phone); the pusher of the session that changed the
// password stays. Deleting a device drops its pushers too.
func TestPasswordChangeDropsOtherSessionsPushers(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice")
		phone := must(loginPassword(t, srv, "alice", "password-alice", "PHONE"))
		laptop := must(loginPassword(t, srv, "alice", "password-alice", "LAPTOP"))
		setPusher := func(c *mautrix.Client, key string) {
			body := pusherBody("https://push.example.org/_matrix/push/v1/notify")
			body["pushkey"] = key
			if r := clientCall(t, c, "POST", "/_matrix/client/v3/pushers/set", body); r.Status != 200 {
				t.Fatalf("pushers/set = %d %s", r.Status, r.Raw)
			}
		}
		setPusher(alice, "mine")
		setPusher(phone, "phone")
		setPusher(laptop, "laptop")
		pushkeys := func() []string {
			r := clientCall(t, alice, "GET", "/_matrix/client/v3/pushers", nil)
			var keys []string
			for _, p := range r.Body["pushers"].([]any) {
				keys = append(keys, p.(map[string]any)["pushkey"].(string))
			}
			return keys
		}
		if r := clientCall(t, alice, "DELETE", "/_matrix/client/v3/devices/LAPTOP", map[string]any{
			"auth": passwordAuth("", alice.UserID, "password-alice")}); r.Status != 200 {
			t.Fatalf("delete device = %d %s", r.Status, r.Raw)
		}
		if got := strings.Join(pushkeys(), ","); got != "mine,phone" {
			t.Fatalf("pushers after deleting LAPTOP = %s, want mine,phone", got)
		}
		if r := clientCall(t, alice, "POST", "/_matrix/client/v3/account/password", map[string]any{
			"auth": passwordAuth("", alice.UserID, "password-alice"), "new_password": "another-password-1"}); r.Status != 200 {
			t.Fatalf("password change = %d %s", r.Status, r.Raw)
		}
		if got := strings.Join(pushkeys(), ","); got != "mine" {
			t.Fatalf("pushers after the password change = %s, want only mine", got)
		}
	})
}
