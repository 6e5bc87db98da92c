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
			room := createRoom(t, bob, &mautrix.ReqCreateRoom{Preset: "public_chat"})
			if _, err := alice.JoinRoom(ctx, string(room), &mautrix.ReqJoinRoom{Via: []string{"b.test"}}); err != nil {
				t.Fatal(err)
			}
			cached := func() int64 {
				lists, err := b.DB.RemoteDeviceLists(context.Background(), []string{alice.UserID.String()})
				if err != nil {
					t.Fatal(err)
				}
				if l := lists[alice.UserID.String()]; l != nil && len(l.Devices) > 0 {
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
				t.Fatal("b.test never learned alice's device from her join")
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
