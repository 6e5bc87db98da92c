package storage_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/myelin-chat/myelin/internal/pgtest"
	"github.com/myelin-chat/myelin/storage"
)

// storeURL names a fresh, empty store on backend (a temporary SQLite file or
// a new database in the throwaway PostgreSQL cluster).
func storeURL(t *testing.T, backend string) string {
	t.Helper()
	if backend != "postgres" {
		return "sqlite:" + filepath.Join(t.TempDir(), "test.db")
	}
	url, err := pgTemplate.copy(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return url
}

// pgTemplate is a migrated PostgreSQL database that each test's store is
// copied from (CREATE DATABASE ... TEMPLATE): much faster than migrating a
// new database for every test.
var pgTemplate templateDB

type templateDB struct {
	once     sync.Once
	err      error
	template string // URL of the migrated database
	maint    string // URL of an empty database to run CREATE DATABASE from
	seq      atomic.Int64
	mu       sync.Mutex // one copy at a time: the template must have no other session
}

func (p *templateDB) copy(ctx context.Context) (string, error) {
	p.once.Do(func() {
		if p.template, p.err = pgtest.URL(ctx); p.err != nil {
			return
		}
		var db *storage.DB
		if db, p.err = storage.Open(ctx, p.template, 1); p.err != nil {
			return
		}
		db.Close()
		p.maint, p.err = pgtest.URL(ctx)
	})
	if p.err != nil {
		return "", p.err
	}
	u, err := url.Parse(p.template)
	if err != nil {
		return "", err
	}
	source := strings.TrimPrefix(u.Path, "/")
	name := fmt.Sprintf("%s_copy%d", source, p.seq.Add(1))
	p.mu.Lock()
	defer p.mu.Unlock()
	conn, err := pgx.Connect(ctx, p.maint)
	if err != nil {
		return "", err
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name+" TEMPLATE "+source); err != nil {
		return "", fmt.Errorf("copying the migrated template database: %w", err)
	}
	u.Path = "/" + name
	return u.String(), nil
}

// forEachBackend runs test as a subtest per backend, each on a fresh store.
func forEachBackend(t *testing.T, test func(t *testing.T, db *storage.DB)) {
	t.Helper()
	for _, backend := range pgtest.Backends {
		t.Run(backend, func(t *testing.T) {
			db, err := storage.Open(context.Background(), storeURL(t, backend), 8)
			if err != nil {
				t.Fatalf("opening %s store: %v", backend, err)
			}
			t.Cleanup(db.Close)
			test(t, db)
		})
	}
}

// must fails the test on err.
func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// wantNotFound fails the test unless err is storage.ErrNotFound.
func wantNotFound(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("%s: got %v, want ErrNotFound", what, err)
	}
}

// countRows counts the rows of a query's result (SELECT COUNT(*) ...).
func countRows(t *testing.T, db *storage.DB, query string, args ...any) int {
	t.Helper()
	var n int
	if err := db.QueryRow(context.Background(), query, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}
