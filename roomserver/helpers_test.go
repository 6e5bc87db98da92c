package roomserver

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"testing"

	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/clientevent"
	"github.com/myelin-chat/myelin/internal/config"
	"github.com/myelin-chat/myelin/internal/notifier"
	"github.com/myelin-chat/myelin/storage"
)

// newTestServer opens a roomserver over a fresh SQLite store.
func newTestServer(t testing.TB) *Server {
	t.Helper()
	return newTestServerWith(t, Options{})
}

// newTestServerWith is newTestServer with o's remaining options (the store,
// config, signing key and notifier are filled in).
func newTestServerWith(t testing.TB, o Options) *Server {
	t.Helper()
	ctx := context.Background()
	db, err := storage.Open(ctx, "sqlite:"+filepath.Join(t.TempDir(), "test.db"), 4)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	cfg := config.Default()
	cfg.ServerName = "test.local"
	o.Store, o.Stream, o.Config, o.SigningKey, o.Notifier = db, db.Stream, cfg, mfed.GenerateSigningKey(), notifier.New(db.Stream.Current())
	s, err := New(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func user(name string) id.UserID { return id.UserID("@" + name + ":test.local") }

// readEvent renders a stored event of the room as a client reads it (the
// client reads are roomview's; these tests check what the writer stored).
// A soft-failed event is not served.
func readEvent(ctx context.Context, s *Server, roomID id.RoomID, eventID id.EventID) (json.RawMessage, error) {
	se, err := s.db.GetEvent(ctx, string(eventID))
	if err != nil {
		return nil, err
	}
	if se.RoomID != string(roomID) || se.SoftFailed {
		return nil, errors.New("event not found")
	}
	return clientevent.One(ctx, renderStore{s.db}, nil, se)
}

// renderStore is the writer's store as the renderer reads it: no user erased
// in these tests.
type renderStore struct{ Store }

func (renderStore) ErasedUsers(context.Context, []string) (map[string]bool, error) { return nil, nil }

func (r renderStore) GetRoom(context.Context, string) (*storage.RoomRow, error) {
	return nil, errors.New("no erased user: the room version is never needed")
}

// readState renders the room's current state event (evType, stateKey).
func readState(ctx context.Context, s *Server, roomID id.RoomID, evType, stateKey string) (json.RawMessage, error) {
	rs, err := s.loadRoom(ctx, roomID)
	if err != nil {
		return nil, err
	}
	e := rs.get(evType, stateKey)
	if e == nil {
		return nil, errors.New("state event not found")
	}
	return readEvent(ctx, s, roomID, e.ID)
}
