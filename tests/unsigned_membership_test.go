package tests

import (
	"context"
	"net/url"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

// TestUnsignedMembership: every event served to a client carries
// unsigned.membership (v1.11, MSC4115), the requesting user's membership at
// that event, the event's own effect included — in /sync, /messages, /event,
// /context and /relations — for a user who was invited, joined, left, was
// banned and unbanned, and joined again.
func TestUnsignedMembership(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		room := shareRoom(t, alice) // shared history: bob sees it all once joined
		want := map[id.EventID]string{}
		var order []id.EventID
		add := func(ev id.EventID, m string) { want[ev] = m; order = append(order, ev) }
		memberEvent := func() id.EventID {
			t.Helper()
			s := syncOnce(t, alice, "", "", 0)
			evs := s.Rooms.Join[room].Timeline.Events
			for i := len(evs) - 1; i >= 0; i-- {
				if evs[i].Type == event.StateMember && evs[i].GetStateKey() == string(bob.UserID) {
					return evs[i].ID
				}
			}
			t.Fatal("bob's membership event not in alice's timeline")
			return ""
		}

		add(sendText(t, alice, room, "before bob"), "leave")
		must(alice.InviteUser(ctx, room, &mautrix.ReqInviteUser{UserID: bob.UserID}))
		add(memberEvent(), "invite")
		add(sendText(t, alice, room, "bob invited"), "invite")
		joinRoom(t, bob, room)
		add(memberEvent(), "join")
		add(sendText(t, alice, room, "bob joined"), "join")
		must(bob.LeaveRoom(ctx, room))
		add(memberEvent(), "leave")
		add(sendText(t, alice, room, "bob left"), "leave")
		joinRoom(t, bob, room)
		add(memberEvent(), "join")
		must(alice.BanUser(ctx, room, &mautrix.ReqBanUser{UserID: bob.UserID}))
		add(memberEvent(), "ban")
		banned := sendText(t, alice, room, "bob banned")
		add(banned, "ban")
		must(alice.UnbanUser(ctx, room, &mautrix.ReqUnbanUser{UserID: bob.UserID}))
		add(memberEvent(), "leave")
		add(sendText(t, alice, room, "bob unbanned"), "leave")
		joinRoom(t, bob, room)
		add(memberEvent(), "join")
		add(sendText(t, alice, room, "bob back"), "join")
		reaction := relate(t, alice, room, banned, "m.reference", "about the ban")
		add(reaction, "join")

		check := func(where string, evs []*event.Event, atLeast int) {
			t.Helper()
			n := 0
			for _, e := range evs {
				w, ok := want[e.ID]
				if !ok {
					continue
				}
				n++
				if string(e.Unsigned.Membership) != w {
					t.Errorf("%s: %s (%s %s): membership %q, want %q", where, e.ID, e.Type, e.Content.Raw["body"], e.Unsigned.Membership, w)
				}
			}
			if n < atLeast {
				t.Errorf("%s: %d of the events checked, want at least %d", where, n, atLeast)
			}
		}
		s := syncOnce(t, bob, "", `{"room":{"timeline":{"limit":100}}}`, 0)
		check("/sync", s.Rooms.Join[room].Timeline.Events, len(order))
		msgs := must(bob.Messages(ctx, room, "", "", mautrix.DirectionBackward, nil, 100))
		check("/messages", msgs.Chunk, len(order))
		for _, ev := range order {
			check("/event", []*event.Event{must(bob.GetEvent(ctx, room, ev))}, 1)
		}
		cx := must(bob.Context(ctx, room, banned, nil, 6))
		check("/context", append(append(cx.EventsBefore, cx.Event), cx.EventsAfter...), 7)
		rel := clientCall(t, bob, "GET", "/_matrix/client/v1/rooms/"+url.PathEscape(string(room))+"/relations/"+url.PathEscape(string(banned)), nil)
		if got := obj(obj(chunk(rel.Body)[0])["unsigned"])["membership"]; got != "join" {
			t.Errorf("/relations: membership %v, want join (%s)", got, rel.Raw)
		}
		// Alice was joined at every one of them.
		for _, e := range must(alice.Messages(ctx, room, "", "", mautrix.DirectionBackward, nil, 100)).Chunk {
			if _, ok := want[e.ID]; ok && e.Unsigned.Membership != event.MembershipJoin {
				t.Errorf("alice's /messages: %s membership %q, want join", e.ID, e.Unsigned.Membership)
			}
		}
		// /notifications too (bob is notified of what was sent while he was joined).
		notes := clientCall(t, bob, "GET", "/_matrix/client/v3/notifications", nil)
		if len(notes.Body["notifications"].([]any)) == 0 {
			t.Errorf("/notifications: none (%s)", notes.Raw)
		}
		for _, n := range notes.Body["notifications"].([]any) {
			if got := obj(obj(obj(n)["event"])["unsigned"])["membership"]; got != "join" {
				t.Errorf("/notifications: membership %v, want join", got)
			}
		}
		// An incremental /sync carries it too.
		next := sendText(t, alice, room, "after sync")
		inc := syncUntil(t, bob, s.NextBatch, "", func(r *mautrix.RespSync) bool { return syncHasEvent(timelineOf(r, room), next) })
		want[next] = "join"
		check("incremental /sync", inc.Rooms.Join[room].Timeline.Events, 1)
	})
}
