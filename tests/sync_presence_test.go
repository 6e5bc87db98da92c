package tests

import (
	"context"
	"testing"
	"time"

	"maunium.net/go/mautrix/event"

	"github.com/myelin-chat/myelin/homeserver/testserver"
	"github.com/myelin-chat/myelin/internal/config"
)

// TestPresenceDecays: a user who stops syncing goes unavailable after the
// idle delay and offline after the offline delay (5 and 30 minutes by
// default; shortened here), and each change reaches the users who share a
// room with them through /sync, with last_active_ago and currently_active.
func TestPresenceDecays(t *testing.T) {
	opts := testserver.Options{Configure: func(c *config.Config) { c.Presence.Enabled = true }}
	forEachBackendWith(t, opts, func(t *testing.T, srv *testserver.Server) {
		srv.Ephemeral.SetPresenceTimeouts(400*time.Millisecond, 1500*time.Millisecond)
		ctx := context.Background()
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		shareRoom(t, alice, bob)
		since := syncOnce(t, alice, "", "", 0).NextBatch
		start := time.Now()
		syncOnce(t, bob, "", "", 0) // bob is online, then goes quiet

		waitFor := func(want event.Presence) *event.PresenceEventContent {
			t.Helper()
			deadline := time.Now().Add(15 * time.Second)
			for time.Now().Before(deadline) {
				resp := syncOnce(t, alice, since, "", 2000)
				since = resp.NextBatch
				for _, e := range resp.Presence.Events {
					if e.Sender != bob.UserID {
						continue
					}
					_ = e.Content.ParseRaw(event.EphemeralEventPresence)
					if p := e.Content.AsPresence(); p.Presence == want {
						return p
					}
				}
			}
			t.Fatalf("bob never became %s in alice's sync", want)
			return nil
		}
		on := waitFor(event.PresenceOnline)
		if !on.CurrentlyActive {
			t.Errorf("online presence should be currently_active: %+v", on)
		}
		un := waitFor(event.PresenceUnavailable)
		if time.Since(start) < 400*time.Millisecond {
			t.Errorf("unavailable after %v, before the idle delay", time.Since(start))
		}
		if un.CurrentlyActive {
			t.Errorf("unavailable presence claims currently_active: %+v", un)
		}
		off := waitFor(event.PresenceOffline)
		if time.Since(start) < 1500*time.Millisecond {
			t.Errorf("offline after %v, before the offline delay", time.Since(start))
		}
		if off.LastActiveAgo < 1000 {
			t.Errorf("offline last_active_ago %d ms, want at least the time since bob's sync", off.LastActiveAgo)
		}
		got, err := alice.GetPresence(ctx, bob.UserID)
		if err != nil || got.Presence != event.PresenceOffline {
			t.Fatalf("GET presence of bob: %+v, %v", got, err)
		}
		// Syncing again brings bob back online.
		syncOnce(t, bob, "", "", 0)
		waitFor(event.PresenceOnline)
	})
}
