package roomview

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/myelin-chat/myelin/roomserver"
	"github.com/myelin-chat/myelin/storage"
)

var errStoreDown = errors.New("store down")

// failingStore is the store with some reads failing: GetRoom for the rooms
// in rooms, CurrentStateEvent for the event types in types.
type failingStore struct {
	*storage.DB
	rooms, types map[string]bool
}

func (f *failingStore) GetRoom(ctx context.Context, roomID string) (*storage.RoomRow, error) {
	if f.rooms[roomID] {
		return nil, errStoreDown
	}
	return f.DB.GetRoom(ctx, roomID)
}

func (f *failingStore) CurrentStateEvent(ctx context.Context, roomID, evType, stateKey string) (*storage.Event, error) {
	if f.types[evType] {
		return nil, errStoreDown
	}
	return f.DB.CurrentStateEvent(ctx, roomID, evType, stateKey)
}

// TestReadsReturnStoreErrors: a store failure under the room summary's fields
// or the space hierarchy's room checks is the read's error (a 500), not an
// empty field, a room left out or a refusal; an unknown child room is still
// left out.
func TestReadsReturnStoreErrors(t *testing.T) {
	rooms, _, db := newTestRooms(t)
	ctx := context.Background()
	owner := user("owner")
	space, err := rooms.CreateRoom(ctx, owner, &roomserver.CreateRoomRequest{Preset: "public_chat", Topic: "about",
		CreationContent: map[string]json.RawMessage{"type": json.RawMessage(`"m.space"`)}})
	if err != nil {
		t.Fatal(err)
	}
	child, err := rooms.CreateRoom(ctx, owner, &roomserver.CreateRoomRequest{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{string(child), "!unknown:test.local"} {
		if _, err := rooms.Send(ctx, roomserver.SendRequest{Sender: owner, RoomID: space, Type: "m.space.child", StateKey: &c,
			Content: json.RawMessage(`{"via":["test.local"]}`)}); err != nil {
			t.Fatal(err)
		}
	}
	// view reads through a store failing GetRoom of room and CurrentStateEvent of evType.
	view := func(room, evType string) *Service {
		return New(Options{Store: &failingStore{DB: db, rooms: map[string]bool{room: true}, types: map[string]bool{evType: true}}})
	}

	if resp, err := view("", "").Hierarchy(ctx, owner, space, false, 0, 0, ""); err != nil || len(resp.Rooms) != 2 {
		t.Fatalf("hierarchy: %v, %v; want the space and its known child", resp, err)
	}
	if _, err := RoomInfo(ctx, view("", "m.room.topic").db, space); !errors.Is(err, errStoreDown) {
		t.Errorf("room info, topic unreadable: %v", err)
	}
	if _, err := view("", "m.room.topic").Summary(ctx, owner, string(space)); !errors.Is(err, errStoreDown) {
		t.Errorf("summary, topic unreadable: %v", err)
	}
	if _, err := view(string(space), "").Hierarchy(ctx, owner, space, false, 0, 0, ""); !errors.Is(err, errStoreDown) {
		t.Errorf("hierarchy, space's room unreadable: %v", err)
	}
	if _, err := view(string(child), "").Hierarchy(ctx, owner, space, false, 0, 0, ""); !errors.Is(err, errStoreDown) {
		t.Errorf("hierarchy, child's room unreadable: %v", err)
	}
}
