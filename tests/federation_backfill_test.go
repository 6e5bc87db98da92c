package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

// walkBack pages /messages backwards from from (the room's end if empty),
// limit per page, until a page has no end token or nothing in it; it returns
// every event in order and the end token of each page.
func walkBack(t *testing.T, c *mautrix.Client, room id.RoomID, from string, limit int) ([]*event.Event, []string) {
	t.Helper()
	var all []*event.Event
	var ends []string
	for page := 0; page < 100; page++ {
		resp, err := c.Messages(ctxT(t), room, from, "", mautrix.DirectionBackward, nil, limit)
		if err != nil {
			t.Fatalf("/messages from %q: %v", from, err)
		}
		all = append(all, resp.Chunk...)
		if resp.End == "" || len(resp.Chunk) == 0 {
			return all, ends
		}
		ends = append(ends, resp.End)
		from = resp.End
	}
	t.Fatal("/messages never ended")
	return nil, nil
}

// bodies are the bodies of the m.room.message events, in order.
func bodies(evs []*event.Event) []string {
	var out []string
	for _, e := range evs {
		if e.Type == event.EventMessage {
			out = append(out, fmt.Sprint(e.Content.Raw["body"]))
		}
	}
	return out
}

// TestFederationBackfill: alice on a.test sends 30 messages; bob on b.test
// joins the room over federation (b.test has none of them); bob's /messages
// backwards returns all 30 in order, then the room's creation, with no
// duplicates, fetched from a.test with /backfill, verified and stored as
// history (negative stream positions) on b.test. A client holding a token
// that points into that history continues from it after b.test restarts. In
// a room whose history_visibility is joined, b.test backfills the history
// before bob's join but shows him none of it.
func TestFederationBackfill(t *testing.T) {
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) {
			n := newFedNet(t, "a.test", "b.test")
			a := n.start(t, backend, "a.test")
			startB := n.restartable(t, backend, "b.test")
			b := startB()
			ctx := ctxT(t)
			alice := a.Register(t, "alice")
			bob := b.Register(t, "bob")
			room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
			var want []string
			for i := 1; i <= 30; i++ {
				sendText(t, alice, room, fmt.Sprintf("m%d", i))
				want = append(want, fmt.Sprintf("m%d", i))
			}
			slices.Reverse(want)
			if _, err := bob.JoinRoom(ctx, string(room), &mautrix.ReqJoinRoom{Via: []string{"a.test"}}); err != nil {
				t.Fatalf("remote join: %v", err)
			}

			evs, ends := walkBack(t, bob, room, "", 7)
			if got := bodies(evs); !slices.Equal(got, want) {
				t.Fatalf("bob's /messages: %v, want %v", got, want)
			}
			seen := map[id.EventID]bool{}
			createAt, lastMsg := -1, -1
			for i, e := range evs {
				if seen[e.ID] {
					t.Fatalf("event %s twice", e.ID)
				}
				seen[e.ID] = true
				switch e.Type {
				case event.StateCreate:
					createAt = i
				case event.EventMessage:
					lastMsg = i
				}
			}
			if createAt < lastMsg {
				t.Fatalf("the create event (at %d) is not after the messages (last at %d)", createAt, lastMsg)
			}
			// The history is stored below everything b.test had.
			if se, err := b.DB.GetEvent(ctx, string(evs[lastMsg].ID)); err != nil || se.StreamPos >= 0 {
				t.Fatalf("m1 on b.test: %+v, %v", se, err)
			}
			// /context and /event find the backfilled history; /context's
			// tokens point into it and continue.
			var m15 id.EventID
			for _, e := range evs {
				if e.Content.Raw["body"] == "m15" {
					m15 = e.ID
				}
			}
			cx, err := bob.Context(ctx, room, m15, nil, 2)
			if err != nil || len(cx.EventsBefore) != 1 || cx.EventsBefore[0].Content.Raw["body"] != "m14" ||
				len(cx.EventsAfter) != 1 || cx.EventsAfter[0].Content.Raw["body"] != "m16" {
				t.Fatalf("/context of m15: %+v, %v", cx, err)
			}
			if next, err := bob.Messages(ctx, room, cx.Start, "", mautrix.DirectionBackward, nil, 1); err != nil ||
				len(next.Chunk) != 1 || next.Chunk[0].Content.Raw["body"] != "m13" {
				t.Fatalf("/messages from /context's start %q: %+v, %v", cx.Start, next, err)
			}
			if e, err := bob.GetEvent(ctx, room, evs[lastMsg].ID); err != nil || e.Content.Raw["body"] != "m1" {
				t.Fatalf("/event of m1: %+v, %v", e, err)
			}
			// A token into the backfilled history survives a restart of b.test.
			var mid string
			for _, e := range ends[:len(ends)-1] { // not the last: nothing is before it
				if strings.Contains(e, "_-") {
					mid = e
				}
			}
			if mid == "" {
				t.Fatalf("no token into backfilled history among %v", ends)
			}
			before, _ := walkBack(t, bob, room, mid, 5)
			shutdown, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := b.Shutdown(shutdown); err != nil {
				t.Fatal(err)
			}
			b = startB()
			bob2 := b.Client(t)
			bob2.SetCredentials(bob.UserID, bob.AccessToken)
			bob2.DeviceID = bob.DeviceID
			after, _ := walkBack(t, bob2, room, mid, 5)
			if len(before) == 0 || !slices.Equal(bodies(after), bodies(before)) || len(after) != len(before) {
				t.Fatalf("from %s after the restart: %v, before it: %v", mid, bodies(after), bodies(before))
			}

			backfillBadInput(t, a, b, alice, bob2, room)

			// More history than one request backfills (100 events a fetch, 2
			// fetches a request): a page ends at the gap rather than passing
			// it, and the next page fetches on; nothing is skipped.
			long := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
			var wantLong []string
			for i := 1; i <= 250; i++ {
				sendText(t, alice, long, fmt.Sprintf("l%d", i))
				wantLong = append(wantLong, fmt.Sprintf("l%d", i))
			}
			slices.Reverse(wantLong)
			if _, err := bob2.JoinRoom(ctx, string(long), &mautrix.ReqJoinRoom{Via: []string{"a.test"}}); err != nil {
				t.Fatalf("remote join: %v", err)
			}
			evs, _ = walkBack(t, bob2, long, "", 300)
			if got := bodies(evs); !slices.Equal(got, wantLong) {
				t.Fatalf("bob's /messages of 250 messages: %d messages, first %v", len(got), got[:min(len(got), 3)])
			}

			// history_visibility joined: nothing before bob's join for him.
			hidden := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", InitialState: []*event.Event{{
				Type: event.StateHistoryVisibility, StateKey: new(string),
				Content: event.Content{Raw: map[string]any{"history_visibility": "joined"}}}}})
			secret := sendText(t, alice, hidden, "before bob joined")
			if _, err := bob2.JoinRoom(ctx, string(hidden), &mautrix.ReqJoinRoom{Via: []string{"a.test"}}); err != nil {
				t.Fatalf("remote join: %v", err)
			}
			evs, _ = walkBack(t, bob2, hidden, "", 10)
			if got := bodies(evs); len(got) != 0 {
				t.Fatalf("bob sees history before his join: %v", got)
			}
			// a.test does not give b.test that history (no user of b.test was
			// joined then); were it stored anyway, bob still sees none of it.
			if _, err := b.DB.GetEvent(ctx, string(secret)); err == nil {
				t.Fatal("a.test served history b.test may not see")
			}
			m, err := b.DB.GetMembership(ctx, string(hidden), string(bob.UserID))
			if err != nil {
				t.Fatal(err)
			}
			se, err := a.DB.GetEvent(ctx, string(secret))
			if err != nil {
				t.Fatal(err)
			}
			if n, err := b.Rooms.ImportBackfill(ctx, hidden, []id.EventID{id.EventID(m.EventID)}, []json.RawMessage{se.JSON}, nil); err != nil || n != 1 {
				t.Fatalf("importing the hidden message: %d, %v", n, err)
			}
			evs, _ = walkBack(t, bob2, hidden, "", 10)
			if got := bodies(evs); len(got) != 0 {
				t.Fatalf("bob sees backfilled history from before his join: %v", got)
			}
			if _, err := bob2.GetEvent(ctx, hidden, secret); err == nil {
				t.Fatal("bob reads a message from before his join with /event")
			}
		})
	}
}

// backfillBadInput: b.test's ImportBackfill (what the backfiller hands it
// from a remote's answer) ignores forged, unsigned, unrelated and other
// rooms' events, stores nothing for them, and /messages still answers; a
// content hash mismatch is kept redacted.
func backfillBadInput(t *testing.T, a, b *testserver.Server, alice, bob *mautrix.Client, otherRoom id.RoomID) {
	ctx := ctxT(t)
	room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	x1 := sendText(t, alice, room, "x1")
	x2 := sendText(t, alice, room, "x2")
	if _, err := bob.JoinRoom(ctx, string(room), &mautrix.ReqJoinRoom{Via: []string{"a.test"}}); err != nil {
		t.Fatalf("remote join: %v", err)
	}
	m, err := b.DB.GetMembership(ctx, string(room), string(bob.UserID))
	if err != nil {
		t.Fatal(err)
	}
	from := []id.EventID{id.EventID(m.EventID)}
	pduOf := func(srv *testserver.Server, x id.EventID) string {
		se, err := srv.DB.GetEvent(ctx, string(x))
		if err != nil {
			t.Fatal(err)
		}
		return string(se.JSON)
	}
	genuine := pduOf(a, x2)
	other, err := a.DB.GetEvent(ctx, string(must(alice.SendText(ctx, otherRoom, "elsewhere")).EventID))
	if err != nil {
		t.Fatal(err)
	}
	unsigned := json.RawMessage(genuine[:strings.Index(genuine, `"signatures":`)] + `"signatures":{}` +
		genuine[strings.Index(genuine, `}},`)+2:])
	for name, raw := range map[string]json.RawMessage{
		"bad signature": json.RawMessage(strings.Replace(genuine, `"ed25519:`, `"ed25519:x`, 1)),
		"unsigned":      unsigned,
		"unrelated":     json.RawMessage(pduOf(a, x1)), // not among the join's prev_events
		"other room":    other.JSON,
		"not JSON":      json.RawMessage(`[1]`),
	} {
		n, err := b.Rooms.ImportBackfill(ctx, room, from, []json.RawMessage{raw}, nil)
		if err != nil || n != 0 {
			t.Fatalf("%s: stored %d, %v", name, n, err)
		}
	}
	for _, x := range []id.EventID{x1, x2} {
		if _, err := b.DB.GetEvent(ctx, string(x)); err == nil {
			t.Fatalf("%s stored from bad input", x)
		}
	}
	// A hash mismatch: stored, redacted.
	tampered := json.RawMessage(strings.Replace(genuine, `"body":"x2"`, `"body":"forged"`, 1))
	if n, err := b.Rooms.ImportBackfill(ctx, room, from, []json.RawMessage{tampered}, nil); err != nil || n != 1 {
		t.Fatalf("tampered content: stored %d, %v", n, err)
	}
	if se, err := b.DB.GetEvent(ctx, string(x2)); err != nil || strings.Contains(string(se.JSON), "forged") {
		t.Fatalf("tampered content stored as %v, %v", se, err)
	}
	// /messages answers, and backfills on from there (x1 from a.test).
	evs, _ := walkBack(t, bob, room, "", 10)
	if got := bodies(evs); !slices.Equal(got, []string{"<nil>", "x1"}) {
		t.Fatalf("/messages after bad input: %v (x2 redacted, x1 backfilled)", got)
	}
}
