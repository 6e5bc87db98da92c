package tests

import (
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

// TestFederationInviteToStaleRoom (Complement's TestUnbanViaInvite): bob
// (b.test) joins a.test's room and is banned, so b.test stops following the
// room; alice unbans and invites him. b.test knows the room, but its copy is
// stale (bob may still be banned in it) and the invite never comes by /send:
// the invite received by /invite must still reach bob's /sync; rejecting it
// goes through a.test (send_leave); a second invite's join goes over
// federation and replaces the out-of-band events with the room's own.
func TestFederationInviteToStaleRoom(t *testing.T) {
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) {
			n := newFedNet(t, "a.test", "b.test")
			a := n.start(t, backend, "a.test")
			b := n.start(t, backend, "b.test")
			ctx := ctxT(t)
			alice := a.Register(t, "alice")
			bob := b.Register(t, "bob")
			room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
			if _, err := bob.JoinRoom(ctx, string(room), &mautrix.ReqJoinRoom{Via: []string{"a.test"}}); err != nil {
				t.Fatalf("join: %v", err)
			}
			membership := func(since string, want string) string {
				t.Helper()
				var next string
				syncUntil(t, bob, since, "", func(r *mautrix.RespSync) bool {
					next = r.NextBatch
					switch want {
					case "ban":
						_, ok := r.Rooms.Leave[room]
						return ok
					case "invite":
						_, ok := r.Rooms.Invite[room]
						return ok
					case "join":
						_, ok := r.Rooms.Join[room]
						return ok
					}
					return false
				})
				return next
			}
			since := membership("", "join")
			must(alice.BanUser(ctx, room, &mautrix.ReqBanUser{UserID: bob.UserID}))
			since = membership(since, "ban")
			must(alice.UnbanUser(ctx, room, &mautrix.ReqUnbanUser{UserID: bob.UserID}))
			must(alice.InviteUser(ctx, room, &mautrix.ReqInviteUser{UserID: bob.UserID}))
			if _, err := b.DB.GetRoom(ctx, string(room)); err != nil {
				t.Fatalf("b.test should still know the room: %v", err)
			}
			since = membership(since, "invite")

			// Rejecting the invite goes through a.test (send_leave): a local
			// leave would be authorized against the stale copy.
			must(bob.LeaveRoom(ctx, room))
			since = membership(since, "ban") // the room moves to leave
			for i := 0; ; i++ {
				var m struct {
					Membership string `json:"membership"`
				}
				if alice.StateEvent(ctx, room, event.StateMember, string(bob.UserID), &m) == nil && m.Membership == "leave" {
					break
				}
				if i == 100 {
					t.Fatalf("a.test never saw bob reject the invite: %q", m.Membership)
				}
				time.Sleep(50 * time.Millisecond)
			}
			must(alice.InviteUser(ctx, room, &mautrix.ReqInviteUser{UserID: bob.UserID}))
			membership(since, "invite")

			if _, err := bob.JoinRoom(ctx, string(room), &mautrix.ReqJoinRoom{Via: []string{"a.test"}}); err != nil {
				t.Fatalf("join after the invite: %v", err)
			}
			if _, ok := must(alice.JoinedMembers(ctx, room)).Joined[bob.UserID]; !ok {
				t.Fatal("a.test does not list bob after the join")
			}
			if _, ok := must(bob.JoinedMembers(ctx, room)).Joined[bob.UserID]; !ok {
				t.Fatal("b.test does not list bob after the join")
			}
			if ids := must(b.DB.OutOfBandEventIDs(ctx, string(room))); len(ids) != 0 {
				t.Fatalf("out-of-band rows left after the rejoin: %v", ids)
			}
		})
	}
}
