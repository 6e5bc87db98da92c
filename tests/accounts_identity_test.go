package tests

import (
	"testing"

	"maunium.net/go/mautrix"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

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
