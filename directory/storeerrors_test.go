package directory

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	mfed "maunium.net/go/mautrix/federation"

	"github.com/myelin-chat/myelin/internal/config"
	"github.com/myelin-chat/myelin/roomserver"
	"github.com/myelin-chat/myelin/storage"
)

var errStoreDown = errors.New("store down")

// failingStore is the store with membership (failMembership) or current
// state reads (failState) failing.
type failingStore struct {
	*storage.DB
	failMembership, failState bool
}

func (f failingStore) GetMembership(ctx context.Context, roomID, userID string) (*storage.Membership, error) {
	if f.failMembership {
		return nil, errStoreDown
	}
	return f.DB.GetMembership(ctx, roomID, userID)
}

func (f failingStore) CurrentStateEvent(ctx context.Context, roomID, evType, stateKey string) (*storage.Event, error) {
	if f.failState {
		return nil, errStoreDown
	}
	return f.DB.CurrentStateEvent(ctx, roomID, evType, stateKey)
}

// TestStoreErrorsAreNotRefusals: a store failure while the directory checks
// the user's membership (setting an alias) or the room's history visibility
// (listing its aliases) is the request's error (a 500), not M_FORBIDDEN.
func TestStoreErrorsAreNotRefusals(t *testing.T) {
	ctx := context.Background()
	db, err := storage.Open(ctx, "sqlite:"+filepath.Join(t.TempDir(), "test.db"), 4)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	cfg := config.Default()
	cfg.ServerName = "test.local"
	rooms, err := roomserver.New(ctx, roomserver.Options{Store: db, Stream: db.Stream, Config: cfg, SigningKey: mfed.GenerateSigningKey()})
	if err != nil {
		t.Fatal(err)
	}
	room, err := rooms.CreateRoom(ctx, "@owner:test.local", &roomserver.CreateRoomRequest{Preset: "private_chat"})
	if err != nil {
		t.Fatal(err)
	}
	dir := New(Options{Store: failingStore{DB: db, failMembership: true}, Rooms: rooms, ServerName: "test.local"})
	if err := dir.SetAlias(ctx, "@owner:test.local", "#a:test.local", room); !errors.Is(err, errStoreDown) || errors.Is(err, roomserver.ErrForbidden) {
		t.Errorf("set alias, membership unreadable: %v", err)
	}
	dir = New(Options{Store: failingStore{DB: db, failState: true}, Rooms: rooms, ServerName: "test.local"})
	if _, err := dir.RoomAliases(ctx, "@other:test.local", room); !errors.Is(err, errStoreDown) || errors.Is(err, roomserver.ErrForbidden) {
		t.Errorf("room aliases, history visibility unreadable: %v", err)
	}
	// Not being in the room is still a refusal.
	dir = New(Options{Store: db, Rooms: rooms, ServerName: "test.local"})
	if _, err := dir.RoomAliases(ctx, "@other:test.local", room); !errors.Is(err, roomserver.ErrForbidden) {
		t.Errorf("room aliases, not in the room: %v", err)
	}
	if err := dir.SetAlias(ctx, "@other:test.local", "#a:test.local", room); !errors.Is(err, roomserver.ErrForbidden) {
		t.Errorf("set alias, not in the room: %v", err)
	}
}
