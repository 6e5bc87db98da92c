package storage_test

import (
	"context"
	"fmt"
	"maps"
	"testing"

	"github.com/myelin-chat/myelin/storage"
)

// TestWriteRoomEventsStateMaps: snapshots and current-state changes are
// written as StateMaps. A keyframe holds the whole state; a delta holds the
// slots it changes, an empty event ID removing one; RoomWrite.StateChanges
// upserts current_state and removes the slots with an empty event ID.
func TestWriteRoomEventsStateMaps(t *testing.T) {
	ctx := context.Background()
	const room = "!r:x"
	k := func(typ, sk string) storage.StateKey { return storage.StateKey{Type: typ, StateKey: sk} }
	for backend, db := range openBackends(t) {
		t.Run(backend, func(t *testing.T) {
			first, finish, err := db.Stream.AllocateN(5)
			if err != nil {
				t.Fatal(err)
			}
			defer finish()
			var events []storage.Event
			for i, key := range []storage.StateKey{k("m.room.create", ""), k("m.room.member", "@a:x"),
				k("m.room.member", "@b:x"), k("m.room.topic", ""), k("m.room.name", "")} {
				sk := key.StateKey
				events = append(events, storage.Event{EventID: fmt.Sprintf("$e%d", i), RoomID: room, StreamPos: first + int64(i),
					Depth: int64(i + 1), Type: key.Type, StateKey: &sk, Sender: "@a:x", JSON: []byte(`{}`)})
			}
			keyframe := storage.StateMap{k("m.room.create", ""): "$e0", k("m.room.member", "@a:x"): "$e1",
				k("m.room.member", "@b:x"): "$e2", k("m.room.topic", ""): "$e3"}
			delta := storage.StateMap{k("m.room.member", "@b:x"): "", k("m.room.topic", ""): "", k("m.room.name", ""): "$e4"}
			err = db.WriteRoomEvents(ctx, &storage.RoomWrite{
				NewRoom: &storage.RoomRow{RoomID: room, RoomVersion: "11", Creator: "@a:x"},
				RoomID:  room,
				Snapshots: []storage.Snapshot{
					{ID: 1, RoomID: room, Entries: keyframe},
					{ID: 2, RoomID: room, Parent: 1, ChainLen: 1, Entries: delta},
				},
				Events:       events,
				StateChanges: keyframe,
				Snapshot:     1,
			})
			if err != nil {
				t.Fatal(err)
			}
			want := storage.StateMap{k("m.room.create", ""): "$e0", k("m.room.member", "@a:x"): "$e1", k("m.room.name", ""): "$e4"}
			if got, err := db.SnapshotState(ctx, 2); err != nil || !maps.Equal(got, want) {
				t.Fatalf("delta snapshot state = %v, %v; want %v", got, err, want)
			}
			if got, err := db.SnapshotState(ctx, 1); err != nil || !maps.Equal(got, keyframe) {
				t.Fatalf("keyframe state = %v, %v; want %v", got, err, keyframe)
			}
			// A second batch applies the delta to current_state.
			if err := db.WriteRoomEvents(ctx, &storage.RoomWrite{RoomID: room, StateChanges: delta, Snapshot: 2}); err != nil {
				t.Fatal(err)
			}
			evs, err := db.CurrentStateEvents(ctx, room)
			if err != nil {
				t.Fatal(err)
			}
			got := storage.StateMap{}
			for _, e := range evs {
				got[k(e.Type, *e.StateKey)] = e.EventID
			}
			if !maps.Equal(got, want) {
				t.Fatalf("current state = %v, want %v", got, want)
			}
		})
	}
}

// TestEventsInStreamOrder: events asked for by ID come back in stream order,
// whatever the order asked in, once each, without the unknown IDs.
func TestEventsInStreamOrder(t *testing.T) {
	ctx := context.Background()
	const room = "!r:x"
	forEachBackend(t, func(t *testing.T, db *storage.DB) {
		first, finish, err := db.Stream.AllocateN(3)
		if err != nil {
			t.Fatal(err)
		}
		defer finish()
		var events []storage.Event
		for i := range 3 {
			events = append(events, storage.Event{EventID: fmt.Sprintf("$e%d", i), RoomID: room, StreamPos: first + int64(i),
				Depth: int64(i + 1), Type: "m.room.message", Sender: "@a:x", JSON: []byte(`{}`)})
		}
		must(t, db.WriteRoomEvents(ctx, &storage.RoomWrite{
			NewRoom: &storage.RoomRow{RoomID: room, RoomVersion: "11", Creator: "@a:x"}, RoomID: room, Events: events}))
		got, err := db.EventsInStreamOrder(ctx, []string{"$e2", "$unknown", "$e0", "$e1", "$e2"})
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, e := range got {
			ids = append(ids, e.EventID)
		}
		if fmt.Sprint(ids) != "[$e0 $e1 $e2]" {
			t.Errorf("events = %v, want [$e0 $e1 $e2]", ids)
		}
		if got, err := db.EventsInStreamOrder(ctx, nil); err != nil || len(got) != 0 {
			t.Errorf("no IDs: %v, %v", got, err)
		}
	})
}
