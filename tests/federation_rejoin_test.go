package tests

import (
	"errors"
	"testing"
	"time"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/homeserver/testserver"
	"github.com/myelin-chat/myelin/roomserver"
)

// TestFederationRejoin: bob (b.test) joins a.test's room and leaves; while
// no b.test user is in it, alice changes the topic and sends messages, which
// b.test never receives. bob's rejoin must then go over federation again
// (make_join/send_join through a.test, the servers b.test last knew) rather
// than a local join on b.test's stale copy: afterwards b.test has the new
// topic as current state, a.test lists bob joined, and messages cross both
// ways.
func TestFederationRejoin(t *testing.T) {
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) {
			n := newFedNet(t, "a.test", "b.test")
			a := n.start(t, backend, "a.test")
			b := n.start(t, backend, "b.test")
			ctx := ctxT(t)
			alice := a.Register(t, "alice")
			bob := b.Register(t, "bob")
			room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", Topic: "old topic"})
			if _, err := bob.JoinRoom(ctx, string(room), &mautrix.ReqJoinRoom{Via: []string{"a.test"}}); err != nil {
				t.Fatalf("join: %v", err)
			}
			// A join over federation follows a gap (the history lives on a.test).
			joinFlagged := func(what string) id.EventID {
				t.Helper()
				se, err := b.DB.CurrentStateEvent(ctx, string(room), "m.room.member", string(bob.UserID))
				if err != nil || se.Membership != "join" || !se.AfterGap {
					t.Fatalf("bob's %s on b.test: %+v, %v; want a join flagged after_gap", what, se, err)
				}
				return id.EventID(se.EventID)
			}
			joinFlagged("join")
			must(bob.LeaveRoom(ctx, room))
			// a.test sees bob leave before it moves on.
			for i := 0; ; i++ {
				if _, ok := must(alice.JoinedMembers(ctx, room)).Joined[bob.UserID]; !ok {
					break
				}
				if i == 100 {
					t.Fatal("a.test never saw bob leave")
				}
				time.Sleep(50 * time.Millisecond)
			}
			must(alice.SendStateEvent(ctx, room, event.StateTopic, "", map[string]string{"topic": "new topic"}))
			missed := sendText(t, alice, room, "while bob was away")

			// Bad rejoin answers change nothing on b.test: a wrong version, an
			// unknown room, a state without its create event.
			stateBefore := len(must(b.DB.CurrentStateEvents(ctx, string(room))))
			version := id.RoomVersion(must(b.DB.GetRoom(ctx, string(room))).RoomVersion)
			for _, c := range []struct {
				room    id.RoomID
				version id.RoomVersion
				kind    error
			}{{room, "1", roomserver.ErrForbidden}, {"!unknown:a.test", version, roomserver.ErrNotFound}, {room, version, roomserver.ErrForbidden}} {
				err := b.Rooms.ImportRejoin(ctx, c.room, c.version, nil, nil, []byte(`{}`))
				if !errors.Is(err, c.kind) {
					t.Fatalf("ImportRejoin(%s, %s): %v, want %v", c.room, c.version, err, c.kind)
				}
			}
			if n := len(must(b.DB.CurrentStateEvents(ctx, string(room)))); n != stateBefore {
				t.Fatalf("a refused rejoin changed the state: %d events, was %d", n, stateBefore)
			}

			// The rejoin, with no via: b.test knows a.test from the room.
			if _, err := bob.JoinRoom(ctx, string(room), nil); err != nil {
				t.Fatalf("rejoin: %v", err)
			}
			// So does a rejoin (what happened meanwhile was never sent here):
			// bob's /sync timeline starts at it, limited.
			rejoin := joinFlagged("rejoin")
			if tl := must(bob.SyncRequest(ctx, 0, "", "", false, "")).Rooms.Join[room].Timeline; len(tl.Events) == 0 || tl.Events[0].ID != rejoin || !tl.Limited {
				t.Fatalf("bob's /sync after the rejoin: limited %v, %d events; want limited, starting at the rejoin %s", tl.Limited, len(tl.Events), rejoin)
			}
			topic := ""
			for _, e := range must(b.DB.CurrentStateEvents(ctx, string(room))) {
				if e.Type == "m.room.topic" {
					topic = gjson.GetBytes(e.JSON, "content.topic").Str
				}
			}
			if topic != "new topic" {
				t.Fatalf("b.test's topic after the rejoin: %q", topic)
			}
			var tc event.TopicEventContent
			if err := bob.StateEvent(ctx, room, event.StateTopic, "", &tc); err != nil || tc.Topic != "new topic" {
				t.Fatalf("bob reads the topic: %q, %v", tc.Topic, err)
			}
			if _, err := b.DB.GetEvent(ctx, string(missed)); err == nil {
				t.Log("b.test fetched the missed message too")
			}
			if _, ok := must(alice.JoinedMembers(ctx, room)).Joined[bob.UserID]; !ok {
				t.Fatal("a.test does not list bob after the rejoin")
			}
			if _, ok := must(bob.JoinedMembers(ctx, room)).Joined[bob.UserID]; !ok {
				t.Fatal("b.test does not list bob after the rejoin")
			}
			// Messages after the rejoin reach both sides.
			bobSince := must(bob.SyncRequest(ctx, 0, "", "", false, "")).NextBatch
			aliceSince := must(alice.SyncRequest(ctx, 0, "", "", false, "")).NextBatch
			fromA := sendText(t, alice, room, "welcome back")
			fromB := sendText(t, bob, room, "thanks")
			sees := func(c *mautrix.Client, since string, want id.EventID) {
				t.Helper()
				syncUntil(t, c, since, "", func(r *mautrix.RespSync) bool {
					jr := r.Rooms.Join[room]
					if jr == nil { // a sync woken by something else
						return false
					}
					for _, e := range jr.Timeline.Events {
						if e.ID == want {
							return true
						}
					}
					return false
				})
			}
			sees(bob, bobSince, fromA)
			sees(alice, aliceSince, fromB)

			waitLeft := func(u id.UserID) {
				t.Helper()
				for i := 0; ; i++ {
					if _, ok := must(alice.JoinedMembers(ctx, room)).Joined[u]; !ok {
						return
					}
					if i == 100 {
						t.Fatalf("a.test never saw %s leave", u)
					}
					time.Sleep(50 * time.Millisecond)
				}
			}
			topicOnB := func() string {
				t.Helper()
				for _, e := range must(b.DB.CurrentStateEvents(ctx, string(room))) {
					if e.Type == "m.room.topic" {
						return gjson.GetBytes(e.JSON, "content.topic").Str
					}
				}
				return ""
			}

			// A rejoin by one of b.test's own aliases of the room goes over
			// federation too.
			dan := b.Register(t, "dan")
			must(bob.CreateAlias(ctx, "#away:b.test", room))
			must(dan.JoinRoom(ctx, string(room), nil))
			for _, c := range []*mautrix.Client{bob, dan} {
				must(c.LeaveRoom(ctx, room))
			}
			waitLeft(bob.UserID)
			waitLeft(dan.UserID)
			must(alice.SendStateEvent(ctx, room, event.StateTopic, "", map[string]string{"topic": "third topic"}))
			must(dan.JoinRoom(ctx, "#away:b.test", nil))
			if got := topicOnB(); got != "third topic" {
				t.Fatalf("b.test's topic after a rejoin by alias: %q", got)
			}

			// Two b.test users rejoining at once: both end up joined on both
			// servers (a rejoin's answer may predate the other's join).
			must(dan.LeaveRoom(ctx, room))
			waitLeft(dan.UserID)
			must(alice.SendStateEvent(ctx, room, event.StateTopic, "", map[string]string{"topic": "fourth topic"}))
			errs := make(chan error, 2)
			for _, c := range []*mautrix.Client{bob, dan} {
				go func() { _, err := c.JoinRoom(ctx, string(room), nil); errs <- err }()
			}
			for range 2 {
				if err := <-errs; err != nil {
					t.Fatalf("concurrent rejoin: %v", err)
				}
			}
			if got := topicOnB(); got != "fourth topic" {
				t.Fatalf("b.test's topic after the concurrent rejoins: %q", got)
			}
			for _, c := range []*mautrix.Client{alice, bob} {
				joined := must(c.JoinedMembers(ctx, room)).Joined
				if _, ok := joined[bob.UserID]; !ok {
					t.Fatalf("%s does not list bob after the concurrent rejoins: %v", c.UserID, joined)
				}
				if _, ok := joined[dan.UserID]; !ok {
					t.Fatalf("%s does not list dan after the concurrent rejoins: %v", c.UserID, joined)
				}
			}
		})
	}
}
