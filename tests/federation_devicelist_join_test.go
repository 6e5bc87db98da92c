package tests

import (
	"context"
	"testing"
	"time"

	"maunium.net/go/mautrix"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

// TestDeviceListAnnouncedOnJoin: alice@a.test, sharing no room with b.test,
// joins bob's room there: a.test tells b.test her devices at once (an
// m.device_list_update per device, Complement's
// TestDeviceListsUpdateOverFederationOnRoomJoin), so b.test's cache holds her
// device before anyone asks for it. Her second join into another of b.test's
// rooms brings no new server and sends nothing more.
func TestDeviceListAnnouncedOnJoin(t *testing.T) {
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) {
			n := newFedNet(t, "a.test", "b.test")
			a := n.start(t, backend, "a.test")
			b := n.start(t, backend, "b.test")
			ctx := ctxT(t)
			alice, bob := a.Register(t, "alice"), b.Register(t, "bob")
			dev := newTestDevice(alice.UserID.String(), alice.DeviceID.String())
			keysMustCall(t, alice, "POST", "/_matrix/client/v3/keys/upload", map[string]any{"device_keys": dev.deviceKeys(t)})
			// A second device that has no keys (yet) is one of hers all the same.
			if _, err := a.Client(t).Login(ctx, &mautrix.ReqLogin{Type: mautrix.AuthTypePassword,
				Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "alice"},
				Password:   "password-alice", DeviceID: "KEYLESS"}); err != nil {
				t.Fatal(err)
			}
			room := createRoom(t, bob, &mautrix.ReqCreateRoom{Preset: "public_chat"})
			if _, err := alice.JoinRoom(ctx, string(room), &mautrix.ReqJoinRoom{Via: []string{"b.test"}}); err != nil {
				t.Fatal(err)
			}
			cached := func() int64 {
				lists, err := b.DB.RemoteDeviceLists(context.Background(), []string{alice.UserID.String()})
				if err != nil {
					t.Fatal(err)
				}
				if l := lists[alice.UserID.String()]; l != nil && len(l.Devices) == 2 {
					return l.StreamID
				}
				return 0
			}
			deadline := time.Now().Add(20 * time.Second)
			for cached() == 0 && time.Now().Before(deadline) {
				time.Sleep(50 * time.Millisecond)
			}
			first := cached()
			if first == 0 {
				t.Fatal("b.test never learned alice's two devices (one without keys) from her join")
			}
			room2 := createRoom(t, bob, &mautrix.ReqCreateRoom{Preset: "public_chat"})
			if _, err := alice.JoinRoom(ctx, string(room2), &mautrix.ReqJoinRoom{Via: []string{"b.test"}}); err != nil {
				t.Fatal(err)
			}
			// Delivered after any EDU the join queued (one queue per destination).
			evID := sendText(t, alice, room2, "after the second join")
			syncUntilLabeled(t, bob, "", "alice's message", func(r *mautrix.RespSync) bool {
				jr := r.Rooms.Join[room2]
				if jr == nil {
					return false
				}
				for _, e := range jr.Timeline.Events {
					if e.ID == evID {
						return true
					}
				}
				return false
			})
			if got := cached(); got != first {
				t.Fatalf("a second join into a room of a server already sharing one sent updates again: stream_id %d → %d", first, got)
			}
		})
	}
}

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
