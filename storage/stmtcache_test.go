package storage

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
)

func openSQLite(tb testing.TB) *DB {
	tb.Helper()
	db, err := Open(context.Background(), "sqlite:"+filepath.Join(tb.TempDir(), "stmt.db"), 4)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(db.Close)
	return db
}

func TestStmtCacheServesAndIsBounded(t *testing.T) {
	ctx := context.Background()
	db := openSQLite(t)
	const q = `SELECT COUNT(*) FROM devices WHERE user_id = $1`
	before := db.readerStmts.len()
	for i := 0; i < 3; i++ {
		var n int
		if err := db.QueryRow(ctx, q, "@a:x").Scan(&n); err != nil || n != 0 {
			t.Fatalf("count = %d, %v", n, err)
		}
	}
	if got := db.readerStmts.len(); got != before+1 {
		t.Fatalf("reader cache grew by %d for one query text, want 1", got-before)
	}

	// A query over many values is run as text, never cached.
	args := make([]any, maxCachedArgs+1)
	for i := range args {
		args[i] = fmt.Sprint("@u", i, ":x")
	}
	long := `SELECT COUNT(*) FROM devices WHERE user_id IN (` + placeholders(1, len(args)) + `)`
	var n int
	if err := db.QueryRow(ctx, long, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if _, ok := db.readerStmts.stmts[long]; ok {
		t.Fatal("a query with more than maxCachedArgs arguments was cached")
	}

	// However many distinct texts run, the cache stops at its bound and the
	// queries beyond it still work.
	for i := 0; i < maxCachedStmts+10; i++ {
		q := fmt.Sprintf(`SELECT COUNT(*) + %d FROM devices WHERE user_id = $1`, i)
		if err := db.QueryRow(ctx, q, "@a:x").Scan(&n); err != nil || n != i {
			t.Fatalf("query %d = %d, %v", i, n, err)
		}
	}
	if got := db.readerStmts.len(); got != maxCachedStmts {
		t.Fatalf("cache holds %d statements, want the bound %d", got, maxCachedStmts)
	}
}

// Inside a transaction, statements come from the writer's cache bound to the
// transaction; a miss runs as text and is prepared once the transaction ends
// (preparing on the one writer connection inside it would deadlock).
func TestStmtCacheInTransactions(t *testing.T) {
	ctx := context.Background()
	db := openSQLite(t)
	const ins = `INSERT INTO filters (user_id, filter_id, filter) VALUES ($1, $2, $3)`
	for i := 0; i < 3; i++ {
		err := db.Tx(ctx, func(tx Querier) error {
			_, err := tx.Exec(ctx, ins, "@a:x", i, "{}")
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := db.writerStmts.stmts[ins]; !ok {
			t.Fatalf("after transaction %d the statement is not cached", i)
		}
	}
	// A failed transaction rolls back its cached-statement writes too.
	boom := fmt.Errorf("boom")
	err := db.Tx(ctx, func(tx Querier) error {
		if _, err := tx.Exec(ctx, ins, "@a:x", 99, "{}"); err != nil {
			return err
		}
		return boom
	})
	if err != boom {
		t.Fatalf("Tx = %v", err)
	}
	var n int
	if err := db.QueryRow(ctx, `SELECT COUNT(*) FROM filters WHERE user_id = $1`, "@a:x").Scan(&n); err != nil || n != 3 {
		t.Fatalf("filters = %d, %v; want 3", n, err)
	}
	// A unique violation through a cached statement is still reported as one.
	err = db.Tx(ctx, func(tx Querier) error {
		_, err := tx.Exec(ctx, ins, "@a:x", 0, "{}")
		return err
	})
	if !IsUniqueViolation(err) {
		t.Fatalf("duplicate insert: %v", err)
	}
}

func TestStmtCacheConcurrentReaders(t *testing.T) {
	ctx := context.Background()
	db := openSQLite(t)
	if _, err := db.Exec(ctx, `INSERT INTO filters (user_id, filter_id, filter) VALUES ($1, 0, '{}')`, "@a:x"); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				f, err := db.GetFilter(ctx, "@a:x", 0)
				if err != nil || string(f) != "{}" {
					errs <- fmt.Errorf("GetFilter = %q, %v", f, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// BenchmarkIndexedSelect is a primary-key lookup through db.QueryRow, with
// the statement cache (prepared) and without it (text: prepared and
// finalized by the driver on every call, as before the cache).
func BenchmarkIndexedSelect(b *testing.B) {
	ctx := context.Background()
	db := openSQLite(b)
	for i := 0; i < 1000; i++ {
		if _, err := db.Exec(ctx, `INSERT INTO devices (user_id, device_id, display_name, created_ts, last_seen_ts, last_seen_ip)
			VALUES ($1, $2, $3, 0, 0, '')`, fmt.Sprintf("@u%d:x", i%100), fmt.Sprintf("D%d", i), "phone"); err != nil {
			b.Fatal(err)
		}
	}
	run := func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				d, err := db.GetDevice(ctx, fmt.Sprintf("@u%d:x", i%100), fmt.Sprintf("D%d", i%1000))
				if err != nil || d.DisplayName != "phone" {
					b.Fatalf("GetDevice = %+v, %v", d, err)
				}
				i += 101
			}
		})
	}
	b.Run("prepared", run)
	cache := db.readerStmts
	db.readerStmts = nil
	b.Run("text", run)
	db.readerStmts = cache
}
