package tests

import (
	"net/http"
	"slices"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

// TestFederationRemoteJoin: two Myelin servers over loopback. A user of
// a.test creates a public room; a user of b.test joins it by room ID with
// server_name=a.test (make_join, send_join, the answer verified and imported
// by b.test); b.test's /sync shows the room with its state and the join, and
// a.test's members list shows the user (a.test persisted the join). An
// invite-only room is refused with M_FORBIDDEN and leaves nothing on b.test;
// an unknown room with no reachable server is M_NOT_FOUND.
func TestFederationRemoteJoin(t *testing.T) {
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) {
			n := newFedNet(t, "a.test", "b.test", "gone.test") // gone.test: nobody listens
			a := n.start(t, backend, "a.test")
			b := n.start(t, backend, "b.test")
			ctx := ctxT(t)
			alice := a.Register(t, "alice")
			bob := b.Register(t, "bob")
			room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Federated"})
			sendText(t, alice, room, "before bob")
			private := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat"})

			// Not public: a.test refuses, b.test keeps nothing.
			_, err := bob.JoinRoom(ctx, string(private), &mautrix.ReqJoinRoom{Via: []string{"a.test"}})
			wantErr(t, err, http.StatusForbidden, "M_FORBIDDEN")
			if _, err := b.DB.GetRoom(ctx, string(private)); err == nil {
				t.Fatal("a refused join left a room on b.test")
			}
			// No server to ask.
			_, err = bob.JoinRoom(ctx, "!unknown:gone.test", nil)
			wantErr(t, err, http.StatusNotFound, "M_NOT_FOUND")

			// The join, with server_name (the room ID's domain is a.test too;
			// the parameter is what a client sends).
			resp, err := bob.MakeRequest(ctx, http.MethodPost, bob.BuildURLWithQuery(mautrix.ClientURLPath{"v3", "join", room},
				map[string]string{"server_name": "a.test"}), struct{}{}, nil)
			if err != nil {
				t.Fatalf("remote join: %v (%s)", err, resp)
			}
			// b.test: the room in /sync, with its state and bob's join.
			sync := must(bob.SyncRequest(ctx, 0, "", "", false, ""))
			joined, ok := sync.Rooms.Join[room]
			if !ok {
				t.Fatalf("room not in b.test's sync: %+v", sync.Rooms)
			}
			var types []string
			bobJoined := false
			for _, list := range [][]*event.Event{joined.State.Events, joined.Timeline.Events} {
				for _, e := range list {
					types = append(types, e.Type.Type)
					if e.Type == event.StateMember && e.GetStateKey() == string(bob.UserID) && e.Content.Raw["membership"] == "join" {
						bobJoined = true
					}
				}
			}
			if !bobJoined || !slices.Contains(types, "m.room.create") || !slices.Contains(types, "m.room.name") {
				t.Fatalf("b.test's sync of the room: types %v, bob joined %v", types, bobJoined)
			}
			members := must(bob.JoinedMembers(ctx, room))
			if _, ok := members.Joined[alice.UserID]; !ok {
				t.Fatalf("b.test's members: %v", members.Joined)
			}
			// a.test persisted the join.
			members = must(alice.JoinedMembers(ctx, room))
			if _, ok := members.Joined[bob.UserID]; !ok {
				t.Fatalf("a.test's members: %v", members.Joined)
			}
			// Joining again is a local join on b.test now.
			if _, err := bob.JoinRoom(ctx, string(room), nil); err != nil {
				t.Fatalf("join again: %v", err)
			}
		})
	}
}
