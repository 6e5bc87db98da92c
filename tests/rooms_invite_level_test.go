package tests

import (
	"context"
	"testing"

	"maunium.net/go/mautrix"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

// TestCreateRoomInviteLevel: createRoom's default power levels, as
// Synapse's presets: in a public_chat room only moderators invite (invite
// 50: a member at level 0 gets 403; Complement's
// TestRestrictedRoomsRemoteJoinLocalUser), in a private_chat room any member
// may (invite 0; Complement's TestFederationRoomsInvite); the creator always.
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
			if want := map[string]int{"public_chat": 403, "private_chat": 200}[preset]; r.Status != want {
				t.Errorf("%s: a member's invite: %d %s, want %d", preset, r.Status, r.Raw, want)
			}
			if preset == "private_chat" {
				continue // carol is invited already
			}
			if r := clientCall(t, alice, "POST", "/_matrix/client/v3/rooms/"+string(room.RoomID)+"/invite", map[string]any{"user_id": carol.UserID}); r.Status != 200 {
				t.Errorf("%s: the creator's invite: %d %s", preset, r.Status, r.Raw)
			}
		}
	})
}
