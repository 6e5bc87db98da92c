package roomserver

import (
	"context"
	"path/filepath"
	"testing"

	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/internal/config"
	"github.com/myelin-chat/myelin/internal/notifier"
	"github.com/myelin-chat/myelin/storage"
)

// newTestServer opens a roomserver over a fresh SQLite store.
func newTestServer(t testing.TB) *Server {
	t.Helper()
	ctx := context.Background()
	db, err := storage.Open(ctx, "sqlite:"+filepath.Join(t.TempDir(), "test.db"), 4)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	cfg := config.Default()
	cfg.ServerName = "test.local"
	s, err := New(ctx, db, cfg, mfed.GenerateSigningKey(), notifier.New(db.Stream.Current()))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func user(name string) id.UserID { return id.UserID("@" + name + ":test.local") }
