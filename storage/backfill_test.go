package storage_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/myelin-chat/myelin/storage"
)

// TestInsertHistoricalEvents: backfilled events get negative stream
// positions below everything stored, in the order given (oldest first), a
// second batch below the first; events already stored are skipped; the
// topological read finds them, the stream reads of /sync do not, and search
// indexes them.
func TestInsertHistoricalEvents(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		const room = "!r:x"
		first, finish, err := db.Stream.AllocateN(1)
		if err != nil {
			t.Fatal(err)
		}
		must(t, db.WriteRoomEvents(ctx, &storage.RoomWrite{NewRoom: &storage.RoomRow{RoomID: room, RoomVersion: "11", Creator: "@a:x"},
			RoomID: room, Events: []storage.Event{{EventID: "$now", RoomID: room, StreamPos: first, Depth: 10, Type: "m.room.message",
				Sender: "@a:x", JSON: []byte(`{}`)}}}))
		finish()
		batch := func(names ...string) []storage.Event {
			var out []storage.Event
			for i, n := range names {
				out = append(out, storage.Event{EventID: n, RoomID: room, Depth: int64(i + 1), Type: "m.room.message", Sender: "@b:y",
					JSON: []byte(fmt.Sprintf(`{"type":"m.room.message","content":{"body":"needle %s"}}`, n))})
			}
			return out
		}
		got, err := db.InsertHistoricalEvents(ctx, room, batch("$old1", "$old2"))
		if err != nil || len(got) != 2 || got[0].StreamPos >= got[1].StreamPos || got[1].StreamPos >= 0 {
			t.Fatalf("first batch: %+v, %v", got, err)
		}
		again, err := db.InsertHistoricalEvents(ctx, room, batch("$older", "$old1", "$now"))
		if err != nil || len(again) != 1 || again[0].EventID != "$older" || again[0].StreamPos >= got[0].StreamPos {
			t.Fatalf("second batch: %+v, %v", again, err)
		}
		evs, err := db.RoomEventsByTopology(ctx, room, storage.TopoPos{Depth: 1 << 62}, nil, true, 10, nil)
		if err != nil || len(evs) != 4 || evs[0].EventID != "$now" {
			t.Fatalf("topological read: %v, %v", evs, err)
		}
		if recent, _, err := db.RoomEventsRange(ctx, room, 0, db.Stream.Current(), 10); err != nil || len(recent) != 1 {
			t.Fatalf("stream read after 0: %v, %v", recent, err)
		}
		known, err := db.KnownEvents(ctx, []string{"$old1", "$nope", "$now"})
		if err != nil || !known["$old1"] || !known["$now"] || known["$nope"] {
			t.Fatalf("KnownEvents: %v, %v", known, err)
		}
		hits, err := db.SearchEvents(ctx, &storage.SearchQuery{Terms: []string{"needle"}, Types: []string{"m.room.message"}, Ranges: []storage.SearchRange{{RoomID: room, From: -1 << 62, To: 1 << 62}}, Limit: 10})
		if err != nil || len(hits) != 3 {
			t.Fatalf("search: %d hits, %v", len(hits), err)
		}
	})
}
