package roomview

import (
	"context"
	"path/filepath"
	"testing"

	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/internal/config"
	"github.com/myelin-chat/myelin/roomserver"
	"github.com/myelin-chat/myelin/storage"
)

// newTestRooms opens a fresh SQLite store with a room writer to make rooms
// with and the reads over it.
func newTestRooms(t testing.TB) (*roomserver.Server, *Service, *storage.DB) {
	t.Helper()
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
	return rooms, New(Options{Store: db}), db
}

func user(name string) id.UserID { return id.UserID("@" + name + ":test.local") }
