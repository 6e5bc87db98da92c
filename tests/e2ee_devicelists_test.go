package tests

import (
	"context"
	"slices"
	"testing"

	"maunium.net/go/mautrix"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

// TestDeviceListsFollowSharedRooms checks the device-list fan-out against
// real room memberships: a key upload is reported to users sharing a room
// with the uploader and to no one else, and leaving the last shared room
// reports the user as left.
func TestDeviceListsFollowSharedRooms(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		alice, bob, carol := srv.Register(t, "alice"), srv.Register(t, "bob"), srv.Register(t, "carol")
		roomID := shareRoom(t, alice, bob)
		changes := func(c *mautrix.Client, from int64) (changed, left []string) {
			t.Helper()
			changed, left, err := srv.Keys.DeviceListChanges(ctx, c.UserID.String(), from, srv.DB.Stream.Current())
			if err != nil {
				t.Fatal(err)
			}
			return changed, left
		}

		from := srv.DB.Stream.Current()
		dev := newTestDevice(bob.UserID.String(), bob.DeviceID.String())
		keysMustCall(t, bob, "POST", "/_matrix/client/v3/keys/upload", map[string]any{"device_keys": dev.deviceKeys(t)})
		if changed, _ := changes(alice, from); !slices.Contains(changed, bob.UserID.String()) {
			t.Errorf("alice shares a room with bob but was not told of his new keys: %v", changed)
		}
		if changed, _ := changes(carol, from); slices.Contains(changed, bob.UserID.String()) {
			t.Errorf("carol shares no room with bob but was told of his keys: %v", changed)
		}

		from = srv.DB.Stream.Current()
		if _, err := bob.LeaveRoom(ctx, roomID); err != nil {
			t.Fatal(err)
		}
		if _, left := changes(alice, from); !slices.Contains(left, bob.UserID.String()) {
			t.Errorf("bob left the only shared room but alice's left list is %v", left)
		}
		from = srv.DB.Stream.Current()
		if _, err := carol.JoinRoomByID(ctx, roomID); err != nil {
			t.Fatal(err)
		}
		if changed, _ := changes(alice, from); !slices.Contains(changed, carol.UserID.String()) {
			t.Errorf("carol joined alice's room but alice's changed list is %v", changed)
		}
	})
}
