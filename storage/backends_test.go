package storage_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/myelin-chat/myelin/internal/testserver"
	"github.com/myelin-chat/myelin/storage"
)

// storeURL names a fresh, empty store on backend (a temporary SQLite file or
// a new database in the throwaway PostgreSQL cluster).
func storeURL(t *testing.T, backend string) string {
	t.Helper()
	if backend != "postgres" {
		return "sqlite:" + filepath.Join(t.TempDir(), "test.db")
	}
	url, err := testserver.PostgresURL(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return url
}

// forEachBackend runs test as a subtest per backend, each on a fresh store.
func forEachBackend(t *testing.T, test func(t *testing.T, db *storage.DB)) {
	t.Helper()
	for _, backend := range testserver.Backends {
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
