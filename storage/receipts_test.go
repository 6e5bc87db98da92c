package storage_test

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/myelin-chat/myelin/storage"
)

// A user has one receipt per room, type and thread: a new one replaces it
// and moves it to its new position; reads are bounded by the upper position.
func TestReceiptsReplaceAndBound(t *testing.T) {
	ctx := context.Background()
	forEachBackend(t, func(t *testing.T, db *storage.DB) {
		put := func(user, typ, thread, event string, pos int64) {
			t.Helper()
			must(t, db.UpsertReceipt(ctx, storage.Receipt{RoomID: "!r:x", UserID: user, Type: typ, ThreadID: thread, EventID: event, TS: pos * 10, Pos: pos}))
		}
		put("@a:x", "m.read", "", "$1", 1)
		put("@a:x", "m.read", "main", "$2", 2)
		put("@a:x", "m.read.private", "", "$3", 3)
		put("@b:x", "m.read", "", "$4", 4)
		put("@a:x", "m.read", "", "$5", 5) // replaces $1
		must(t, db.UpsertReceipt(ctx, storage.Receipt{RoomID: "!other:x", UserID: "@a:x", Type: "m.read", EventID: "$o", Pos: 6}))

		show := func(rs []storage.Receipt) []string {
			var out []string
			for _, r := range rs {
				out = append(out, fmt.Sprintf("%s %s %s@%d", r.UserID, r.EventID, r.ThreadID, r.Pos))
			}
			return out
		}
		all, err := db.RoomReceipts(ctx, "!r:x", 100)
		must(t, err)
		if want := []string{"@a:x $2 main@2", "@a:x $3 @3", "@b:x $4 @4", "@a:x $5 @5"}; !slices.Equal(show(all), want) {
			t.Fatalf("RoomReceipts = %v, want %v", show(all), want)
		}
		upTo4, err := db.RoomReceipts(ctx, "!r:x", 4)
		must(t, err)
		if want := []string{"@a:x $2 main@2", "@a:x $3 @3", "@b:x $4 @4"}; !slices.Equal(show(upTo4), want) {
			t.Fatalf("RoomReceipts up to 4 = %v, want %v", show(upTo4), want)
		}
		mine, err := db.UserReceipts(ctx, "!r:x", "@a:x")
		must(t, err)
		if len(mine) != 3 {
			t.Fatalf("UserReceipts = %v", show(mine))
		}
		for _, r := range mine {
			if r.Type == "m.read" && r.ThreadID == "" && (r.EventID != "$5" || r.TS != 50) {
				t.Fatalf("replaced receipt: %+v", r)
			}
		}
		if none, err := db.UserReceipts(ctx, "!r:x", "@nobody:x"); err != nil || len(none) != 0 {
			t.Fatalf("UserReceipts of a user without any: %v, %v", none, err)
		}
	})
}
