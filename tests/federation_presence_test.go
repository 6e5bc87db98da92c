package tests

import (
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

// count is how many EDUs of typ whose content mentions word were logged.
func (l *eduLog) count(typ, word string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, e := range l.edus {
		if strings.Contains(e, " "+typ+" ") && strings.Contains(e, word) {
			n++
		}
	}
	return n
}

// TestFederationPresencePings: presence between servers as Synapse's peers
// expect. b.test joining a room of a.test learns alice's presence, set
// before any room was shared, with no change of hers; a.test re-sends
// alice's presence each ping interval with no change; bob's presence, of
// which b.test then says nothing, expires to offline in alice's /sync after
// a.test's remote timeout.
func TestFederationPresencePings(t *testing.T) {
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) {
			defer recoverMust(t)
			n := newFedNet(t, "a.test", "b.test")
			a := n.start(t, backend, "a.test")
			b := n.start(t, backend, "b.test")
			var toB eduLog
			n.relays["b.test"].point(recordEDUs(t, b.Config.Listen.HTTP, &toB))
			ctx := ctxT(t)
			alice, bob := a.Register(t, "alice"), b.Register(t, "bob")

			// alice is online before a.test shares a room with b.test: nothing sent.
			must(0, alice.SetPresence(ctx, mautrix.ReqPresence{Presence: event.PresenceOnline, StatusMsg: "a-here"}))
			room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
			// bob joins: b.test learns alice's presence, which did not change.
			must(bob.JoinRoom(ctx, string(room), &mautrix.ReqJoinRoom{Via: []string{"a.test"}}))
			syncUntil(t, bob, "", "", presenceHas(alice.UserID, "online", "a-here"))
			if toB.count("m.presence", string(alice.UserID)) == 0 {
				t.Fatal("alice's presence did not come over federation")
			}

			// Pings: alice's presence goes again and again, unchanged.
			sent := toB.count("m.presence", string(alice.UserID))
			a.Ephemeral.SetFederationPresenceTimeouts(300*time.Millisecond, time.Hour)
			deadline := time.Now().Add(15 * time.Second)
			for toB.count("m.presence", string(alice.UserID)) < sent+2 && time.Now().Before(deadline) {
				time.Sleep(50 * time.Millisecond)
			}
			if got := toB.count("m.presence", string(alice.UserID)); got < sent+2 {
				t.Fatalf("alice's presence sent %d times, %d before the pings", got, sent)
			}
			a.Ephemeral.SetFederationPresenceTimeouts(time.Hour, time.Hour)

			// Expiry: bob's online reaches alice, then b.test falls silent
			// (its pings are 25 minutes apart); a.test's short remote timeout
			// turns him offline in alice's incremental /sync.
			must(0, bob.SetPresence(ctx, mautrix.ReqPresence{Presence: event.PresenceOnline, StatusMsg: "b-here"}))
			since := syncUntil(t, alice, "", "", presenceHas(bob.UserID, "online", "b-here")).NextBatch
			a.Ephemeral.SetFederationPresenceTimeouts(time.Hour, time.Second)
			syncUntil(t, alice, since, "", presenceHas(bob.UserID, "offline", ""))
			if p := must(alice.GetPresence(ctx, bob.UserID)); p.Presence != event.PresenceOffline {
				t.Fatalf("alice's GET of bob's presence after the timeout: %+v", p)
			}
		})
	}
}
