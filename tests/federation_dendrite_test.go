package tests

import (
	"fmt"
	"maps"
	"net/http"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

// TestFederationDendrite: Myelin (on each backend) and Dendrite 0.13.8 (a
// separate process, see dendrite_helpers_test.go) federating over TLS on
// loopback. Rooms hosted on either side are joined from the other;
// messages, topic and power-level changes and leaves flow both ways, each
// seen in the other side's /sync; Dendrite paginates a Myelin-hosted room's
// history back to its creation (backfilling from Myelin); invites and
// rejections across the two.
func TestFederationDendrite(t *testing.T) {
	dendriteBinary(t) // skip (or fail in CI) before starting anything
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) {
			d := startDendrite(t)
			m := startMyelinForDendrite(t, backend, d)
			alice := m.Register(t, "alice")
			dave := d.Register(t, "dave")
			x := &interop{t: t, m: m, d: d, alice: alice, dave: dave}

			t.Run("DendriteHostedRoom", func(t *testing.T) {
				x := x.with(t)
				room := x.create(dave, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "On Dendrite"})
				x.grant(dave, room, alice.UserID)
				sendText(t, dave, room, "before alice")
				x.join(alice, room, d.ServerName)
				x.sees(dave, room, "alice's join", isMember(alice.UserID, "join"))
				x.exchange(room)
				x.leave(alice, dave, room)
			})
			t.Run("MyelinHostedRoom", func(t *testing.T) {
				x := x.with(t)
				room := x.create(alice, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "On Myelin"})
				x.grant(alice, room, dave.UserID)
				// History for Dendrite to backfill: more than one page.
				const history = 25
				var sent []id.EventID
				for i := range history {
					sent = append(sent, sendText(t, alice, room, fmt.Sprintf("history %d", i)))
				}
				x.join(dave, room, m.Config.ServerName)
				x.sees(alice, room, "dave's join", isMember(dave.UserID, "join"))
				x.exchange(room)
				x.paginatesToCreate(dave, room, sent)
				x.leave(dave, alice, room)
			})
			t.Run("Concurrent", func(t *testing.T) {
				x := x.with(t)
				for _, host := range []*mautrix.Client{alice, dave} {
					guest := x.other(host)
					room := x.create(host, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Race"})
					x.grant(host, room, guest.UserID)
					x.join(guest, room, x.serverOf(host))
					x.sees(host, room, string(guest.UserID)+"'s join", isMember(guest.UserID, "join"))
					x.concurrent(room)
				}
			})
			t.Run("Moderation", func(t *testing.T) {
				x := x.with(t)
				for _, host := range []*mautrix.Client{alice, dave} {
					guest := x.other(host)
					room := x.create(host, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Moderated"})
					x.join(guest, room, x.serverOf(host))
					x.sees(host, room, string(guest.UserID)+"'s join", isMember(guest.UserID, "join"))
					x.moderate(host, guest, room)
					room = x.create(host, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Banning"})
					x.join(guest, room, x.serverOf(host))
					x.sees(host, room, string(guest.UserID)+"'s join", isMember(guest.UserID, "join"))
					x.ban(host, guest, room)
				}
			})
			t.Run("EventsAfterRejoin", func(t *testing.T) {
				x := x.with(t)
				for _, host := range []*mautrix.Client{alice, dave} {
					guest := x.other(host)
					room := x.create(host, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Rejoined"})
					x.join(guest, room, x.serverOf(host))
					x.sees(host, room, string(guest.UserID)+"'s join", isMember(guest.UserID, "join"))
					x.moderate(host, guest, room) // kicked, rejoined
					x.ban(host, guest, room)
				}
			})
			t.Run("Redactions", func(t *testing.T) {
				x := x.with(t)
				// Room version 10 (top-level redacts): hosted on either side,
				// redactions both ways. Room version 11 (redacts in content):
				// the Dendrite user's redactions reaching Myelin (Dendrite puts
				// redacts at the top level too); the other way is skipped below.
				for _, c := range []struct {
					host      *mautrix.Client
					version   id.RoomVersion
					redactors []*mautrix.Client
				}{
					{alice, "10", []*mautrix.Client{alice, dave}},
					{dave, "10", []*mautrix.Client{dave, alice}},
					{alice, "11", []*mautrix.Client{dave}},
					{dave, "11", []*mautrix.Client{dave}},
				} {
					guest := x.other(c.host)
					room := x.create(c.host, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Redacted", RoomVersion: c.version})
					x.join(guest, room, x.serverOf(c.host))
					x.sees(c.host, room, string(guest.UserID)+"'s join", isMember(guest.UserID, "join"))
					x.redactions(c.host, guest, room, c.redactors...)
				}
			})
			// Dendrite 0.13.8 reads an m.room.redaction's target only from the
			// top-level redacts (gomatrixserverlib eventV1.Redacts), which v11
			// moved into content: Myelin sends both, as Synapse does.
			t.Run("RedactionsV11ToDendrite", func(t *testing.T) {
				x := x.with(t)
				for _, host := range []*mautrix.Client{alice, dave} {
					guest := x.other(host)
					room := x.create(host, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Redacted v11", RoomVersion: "11"})
					x.join(guest, room, x.serverOf(host))
					x.sees(host, room, string(guest.UserID)+"'s join", isMember(guest.UserID, "join"))
					x.redactions(host, guest, room, alice)
				}
			})
			t.Run("DendriteHostedHistory", func(t *testing.T) {
				x := x.with(t)
				room := x.create(dave, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "History on Dendrite"})
				const history = 25
				var sent []id.EventID
				for i := range history {
					sent = append(sent, sendText(t, dave, room, fmt.Sprintf("history %d", i)))
				}
				x.join(alice, room, d.ServerName)
				x.paginatesToCreate(alice, room, sent)
			})
			t.Run("InviteDendriteUser", func(t *testing.T) {
				x := x.with(t)
				room := x.create(alice, &mautrix.ReqCreateRoom{Preset: "private_chat"})
				x.invite(alice, dave, room)
				x.join(dave, room, m.Config.ServerName)
				x.sees(alice, room, "dave's join", isMember(dave.UserID, "join"))
				x.leave(dave, alice, room)
				// Rejected: dave leaves the invited room (make_leave/send_leave to Myelin).
				room = x.create(alice, &mautrix.ReqCreateRoom{Preset: "private_chat"})
				x.invite(alice, dave, room)
				x.leave(dave, alice, room)
			})
			t.Run("InviteMyelinUser", func(t *testing.T) {
				x := x.with(t)
				room := x.create(dave, &mautrix.ReqCreateRoom{Preset: "private_chat"})
				x.invite(dave, alice, room)
				x.join(alice, room, d.ServerName)
				x.sees(dave, room, "alice's join", isMember(alice.UserID, "join"))
				x.leave(alice, dave, room)
				room = x.create(dave, &mautrix.ReqCreateRoom{Preset: "private_chat"})
				x.invite(dave, alice, room)
				x.leave(alice, dave, room)
			})
		})
	}
}

// interop holds the two servers and their users for one backend.
type interop struct {
	t     *testing.T
	m     *testserver.Server
	d     *dendriteServer
	alice *mautrix.Client // on Myelin
	dave  *mautrix.Client // on Dendrite
}

func (x *interop) with(t *testing.T) *interop { y := *x; y.t = t; return &y }

func (x *interop) other(c *mautrix.Client) *mautrix.Client {
	if c == x.alice {
		return x.dave
	}
	return x.alice
}

func (x *interop) create(c *mautrix.Client, req *mautrix.ReqCreateRoom) id.RoomID {
	x.t.Helper()
	return createRoom(x.t, c, req)
}

// grant gives user power level 50 in room (so they may set the topic),
// read-modify-write of the whole power_levels content as the server made it.
func (x *interop) grant(admin *mautrix.Client, room id.RoomID, user id.UserID) {
	x.t.Helper()
	ctx := ctxT(x.t)
	var pl map[string]any
	if err := admin.StateEvent(ctx, room, event.StatePowerLevels, "", &pl); err != nil {
		x.t.Fatalf("power levels of %s: %v", room, err)
	}
	users, _ := pl["users"].(map[string]any)
	if users == nil {
		users = map[string]any{}
	}
	users[string(user)] = 50
	pl["users"] = users
	if _, err := admin.SendStateEvent(ctx, room, event.StatePowerLevels, "", pl); err != nil {
		x.t.Fatalf("granting %s power in %s: %v", user, room, err)
	}
}

// join joins c to room through server with server_name (what Dendrite
// 0.13.8 understands; via is newer).
func (x *interop) join(c *mautrix.Client, room id.RoomID, server string) {
	x.t.Helper()
	ctx := ctxT(x.t)
	u := c.BuildURLWithQuery(mautrix.ClientURLPath{"v3", "join", room}, map[string]string{"server_name": server})
	if _, err := c.MakeRequest(ctx, http.MethodPost, u, struct{}{}, nil); err != nil {
		x.t.Fatalf("%s joining %s via %s: %v", c.UserID, room, server, err)
	}
	members, err := c.JoinedMembers(ctx, room)
	if err != nil {
		x.t.Fatalf("members of %s as %s: %v", room, c.UserID, err)
	}
	if _, ok := members.Joined[x.other(c).UserID]; !ok {
		x.t.Fatalf("%s's server after the join: members %v lack %s", c.UserID, members.Joined, x.other(c).UserID)
	}
}

// since is c's current sync position.
func (x *interop) since(c *mautrix.Client) string {
	x.t.Helper()
	return syncOnce(x.t, c, "", "", 0).NextBatch
}

// sees waits until c's /sync, from an initial sync (so an event delivered
// before the call counts), shows an event of room matching pred.
func (x *interop) sees(c *mautrix.Client, room id.RoomID, what string, pred func(*event.Event) bool) {
	x.t.Helper()
	x.seesFrom(c, "", room, what, pred)
}

func (x *interop) seesFrom(c *mautrix.Client, since string, room id.RoomID, what string, pred func(*event.Event) bool) {
	x.t.Helper()
	found := false
	syncUntilLabeled(x.t, c, since, what, func(r *mautrix.RespSync) bool {
		lists := [][]*event.Event{}
		if jr, ok := r.Rooms.Join[room]; ok {
			lists = append(lists, jr.Timeline.Events, jr.State.Events)
		}
		if lr, ok := r.Rooms.Leave[room]; ok {
			lists = append(lists, lr.Timeline.Events, lr.State.Events)
		}
		if ir, ok := r.Rooms.Invite[room]; ok {
			lists = append(lists, ir.State.Events)
		}
		for _, l := range lists {
			for _, e := range l {
				if pred(e) {
					found = true
				}
			}
		}
		return found
	})
}

// syncUntilLabeled is syncUntil with a description of what never came.
// Its timelines are long enough that a burst of events is not cut short.
func syncUntilLabeled(t *testing.T, c *mautrix.Client, since, what string, cond func(*mautrix.RespSync) bool) {
	t.Helper()
	for range 24 {
		resp := syncOnce(t, c, since, `{"room":{"timeline":{"limit":100}}}`, 5000)
		if cond(resp) {
			return
		}
		since = resp.NextBatch
	}
	t.Fatalf("%s's /sync never showed %s", c.UserID, what)
}

func isMember(user id.UserID, membership string) func(*event.Event) bool {
	return func(e *event.Event) bool {
		return e.Type == event.StateMember && e.GetStateKey() == string(user) && e.Content.Raw["membership"] == membership
	}
}

func isText(eventID id.EventID, body string) func(*event.Event) bool {
	return func(e *event.Event) bool { return e.ID == eventID && e.Content.Raw["body"] == body }
}

func isTopic(topic string) func(*event.Event) bool {
	return func(e *event.Event) bool { return e.Type == event.StateTopic && e.Content.Raw["topic"] == topic }
}

// exchange: a message and a topic change from each side, each seen by the
// other side's /sync, and the other side's room state has the last topic.
func (x *interop) exchange(room id.RoomID) {
	x.t.Helper()
	ctx := ctxT(x.t)
	for _, from := range []*mautrix.Client{x.alice, x.dave} {
		to := x.other(from)
		since := x.since(to)
		body := "hello from " + string(from.UserID)
		msg := sendText(x.t, from, room, body)
		x.seesFrom(to, since, room, "the message "+string(msg), isText(msg, body))

		topic := "topic set by " + string(from.UserID)
		if _, err := from.SendStateEvent(ctx, room, event.StateTopic, "", map[string]any{"topic": topic}); err != nil {
			x.t.Fatalf("%s setting the topic: %v", from.UserID, err)
		}
		x.seesFrom(to, since, room, "the topic "+topic, isTopic(topic))
		var got map[string]any
		if err := to.StateEvent(ctx, room, event.StateTopic, "", &got); err != nil || got["topic"] != topic {
			x.t.Fatalf("%s's server's topic state: %v %v, want %q", to.UserID, got, err, topic)
		}
	}
}

func (x *interop) serverOf(c *mautrix.Client) string {
	if c == x.alice {
		return x.m.Config.ServerName
	}
	return x.d.ServerName
}

// concurrent: both sides send messages and change the topic at once (forks
// in the room's graph, resolved by each server on its own); each side's
// /sync shows all of them, and once a message from each has merged the
// forks, both servers have the same room state, event for event.
func (x *interop) concurrent(room id.RoomID) {
	x.t.Helper()
	ctx := ctxT(x.t)
	const perSide = 8
	since := map[*mautrix.Client]string{x.alice: x.since(x.alice), x.dave: x.since(x.dave)}
	var mu sync.Mutex
	var all []id.EventID
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for _, c := range []*mautrix.Client{x.alice, x.dave} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perSide {
				var resp *mautrix.RespSendEvent
				var err error
				if i == perSide/2 {
					resp, err = c.SendStateEvent(ctx, room, event.StateTopic, "", map[string]any{"topic": "raced by " + string(c.UserID)})
				} else {
					resp, err = c.SendText(ctx, room, fmt.Sprintf("race %d from %s", i, c.UserID))
				}
				if err != nil {
					errs <- fmt.Errorf("%s sending: %w", c.UserID, err)
					return
				}
				mu.Lock()
				all = append(all, resp.EventID)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		x.t.Fatal(err)
	}
	for _, c := range []*mautrix.Client{x.alice, x.dave} {
		x.seesAll(c, since[c], room, all)
	}
	// A message from each merges the forks on both sides.
	var settle []id.EventID
	for _, c := range []*mautrix.Client{x.alice, x.dave} {
		settle = append(settle, sendText(x.t, c, room, "settled by "+string(c.UserID)))
	}
	for _, c := range []*mautrix.Client{x.alice, x.dave} {
		x.seesAll(c, since[c], room, settle)
	}
	stateIDs := func(c *mautrix.Client) map[string]id.EventID {
		st, err := c.State(ctx, room)
		if err != nil {
			x.t.Fatalf("state as %s: %v", c.UserID, err)
		}
		out := map[string]id.EventID{}
		for typ, byKey := range st {
			for key, e := range byKey {
				out[typ.Type+"|"+key] = e.ID
			}
		}
		return out
	}
	mine, theirs := stateIDs(x.alice), stateIDs(x.dave)
	if !maps.Equal(mine, theirs) {
		x.t.Fatalf("the servers disagree on the room's state after concurrent changes:\nmyelin:   %v\ndendrite: %v", mine, theirs)
	}
}

// seesAll waits until c's /sync from since has shown every event of want in room.
func (x *interop) seesAll(c *mautrix.Client, since string, room id.RoomID, want []id.EventID) {
	x.t.Helper()
	missing := map[id.EventID]bool{}
	for _, e := range want {
		missing[e] = true
	}
	syncUntilLabeled(x.t, c, since, fmt.Sprintf("all %d events", len(want)), func(r *mautrix.RespSync) bool {
		if jr, ok := r.Rooms.Join[room]; ok {
			for _, e := range jr.Timeline.Events {
				delete(missing, e.ID)
			}
		}
		return len(missing) == 0
	})
}

// redactions: across the two servers, the member sends a message that each
// redactor (the admin, or the member: their own) redacts, each redaction
// seen by the other side (the message's content gone there).
func (x *interop) redactions(admin, member *mautrix.Client, room id.RoomID, redactors ...*mautrix.Client) {
	x.t.Helper()
	ctx := ctxT(x.t)
	isRedaction := func(target id.EventID) func(*event.Event) bool {
		return func(e *event.Event) bool {
			return e.Type == event.EventRedaction && (e.Redacts == target || e.Content.Raw["redacts"] == string(target))
		}
	}
	redacted := func(c *mautrix.Client, target id.EventID) {
		x.t.Helper()
		// The redaction reaches the other server shortly before its content is gone there.
		for range 50 {
			ev, err := c.GetEvent(ctx, room, target)
			if err != nil {
				x.t.Fatalf("%s fetching %s: %v", c.UserID, target, err)
			}
			if ev.Content.Raw["body"] == nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		x.t.Fatalf("%s's server still shows the content of redacted %s", c.UserID, target)
	}
	for _, redactor := range redactors {
		other := x.other(redactor)
		since, adminSince := x.since(other), x.since(admin)
		msg := sendText(x.t, member, room, "to be redacted by "+string(redactor.UserID))
		x.seesFrom(admin, adminSince, room, "the message", isText(msg, "to be redacted by "+string(redactor.UserID)))
		if _, err := redactor.RedactEvent(ctx, room, msg); err != nil {
			x.t.Fatalf("%s redacting %s: %v", redactor.UserID, msg, err)
		}
		x.seesFrom(other, since, room, "the redaction of "+string(msg), isRedaction(msg))
		redacted(other, msg)
	}
}

// moderate: across the two servers, the admin kicks the member (the
// member's server sees it and refuses its user's next message); the member
// rejoins.
func (x *interop) moderate(admin, member *mautrix.Client, room id.RoomID) {
	x.t.Helper()
	ctx := ctxT(x.t)
	since := x.since(member)
	if _, err := admin.KickUser(ctx, room, &mautrix.ReqKickUser{UserID: member.UserID, Reason: "interop"}); err != nil {
		x.t.Fatalf("%s kicking %s: %v", admin.UserID, member.UserID, err)
	}
	x.seesFrom(member, since, room, "the kick", func(e *event.Event) bool {
		return isMember(member.UserID, "leave")(e) && e.Sender == admin.UserID
	})
	if _, err := member.SendText(ctx, room, "after the kick"); err == nil {
		x.t.Fatalf("%s's server let its kicked user send", member.UserID)
	}

	x.join(member, room, x.serverOf(admin))
	x.sees(admin, room, "the rejoin", isMember(member.UserID, "join"))
}

// ban: the admin bans the member across the two servers: the member's
// server sees it, and the member's rejoin is refused.
func (x *interop) ban(admin, member *mautrix.Client, room id.RoomID) {
	x.t.Helper()
	ctx := ctxT(x.t)
	since := x.since(member)
	if _, err := admin.BanUser(ctx, room, &mautrix.ReqBanUser{UserID: member.UserID, Reason: "interop"}); err != nil {
		x.t.Fatalf("%s banning %s: %v", admin.UserID, member.UserID, err)
	}
	x.seesFrom(member, since, room, "the ban", isMember(member.UserID, "ban"))
	u := member.BuildURLWithQuery(mautrix.ClientURLPath{"v3", "join", room}, map[string]string{"server_name": x.serverOf(admin)})
	if _, err := member.MakeRequest(ctx, http.MethodPost, u, struct{}{}, nil); err == nil {
		x.t.Fatalf("%s rejoined after a ban", member.UserID)
	}
}

// leave: leaver leaves room; the other side's /sync shows the leave and its
// member list no longer has leaver.
func (x *interop) leave(leaver, other *mautrix.Client, room id.RoomID) {
	x.t.Helper()
	ctx := ctxT(x.t)
	since := x.since(other)
	if _, err := leaver.LeaveRoom(ctx, room); err != nil {
		x.t.Fatalf("%s leaving %s: %v", leaver.UserID, room, err)
	}
	x.seesFrom(other, since, room, string(leaver.UserID)+"'s leave", isMember(leaver.UserID, "leave"))
	members, err := other.JoinedMembers(ctx, room)
	if err != nil {
		x.t.Fatalf("members as %s: %v", other.UserID, err)
	}
	if _, ok := members.Joined[leaver.UserID]; ok {
		x.t.Fatalf("%s still joined on %s's server after leaving", leaver.UserID, other.UserID)
	}
}

// invite: inviter invites invitee (on the other server) to room; the
// invitee's /sync shows the invite.
func (x *interop) invite(inviter, invitee *mautrix.Client, room id.RoomID) {
	x.t.Helper()
	if _, err := inviter.InviteUser(ctxT(x.t), room, &mautrix.ReqInviteUser{UserID: invitee.UserID}); err != nil {
		x.t.Fatalf("%s inviting %s: %v", inviter.UserID, invitee.UserID, err)
	}
	x.sees(invitee, room, "the invite", isMember(invitee.UserID, "invite"))
}

// paginatesToCreate: c's /messages of room, backwards from the newest event,
// reaches m.room.create, passing every event of want in order.
func (x *interop) paginatesToCreate(c *mautrix.Client, room id.RoomID, want []id.EventID) {
	x.t.Helper()
	ctx := ctxT(x.t)
	// From the newest position (/messages takes a sync token), newest first.
	from := syncOnce(x.t, c, "", "", 0).NextBatch
	var seen []id.EventID
	created := false
	for page := 0; page < 20 && !created; page++ {
		resp, err := c.Messages(ctx, room, from, "", mautrix.DirectionBackward, nil, 10)
		if err != nil {
			x.t.Fatalf("/messages as %s from %q: %v", c.UserID, from, err)
		}
		for _, e := range resp.Chunk {
			seen = append(seen, e.ID)
			if e.Type == event.StateCreate {
				created = true
			}
		}
		if resp.End == "" || len(resp.Chunk) == 0 {
			break
		}
		from = resp.End
	}
	if !created {
		x.t.Fatalf("%s's /messages never reached m.room.create; saw %d events", c.UserID, len(seen))
	}
	// want, oldest first, appears in seen (newest first) in reverse order.
	pos := len(seen)
	for _, w := range want {
		i := pos - 1
		for i >= 0 && seen[i] != w {
			i--
		}
		if i < 0 {
			x.t.Fatalf("%s's /messages lacks history event %s (or has it out of order); saw %d events", c.UserID, w, len(seen))
		}
		pos = i
	}
}
