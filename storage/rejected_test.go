package storage_test

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/myelin-chat/myelin/storage"
)

// TestRejectedEvents: a rejection round-trips with its prev_events, a second
// record keeps the first, the reason is bounded, and each room keeps only
// its newest rejections.
func TestRejectedEvents(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		rec := func(evID, room, reason string, ts int64) {
			t.Helper()
			r := storage.RejectedEvent{EventID: evID, RoomID: room, PrevEvents: []string{"$p1", "$p2"}, Reason: reason}
			if err := db.RecordRejected(ctx, r, ts, 2); err != nil {
				t.Fatal(err)
			}
		}
		rec("$a", "!r:x", strings.Repeat("x", 2000), 1)
		rec("$a", "!r:x", "second", 5)
		rec("$o", "!other:x", "other room", 2)
		got, err := db.RejectedEvents(ctx, []string{"$a", "$o", "$unknown"})
		if err != nil {
			t.Fatal(err)
		}
		a := got["$a"]
		if len(got) != 2 || a.RoomID != "!r:x" || !slices.Equal(a.PrevEvents, []string{"$p1", "$p2"}) || len(a.Reason) != 500 {
			t.Fatalf("got %+v", got)
		}
		rec("$b", "!r:x", "b", 3)
		rec("$c", "!r:x", "c", 4) // the room keeps 2: $a (ts 1) goes
		if got, err = db.RejectedEvents(ctx, []string{"$a", "$b", "$c", "$o"}); err != nil {
			t.Fatal(err)
		}
		if _, ok := got["$a"]; ok || len(got) != 3 {
			t.Fatalf("after trimming: %+v", got)
		}
	})
}
