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

// TestDeviceKeysUploadShapes: device keys with an empty signatures object are
// stored and served (Complement's TestDeviceListUpdates uploads such keys;
// Synapse and Dendrite accept them), while device keys missing their required
// fields are M_BAD_JSON (TestUploadKey), not M_INVALID_PARAM.
func TestDeviceKeysUploadShapes(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice")
		a, dev := alice.UserID.String(), alice.DeviceID.String()
		if r := clientCall(t, alice, "POST", "/_matrix/client/v3/keys/upload", map[string]any{
			"device_keys": map[string]any{"user_id": a, "device_id": dev}}); r.Status != 400 || r.errcode() != "M_BAD_JSON" {
			t.Fatalf("device keys without algorithms, keys, signatures = %d %s, want 400 M_BAD_JSON", r.Status, r.Raw)
		}
		ed, curve := randomKey(), randomKey()
		keys := map[string]any{"user_id": a, "device_id": dev, "algorithms": []string{"m.olm.v1.curve25519-aes-sha2"},
			"keys": map[string]any{"ed25519:" + dev: ed, "curve25519:" + dev: curve}, "signatures": map[string]any{}}
		if r := clientCall(t, alice, "POST", "/_matrix/client/v3/keys/upload", map[string]any{"device_keys": keys}); r.Status != 200 {
			t.Fatalf("device keys with empty signatures = %d %s, want 200", r.Status, r.Raw)
		}
		r := clientCall(t, alice, "POST", "/_matrix/client/v3/keys/query", map[string]any{"device_keys": map[string]any{a: []string{}}})
		got := obj(obj(obj(r.Body["device_keys"])[a])[dev])
		if obj(got["keys"])["ed25519:"+dev] != ed {
			t.Fatalf("query after upload = %s", r.Raw)
		}
	})
}

// TestUserIDCase: registration lower-cases the username; login and UIA
// identifiers name local users case-insensitively (Complement TestLogin,
// TestRegistration).
func TestUserIDCase(t *testing.T) {
	srv := testserver.Start(t, "sqlite")
	c := srv.Client(t)
	resp, err := c.RegisterDummy(t.Context(), &mautrix.ReqRegister[any]{Username: "User-UPPER", Password: "password-user"})
	if err != nil {
		t.Fatal(err)
	}
	if want := srv.UserID("user-upper"); resp.UserID != want {
		t.Fatalf("registered %s, want %s", resp.UserID, want)
	}
	for _, name := range []string{"@USER-upper:" + srv.Config.ServerName, "USER-UPPER"} {
		lc, err := loginPassword(t, srv, name, "password-user", "")
		if err != nil {
			t.Fatalf("login as %s: %v", name, err)
		}
		if lc.UserID != resp.UserID {
			t.Fatalf("login as %s gave %s", name, lc.UserID)
		}
	}
}

// TestUIAIdentifierOfAnotherUser: authenticating a request with another
// user's identifier (and their right password) is 403, not a new 401
// challenge (Complement TestDeviceManagement).
func TestUIAIdentifierOfAnotherUser(t *testing.T) {
	srv := testserver.Start(t, "sqlite")
	alice := srv.Register(t, "alice")
	bob := srv.Register(t, "bob")
	_ = must(loginPassword(t, srv, "alice", "password-alice", "SECOND"))
	r := clientCall(t, alice, "DELETE", "/_matrix/client/v3/devices/SECOND", map[string]any{"auth": map[string]any{
		"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": bob.UserID.String()},
		"password": "password-bob"}})
	if r.Status != 403 || r.errcode() != "M_FORBIDDEN" {
		t.Fatalf("delete with bob's identifier = %d %s, want 403 M_FORBIDDEN", r.Status, r.Raw)
	}
	// Alice's own identifier in another case is still hers.
	r = clientCall(t, alice, "DELETE", "/_matrix/client/v3/devices/SECOND", map[string]any{"auth": map[string]any{
		"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": "@ALICE:" + srv.Config.ServerName},
		"password": "password-alice"}})
	if r.Status != 200 {
		t.Fatalf("delete with alice's identifier in upper case = %d %s", r.Status, r.Raw)
	}
}
