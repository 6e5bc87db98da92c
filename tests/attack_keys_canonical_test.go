package tests

import (
	"fmt"
	"testing"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

// TestCrossSigningKeyNotCanonicalJSON: a cross-signing key is signed JSON that
// other clients canonicalize to verify; one holding a float, an integer
// beyond ±(2^53-1) or -0 is the client's error (400 M_BAD_JSON), not a 500,
// and is not stored.
func TestCrossSigningKeyNotCanonicalJSON(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice")
		_, pub := newSigningKey()
		for _, num := range []string{"1.5", "9007199254740993", "123456789012345678901234567890", "-0", "1e2"} {
			body := fmt.Sprintf(`{"master_key":{"user_id":%q,"usage":["master"],"keys":{"ed25519:%s":%q},"extra":%s}}`,
				alice.UserID, pub, pub, num)
			r := clientCall(t, alice, "POST", "/_matrix/client/v3/keys/device_signing/upload", body)
			if r.Status != 400 || r.errcode() != "M_BAD_JSON" {
				t.Errorf("master key holding %s: %d %s, want 400 M_BAD_JSON", num, r.Status, r.Raw)
			}
		}
		q := keysMustCall(t, alice, "POST", "/_matrix/client/v3/keys/query",
			map[string]any{"device_keys": map[string]any{alice.UserID.String(): []string{}}})
		if mk := obj(q["master_keys"])[alice.UserID.String()]; mk != nil {
			t.Errorf("a refused master key was stored: %v", mk)
		}
	})
}
