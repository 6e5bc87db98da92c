package tests

import (
	"context"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

// TestPutStateUnchanged: a state PUT whose content equals the current
// event's, by the same sender, returns the existing event ID and adds no
// event; a different content or another sender makes a new event.
func TestPutStateUnchanged(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		alice := srv.Register(t, "alice")
		bob := srv.Register(t, "bob")
		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat",
			PowerLevelOverride: &event.PowerLevelsEventContent{Users: map[id.UserID]int{"@alice:localhost": 100, "@bob:localhost": 100}}}, bob)
		topic := func(c *mautrix.Client, raw map[string]any) id.EventID {
			return must(c.SendStateEvent(ctx, room, event.StateTopic, "", raw)).EventID
		}
		first := topic(alice, map[string]any{"topic": "hello", "n": 1})
		count := func() int {
			return len(must(alice.Messages(ctx, room, "", "", mautrix.DirectionBackward, nil, 200)).Chunk)
		}
		before := count()
		// Same content with the keys in another order: the same event.
		if again := topic(alice, map[string]any{"n": 1, "topic": "hello"}); again != first {
			t.Fatalf("unchanged state PUT made a new event %s (first %s)", again, first)
		}
		if n := count(); n != before {
			t.Fatalf("unchanged state PUT added events: %d -> %d", before, n)
		}
		if changed := topic(alice, map[string]any{"topic": "hello", "n": 2}); changed == first {
			t.Fatal("changed content returned the old event")
		}
		byBob := topic(bob, map[string]any{"topic": "hello", "n": 2})
		if byBob == first || count() != before+2 {
			t.Fatalf("same content from another sender must be a new event (count %d, want %d)", count(), before+2)
		}
	})
}
