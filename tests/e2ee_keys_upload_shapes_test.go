package tests

import (
	"testing"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

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
