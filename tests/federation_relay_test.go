package tests

import (
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

// TestFederationRelaysSentMemberships: a.test hosts a room b.test is in; a
// user of c.test joins, then leaves, through a.test (send_join, send_leave).
// Only a.test received those events: it passes them on, so bob on b.test
// sees carol join and leave with nothing else sent in the room.
func TestFederationRelaysSentMemberships(t *testing.T) {
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) {
			n := newFedNet(t, "a.test", "b.test", "c.test")
			a := n.start(t, backend, "a.test")
			b := n.start(t, backend, "b.test")
			c := n.start(t, backend, "c.test")
			ctx := ctxT(t)
			alice, bob, carol := a.Register(t, "alice"), b.Register(t, "bob"), c.Register(t, "carol")
			room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
			if _, err := bob.JoinRoom(ctx, string(room), &mautrix.ReqJoinRoom{Via: []string{"a.test"}}); err != nil {
				t.Fatal(err)
			}
			since := must(bob.SyncRequest(ctx, 0, "", "", false, "")).NextBatch
			membershipOf := func(r *mautrix.RespSync, want string) bool {
				jr, ok := r.Rooms.Join[room]
				if !ok {
					return false
				}
				for _, e := range jr.Timeline.Events {
					if e.Type == event.StateMember && e.GetStateKey() == string(carol.UserID) && e.Content.Raw["membership"] == want {
						return true
					}
				}
				return false
			}
			if _, err := carol.JoinRoom(ctx, string(room), &mautrix.ReqJoinRoom{Via: []string{"a.test"}}); err != nil {
				t.Fatal(err)
			}
			since = syncUntil(t, bob, since, "", func(r *mautrix.RespSync) bool { return membershipOf(r, "join") }).NextBatch
			if _, err := carol.LeaveRoom(ctx, room); err != nil {
				t.Fatal(err)
			}
			syncUntil(t, bob, since, "", func(r *mautrix.RespSync) bool { return membershipOf(r, "leave") })
		})
	}
}
