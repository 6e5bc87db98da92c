package tests

import (
	"testing"
	"time"

	"maunium.net/go/mautrix"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

// TestDeviceRenameAnnounced: renaming a device changes the device list:
// bob@b.test's /sync names alice in device_lists.changed and his /keys/query
// shows the new name; carol on alice's own server is told too (Complement's
// TestFederationKeyUploadQuery).
func TestDeviceRenameAnnounced(t *testing.T) {
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) {
			n := newFedNet(t, "a.test", "b.test")
			a := n.start(t, backend, "a.test")
			b := n.start(t, backend, "b.test")
			ctx := ctxT(t)
			alice, carol, bob := a.Register(t, "alice"), a.Register(t, "carol"), b.Register(t, "bob")
			dev := newTestDevice(alice.UserID.String(), alice.DeviceID.String())
			keysMustCall(t, alice, "POST", "/_matrix/client/v3/keys/upload", map[string]any{"device_keys": dev.deviceKeys(t)})
			room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"}, carol)
			if _, err := bob.JoinRoom(ctx, string(room), &mautrix.ReqJoinRoom{Via: []string{"a.test"}}); err != nil {
				t.Fatal(err)
			}
			since := map[*mautrix.Client]string{}
			for _, c := range []*mautrix.Client{bob, carol} {
				r, err := c.SyncRequest(ctx, 0, "", "", false, "")
				if err != nil {
					t.Fatal(err)
				}
				since[c] = r.NextBatch
			}
			r := clientCall(t, alice, "PUT", "/_matrix/client/v3/devices/"+alice.DeviceID.String(), map[string]string{"display_name": "kitchen tablet"})
			if r.Status != 200 {
				t.Fatalf("rename: %d %s", r.Status, r.Raw)
			}
			for _, c := range []*mautrix.Client{bob, carol} {
				if !changedSince(t, c, since[c], alice.UserID.String(), 20*time.Second) {
					t.Fatalf("%s's sync never named alice in device_lists.changed after her rename", c.UserID)
				}
			}
			q := keysMustCall(t, bob, "POST", "/_matrix/client/v3/keys/query", map[string]any{
				"device_keys": map[string]any{alice.UserID.String(): []string{}}})
			keys := obj(obj(q["device_keys"])[alice.UserID.String()])[alice.DeviceID.String()]
			if name := obj(obj(keys)["unsigned"])["device_display_name"]; name != "kitchen tablet" {
				t.Fatalf("bob sees alice's device named %v: %v", name, keys)
			}
		})
	}
}
