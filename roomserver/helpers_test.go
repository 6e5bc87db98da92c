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
	o.DB, o.Config, o.SigningKey, o.Notifier = db, cfg, mfed.GenerateSigningKey(), notifier.New(db.Stream.Current())
	s, err := New(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func user(name string) id.UserID { return id.UserID("@" + name + ":test.local") }
