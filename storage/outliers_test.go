package storage_test

import (
	"context"
	"errors"
	"math"
	"testing"

	"github.com/myelin-chat/myelin/storage"
)

// TestOutliers: an outlier is found by ID (auth, state) and by no timeline or
// stream read, with or without a lower bound; a non-outlier at a negative
// position (backfill) is still a timeline event (the flag decides, not the
// sign); an outlier written again as a proper event is de-outliered in place,
// and a proper event is never written again (as an outlier: skipped).
func TestOutliers(t *testing.T) {
	ctx := context.Background()
	const room = "!r:x"
	member := "@m:x"
	ev := func(id string, pos int64, outlier bool, typ string, stateKey *string) storage.Event {
		return storage.Event{EventID: id, RoomID: room, StreamPos: pos, Depth: 1, Type: typ, StateKey: stateKey, Sender: "@m:x",
			OriginServerTS: 5, JSON: []byte(`{"content":{"body":"hello outlier","membership":"join"}}`), Outlier: outlier,
			RelatesTo: "$root", RelType: "m.thread", Membership: "join"}
	}
	for backend, db := range openBackends(t) {
		t.Run(backend, func(t *testing.T) {
			write := func(first bool, evs ...storage.Event) error {
				w := &storage.RoomWrite{RoomID: room, Events: evs, Snapshot: 0, Extremities: []string{}}
				if first {
					w.NewRoom = &storage.RoomRow{RoomID: room, RoomVersion: "10", Creator: "@m:x"}
				}
				return db.WriteRoomEvents(ctx, w)
			}
			if err := write(true,
				ev("$out", storage.OutlierPos(10), true, "m.room.member", &member),
				ev("$old", -5, false, "m.room.message", nil), // backfilled, not an outlier
				ev("$new", 11, false, "m.room.message", nil)); err != nil {
				t.Fatal(err)
			}
			got, err := db.GetEvent(ctx, "$out")
			if err != nil || !got.Outlier || got.StreamPos >= -1<<61 {
				t.Fatalf("GetEvent($out) = %+v, %v", got, err)
			}
			if m, err := db.GetEvents(ctx, []string{"$out"}); err != nil || m["$out"] == nil {
				t.Fatalf("GetEvents($out) = %v, %v", m, err)
			}
			if evs, err := db.EventsInStreamOrder(ctx, []string{"$out", "$new"}); err != nil || len(evs) != 2 || evs[0].EventID != "$out" {
				t.Fatalf("EventsInStreamOrder (a state's events) = %v, %v", evs, err)
			}
			ids := func(evs []*storage.Event, err error) []string {
				t.Helper()
				if err != nil {
					t.Fatal(err)
				}
				var out []string
				for _, e := range evs {
					out = append(out, e.EventID)
				}
				return out
			}
			check := func(what string, got []string, want ...string) {
				t.Helper()
				if len(got) != len(want) {
					t.Fatalf("%s = %v, want %v", what, got, want)
				}
				for i := range got {
					if got[i] != want[i] {
						t.Fatalf("%s = %v, want %v", what, got, want)
					}
				}
			}
			rng, _, err := db.RoomEventsRange(ctx, room, math.MinInt64, 100, 10)
			check("RoomEventsRange", ids(rng, err), "$old", "$new")
			check("RoomEventsByTopology backwards", ids(db.RoomEventsByTopology(ctx, room, storage.TopoPos{Depth: 100, Stream: 100}, nil, true, 10, nil)), "$new", "$old")
			check("RoomEventsByTopology forwards", ids(db.RoomEventsByTopology(ctx, room, storage.TopoPos{Depth: -100}, nil, false, 10, nil)), "$old", "$new")
			check("StreamEvents", ids(db.StreamEvents(ctx, math.MinInt64, 100, 10)), "$old", "$new")
			low := int64(math.MinInt64)
			check("Relations forwards", ids(db.Relations(ctx, room, "$root", "", "", 1, math.MinInt64, nil, false, 10)), "$old", "$new")
			check("Relations recursive", ids(db.Relations(ctx, room, "$root", "", "", 3, 100, &low, true, 10)), "$new", "$old")
			if roots, _, err := db.ThreadRoots(ctx, room, 0, 10); err != nil || len(roots) != 0 {
				t.Fatalf("ThreadRoots = %v, %v", roots, err) // $root is unknown: nothing to list
			}
			if replies, err := db.ThreadReplies(ctx, "$root"); err != nil || len(replies) != 2 {
				t.Fatalf("ThreadReplies = %v, %v", replies, err)
			}
			rooms, err := db.RoomsWithEvents(ctx, math.MinInt64, 100)
			if err != nil || !rooms[room] {
				t.Fatalf("RoomsWithEvents = %v, %v", rooms, err)
			}
			if rooms, err := db.RoomsWithEvents(ctx, math.MinInt64, -6); err != nil || rooms[room] {
				t.Fatalf("RoomsWithEvents below the backfilled event (only the outlier) = %v, %v", rooms, err)
			}
			if ch, err := db.MembershipChanges(ctx, member, math.MinInt64, 100); err != nil || len(ch) != 0 {
				t.Fatalf("MembershipChanges = %v, %v", ch, err)
			}
			if e, err := db.EventNearTimestamp(ctx, room, 0, true); err != nil || e.EventID == "$out" {
				t.Fatalf("EventNearTimestamp = %v, %v", e, err)
			}
			if _, err := db.EventPosition(ctx, room, "$out"); !errors.Is(err, storage.ErrNotFound) {
				t.Fatalf("EventPosition($out): %v, want ErrNotFound", err)
			}

			// De-outliered: the row takes its new place; only once.
			if err := write(false, ev("$out", 12, false, "m.room.member", &member)); err != nil {
				t.Fatalf("de-outliering: %v", err)
			}
			if got, err := db.GetEvent(ctx, "$out"); err != nil || got.Outlier || got.StreamPos != 12 {
				t.Fatalf("de-outliered $out = %+v, %v", got, err)
			}
			rng, _, err = db.RoomEventsRange(ctx, room, 0, 100, 10)
			check("RoomEventsRange after de-outliering", ids(rng, err), "$new", "$out")
			if err := write(false, ev("$out", 13, false, "m.room.member", &member)); !errors.Is(err, storage.ErrEventExists) {
				t.Fatalf("writing a stored event again: %v, want ErrEventExists", err)
			}
			// An outlier of an event stored already (an invite the joiner had,
			// in the send_join answer): skipped.
			if err := write(false, ev("$new", storage.OutlierPos(14), true, "m.room.message", nil)); err != nil {
				t.Fatalf("writing a stored event again as an outlier: %v", err)
			}
			if got, err := db.GetEvent(ctx, "$new"); err != nil || got.Outlier || got.StreamPos != 11 {
				t.Fatalf("$new after a refused rewrite = %+v, %v", got, err)
			}
		})
	}
}
