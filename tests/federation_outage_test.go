package tests

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"

	"github.com/myelin-chat/myelin/homeserver/testserver"
	"github.com/myelin-chat/myelin/internal/config"
)

// TestFederationCatchUpAfterOutage: b.test is stopped while alice on a.test
// sends more messages than a.test's queue keeps for a failing destination
// (the catch-up trim); b.test restarts on its data with bob's token still
// valid. a.test's sender delivers the latest events when b.test is back,
// b.test fetches what it needs to accept them (get_missing_events, or the
// state at the gap), bob's /sync with his old token shows the newest
// messages, and his /messages reaches every message sent during the outage,
// in order, with none twice (backfilled from a.test).
func TestFederationCatchUpAfterOutage(t *testing.T) {
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) {
			n := newFedNet(t, "a.test", "b.test")
			small := func(c *config.Config) {
				c.Federation.Sender.MinBackoff.Duration = 100 * time.Millisecond
				c.Federation.Sender.MaxBackoff.Duration = 500 * time.Millisecond
				c.Federation.Sender.MaxQueuedPerRoom, c.Federation.Sender.KeepPerRoom = 40, 5
			}
			a := n.start(t, backend, "a.test", small)
			startB := n.restartable(t, backend, "b.test", small)
			b := startB()
			ctx := ctxT(t)
			alice := a.Register(t, "alice")
			bob := b.Register(t, "bob")
			room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
			if _, err := bob.JoinRoom(ctx, string(room), &mautrix.ReqJoinRoom{Via: []string{"a.test"}}); err != nil {
				t.Fatal(err)
			}
			sendText(t, alice, room, "before")
			since := syncUntil(t, bob, "", "", func(r *mautrix.RespSync) bool {
				for _, e := range timelineOf(r, room) {
					if e.Content.Raw["body"] == "before" {
						return true
					}
				}
				return false
			}).NextBatch

			// b.test goes down; a.test queues, fails, trims.
			shutdown, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := b.Shutdown(shutdown); err != nil {
				t.Fatal(err)
			}
			n.relays["b.test"].point("")
			n.relays["b.test"].cut()
			const during = 60
			var want []string
			for i := range during {
				body := fmt.Sprintf("during %d", i)
				sendText(t, alice, room, body)
				want = append(want, body)
			}
			time.Sleep(300 * time.Millisecond)
			if st, err := a.DB.FederationDestinationState(ctx, "b.test"); err != nil || st.Failures == 0 {
				t.Fatalf("a.test's sender did not see b.test down: %+v, %v", st, err)
			}

			// Back, on its data; bob keeps his token.
			b = startB()
			bob2 := b.Client(t)
			bob2.SetCredentials(bob.UserID, bob.AccessToken)
			bob2.DeviceID = bob.DeviceID
			sendText(t, alice, room, "after")
			want = append(want, "after")
			// bob's /sync with his old token reaches "after" (events trickle in
			// as b.test takes a.test's transactions and fetches their gaps).
			deadline := time.Now().Add(60 * time.Second)
			var gapTL *mautrix.SyncTimeline // the first limited timeline after the outage
			for next := since; ; {
				r := syncOnce(t, bob2, next, `{"room":{"timeline":{"limit":100}}}`, 5000) // limited only by a gap
				if jr := r.Rooms.Join[room]; jr != nil && gapTL == nil && jr.Timeline.Limited && len(jr.Timeline.Events) > 0 {
					tl := jr.Timeline
					gapTL = &tl
				}
				if slices.ContainsFunc(timelineOf(r, room), func(e *event.Event) bool { return e.Content.Raw["body"] == "after" }) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("bob's /sync never showed the message sent after the outage")
				}
				next = r.NextBatch
			}
			// The gap shows: a limited timeline whose prev_batch pages back
			// (backfilling) through exactly what came before its first event.
			if gapTL == nil {
				t.Fatal("no /sync timeline of bob's after the outage was limited")
			}
			first := slices.IndexFunc(gapTL.Events, func(e *event.Event) bool { return e.Type == event.EventMessage })
			if first < 0 {
				t.Fatalf("limited timeline without a message: %+v", gapTL.Events)
			}
			k := slices.Index(want, gapTL.Events[first].Content.Raw["body"].(string))
			if k <= 0 {
				t.Fatalf("limited timeline starts at %q", gapTL.Events[first].Content.Raw["body"])
			}
			if got := bodies(gapTL.Events); !slices.Equal(got, want[k:k+len(got)]) {
				t.Fatalf("limited timeline %v is not continuous", got)
			}
			t.Logf("limited timeline %v, prev_batch %s", bodies(gapTL.Events), gapTL.PrevBatch)
			beforeGap, _ := walkBack(t, bob2, room, gapTL.PrevBatch, 25)
			got := bodies(beforeGap)
			slices.Reverse(got)
			if len(got) == 0 || got[0] != "before" || !slices.Equal(got[1:], want[:k]) {
				t.Fatalf("/messages from the gap's prev_batch: %v\nwant before, then %v", got, want[:k])
			}
			// Everything sent meanwhile is reachable by /messages, in order, once.
			evs, _ := walkBack(t, bob2, room, "", 25)
			got = bodies(evs)
			slices.Reverse(got)
			var msgs []string
			seen := map[string]bool{}
			for _, body := range got {
				if seen[body] {
					t.Fatalf("%q twice in /messages", body)
				}
				seen[body] = true
				if body != "before" {
					msgs = append(msgs, body)
				}
			}
			if !slices.Equal(msgs, want) {
				t.Fatalf("/messages after the outage: %d messages %v\nwant %d", len(msgs), msgs, len(want))
			}
			for _, e := range evs {
				if e.Type == event.EventMessage && e.Sender != alice.UserID {
					t.Fatalf("unexpected message %+v", e)
				}
			}
		})
	}
}
