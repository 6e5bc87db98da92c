package tests

import (
	"context"
	"testing"

	"maunium.net/go/mautrix"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

// TestCreateRoomInviteLevel: createRoom's default power levels let only
// moderators invite (invite 50, as Synapse), in a public room too: a member
// at level 0 gets 403 (Complement's TestRestrictedRoomsRemoteJoinLocalUser
// relies on it), the creator may.
func TestCreateRoomInviteLevel(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		alice, bob, carol := srv.Register(t, "alice"), srv.Register(t, "bob"), srv.Register(t, "carol")
		for _, preset := range []string{"public_chat", "private_chat"} {
			room := must(alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: preset, Invite: nil}))
			if preset == "private_chat" {
				must(alice.InviteUser(ctx, room.RoomID, &mautrix.ReqInviteUser{UserID: bob.UserID}))
			}
			must(bob.JoinRoom(ctx, string(room.RoomID), nil))
			r := clientCall(t, bob, "POST", "/_matrix/client/v3/rooms/"+string(room.RoomID)+"/invite", map[string]any{"user_id": carol.UserID})
			if r.Status != 403 {
				t.Errorf("%s: a member's invite: %d %s, want 403", preset, r.Status, r.Raw)
			}
			if r := clientCall(t, alice, "POST", "/_matrix/client/v3/rooms/"+string(room.RoomID)+"/invite", map[string]any{"user_id": carol.UserID}); r.Status != 200 {
				t.Errorf("%s: the creator's invite: %d %s", preset, r.Status, r.Raw)
			}
		}
	})
}
