package ephemeral

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/myelin-chat/myelin/storage"
)

// pushedUsers lists the user IDs (with their presence) of m.presence EDUs
// sent to dest, failing on an EDU over MaxPresencePush or not ephemeral.
func pushedUsers(t *testing.T, sent []sentEDU, dest string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, e := range sent {
		if e.Type != EDUPresence || !slices.Contains(e.Dests, dest) {
			continue
		}
		push := e.Content["push"].([]any)
		if len(push) > MaxPresencePush || !e.Ephemeral {
			t.Fatalf("an m.presence EDU of %d users, ephemeral %v", len(push), e.Ephemeral)
		}
		for _, p := range push {
			m := p.(map[string]any)
			out[m["user_id"].(string)] = m["presence"].(string)
		}
	}
	return out
}

// TestPresencePing: our users who are online or unavailable have their
// presence re-sent each ping interval to the servers sharing a room with
// them, in EDUs of at most MaxPresencePush users; offline users are not;
// nothing with presence off; the timers stop on Close.
func TestPresencePing(t *testing.T) {
	f := newFixture(t, true)
	ctx := context.Background()
	var users []string
	for i := range 600 {
		u := fmt.Sprintf("@u%03d:a.test", i)
		users = append(users, u)
		f.rooms.servers[u] = []string{"a.test", "b.test"}
	}
	f.rooms.servers["@gone:a.test"] = []string{"a.test", "b.test"}
	for _, u := range users {
		if err := f.s.SetPresence(ctx, u, PresenceOnline, nil, true); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.s.SetPresence(ctx, users[0], PresenceUnavailable, nil, true); err != nil {
		t.Fatal(err)
	}
	if err := f.s.SetPresence(ctx, "@gone:a.test", PresenceOffline, nil, true); err != nil {
		t.Fatal(err)
	}
	if got := pushedUsers(t, f.edus.take(), "b.test"); len(got) != 601 {
		t.Fatalf("the changes themselves: %d users", len(got))
	}
	// Nothing is due before the interval: a slow ping sends nothing yet.
	f.s.SetFederationPresenceTimeouts(time.Hour, time.Hour)
	f.s.pingPresence()
	if got := f.edus.take(); len(got) != 0 {
		t.Fatalf("pinged before the interval: %d EDUs", len(got))
	}
	f.s.SetFederationPresenceTimeouts(100*time.Millisecond, time.Hour)
	got := map[string]string{}
	var sent []sentEDU
	for deadline := time.Now().Add(10 * time.Second); len(got) < 600 && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		batch := f.edus.take()
		sent = append(sent, batch...)
		for u, p := range pushedUsers(t, batch, "b.test") {
			got[u] = p
		}
	}
	if len(got) != 600 || got[users[0]] != PresenceUnavailable || got[users[1]] != PresenceOnline {
		t.Fatalf("pinged %d users (%s: %q)", len(got), users[0], got[users[0]])
	}
	if _, ok := got["@gone:a.test"]; ok {
		t.Fatal("an offline user was pinged")
	}
	if len(sent) < 2 {
		t.Fatalf("600 users in %d EDUs", len(sent))
	}
	// Close stops the pings.
	f.s.Close()
	time.Sleep(50 * time.Millisecond)
	f.edus.take()
	time.Sleep(300 * time.Millisecond)
	if got := f.edus.take(); len(got) != 0 {
		t.Fatalf("pinged after Close: %d EDUs", len(got))
	}

	off := newFixture(t, false)
	off.rooms.servers[alice] = []string{"a.test", "b.test"}
	off.s.SetFederationPresenceTimeouts(10*time.Millisecond, 10*time.Millisecond)
	off.s.touchPresence(alice)
	time.Sleep(100 * time.Millisecond)
	if got := off.edus.take(); len(got) != 0 {
		t.Fatalf("presence off but pinged: %d EDUs", len(got))
	}
}

// TestRemotePresenceExpiry: a remote user whose server says nothing for the
// remote timeout is stored offline at a new stream position (their status
// message kept); one whose server keeps sending stays online.
func TestRemotePresenceExpiry(t *testing.T) {
	f := newFixture(t, true)
	ctx := context.Background()
	const bob2 = "@bob2:b.test"
	f.rooms.servers[bob2] = []string{"a.test", "b.test"}
	push := func(users ...string) {
		t.Helper()
		var edu presenceEDU
		for _, u := range users {
			msg := "here"
			edu.Push = append(edu.Push, presenceUpdate{UserID: u, Presence: PresenceOnline, StatusMsg: &msg, CurrentlyActive: true})
		}
		content, _ := json.Marshal(edu)
		if err := f.s.ReceivePresence(ctx, "b.test", content); err != nil {
			t.Fatal(err)
		}
	}
	push(bob, bob2)
	before, _ := f.store.GetPresence(ctx, bob)
	if before == nil || before.State != PresenceOnline {
		t.Fatalf("bob's presence: %+v", before)
	}
	f.s.SetFederationPresenceTimeouts(time.Hour, 300*time.Millisecond)
	deadline := time.Now().Add(10 * time.Second)
	for ; time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		push(bob2) // bob2's server keeps telling us
		if p, _ := f.store.GetPresence(ctx, bob); p.State == PresenceOffline {
			break
		}
	}
	p, _ := f.store.GetPresence(ctx, bob)
	if p.State != PresenceOffline || p.Pos <= before.Pos || p.StatusMsg == nil || *p.StatusMsg != "here" {
		t.Fatalf("bob after the timeout: %+v", p)
	}
	if p2, _ := f.store.GetPresence(ctx, bob2); p2.State != PresenceOnline {
		t.Fatalf("bob2, refreshed, expired: %+v", p2)
	}
	if got := f.edus.take(); len(got) != 0 {
		t.Fatalf("a remote user's expiry was sent: %d EDUs", len(got))
	}
	// An offline remote user is not tracked; bob heard again is online.
	f.s.fedMu.Lock()
	_, tracked := f.s.remoteHeard[bob]
	f.s.fedMu.Unlock()
	if tracked {
		t.Fatal("bob still tracked once offline")
	}
}

// TestPresenceOnJoin: a remote user's join sends their server the presence
// of the room's local members who are not offline, in EDUs of at most
// MaxPresencePush; our user's join sends theirs to the room's other
// servers; a profile change, an outlier, a server gone again and presence
// off send nothing.
func TestPresenceOnJoin(t *testing.T) {
	f := newFixture(t, true)
	ctx := context.Background()
	const big, newRoom = "!big:a.test", "!new:c.test"
	members := []string{bob, "@erin:a.test"}
	for i := range 600 {
		members = append(members, fmt.Sprintf("@u%03d:a.test", i))
	}
	f.rooms.members[big] = members
	f.rooms.rServers[big] = []string{"a.test", "b.test"}
	f.rooms.rServers[newRoom] = []string{"a.test", "b.test", "c.test"}
	f.rooms.memberEvents = map[string]*storage.Event{"$bobjoin": {Membership: "join"}, "$bobleave": {Membership: "leave"}}
	for _, u := range members[2:] {
		if err := f.s.SetPresence(ctx, u, PresenceOnline, nil, true); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.s.SetPresence(ctx, "@erin:a.test", PresenceOffline, nil, true); err != nil {
		t.Fatal(err)
	}
	if err := f.s.SetPresence(ctx, alice, PresenceUnavailable, nil, true); err != nil {
		t.Fatal(err)
	}
	f.edus.take()
	join := func(room, user, replaces string) *storage.Event {
		return &storage.Event{RoomID: room, Type: "m.room.member", StateKey: &user, Membership: "join", ReplacesState: replaces}
	}
	outlier := join(big, bob, "")
	outlier.Outlier = true
	// Nothing new: a profile change, an outlier, c.test not in the room.
	if err := f.s.PresenceOnJoin(ctx, []*storage.Event{join(big, bob, "$bobjoin"), outlier, join(big, carol, "")}); err != nil {
		t.Fatal(err)
	}
	if got := f.edus.take(); len(got) != 0 {
		t.Fatalf("sent on no new join: %s", jsonOf(t, got))
	}
	// bob joins (again, after a leave; twice in the page: told once).
	if err := f.s.PresenceOnJoin(ctx, []*storage.Event{join(big, bob, "$bobleave"), join(big, bob, "")}); err != nil {
		t.Fatal(err)
	}
	sent := f.edus.take()
	got := pushedUsers(t, sent, "b.test")
	if len(got) != 600 || len(sent) != 2 {
		t.Fatalf("bob's join: %d users in %d EDUs", len(got), len(sent))
	}
	if _, ok := got["@erin:a.test"]; ok {
		t.Fatal("an offline member's presence was sent")
	}
	for _, e := range sent {
		if !slices.Equal(e.Dests, []string{"b.test"}) {
			t.Fatalf("sent to %v", e.Dests)
		}
	}
	// carol's presence comes before alice's join to her room is in: held,
	// then stored once the join is.
	if err := f.s.ReceivePresence(ctx, "c.test", []byte(`{"push":[{"user_id":"`+carol+`","presence":"online"}]}`)); err == nil {
		t.Fatal("carol's presence taken before sharing a room")
	}
	if _, err := f.store.GetPresence(ctx, carol); err == nil {
		t.Fatal("carol's presence stored before sharing a room")
	}
	f.rooms.servers[carol] = []string{"a.test", "c.test"}
	// alice joins a room of c.test: her presence to both other servers.
	if err := f.s.PresenceOnJoin(ctx, []*storage.Event{join(newRoom, alice, "")}); err != nil {
		t.Fatal(err)
	}
	sent = f.edus.take()
	if len(sent) != 1 || !slices.Equal(sent[0].Dests, []string{"b.test", "c.test"}) ||
		jsonOf(t, pushedUsers(t, sent, "c.test")) != `{"@alice:a.test":"unavailable"}` {
		t.Fatalf("alice's join: %s", jsonOf(t, sent))
	}
	if p, err := f.store.GetPresence(ctx, carol); err != nil || p.State != PresenceOnline {
		t.Fatalf("carol's held presence after alice's join: %+v %v", p, err)
	}

	off := newFixture(t, false)
	off.rooms.memberEvents = map[string]*storage.Event{}
	if err := off.s.PresenceOnJoin(ctx, []*storage.Event{join(room, bob, "")}); err != nil {
		t.Fatal(err)
	}
	if got := off.edus.take(); len(got) != 0 {
		t.Fatalf("presence off but sent: %d EDUs", len(got))
	}
}
