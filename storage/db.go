// Package storage is Myelin's one store: embedded SQLite (modernc.org/sqlite, WAL)
// or PostgreSQL (pgxpool), chosen by database.url. Queries use $N placeholders,
// which both backends accept; where the dialects differ, both forms sit side by
// side in the same file. Modules see the store through small interfaces they
// define themselves.
package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// Dialect is the SQL backend in use.
type Dialect int

const (
	SQLite Dialect = iota
	Postgres
)

func (d Dialect) String() string {
	if d == Postgres {
		return "postgres"
	}
	return "sqlite"
}

// ErrNotFound is returned when a single-row lookup finds nothing.
var ErrNotFound = errors.New("not found")

// Querier runs statements, inside or outside a transaction.
type Querier interface {
	Exec(ctx context.Context, query string, args ...any) (int64, error)
	Query(ctx context.Context, query string, args ...any) (Rows, error)
	QueryRow(ctx context.Context, query string, args ...any) Row
}

// Rows is the subset of sql.Rows / pgx.Rows the store uses.
type Rows interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
	Close()
}

// Row is one result row; Scan returns ErrNotFound when there is none.
type Row interface{ Scan(dest ...any) error }

// DB is the store. All module-specific queries are methods on *DB in the file
// for their area (accounts.go, rooms.go, ...).
type DB struct {
	dialect Dialect
	// SQLite: one writer connection (SQLite serializes writers anyway; a single
	// connection avoids busy-waiting) and a pool of readers, WAL mode.
	sqlWriter *sql.DB
	sqlReader *sql.DB
	// Prepared statements of the writer and of the readers (stmtcache.go).
	writerStmts, readerStmts *stmtCache
	pg                       *pgxpool.Pool

	// Stream allocates positions in the one stream /sync reads.
	Stream *Stream

	reads atomic.Int64 // read queries run (Reads)

	erased erasedSet // the erased users (erasure.go)
}

// Reads is the number of read queries (Query, QueryRow) run so far: tests
// bound what one request costs with it.
func (db *DB) Reads() int64 { return db.reads.Load() }

// Open connects to the store named by url and runs pending migrations.
// url is "sqlite:PATH" or "postgres://...".
func Open(ctx context.Context, url string, maxConns int) (*DB, error) {
	db := &DB{}
	switch {
	case strings.HasPrefix(url, "sqlite:"):
		if err := db.openSQLite(strings.TrimPrefix(url, "sqlite:"), maxConns); err != nil {
			return nil, err
		}
	case strings.HasPrefix(url, "postgres://"), strings.HasPrefix(url, "postgresql://"):
		if err := db.openPostgres(ctx, url, maxConns); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("unsupported database url %q", url)
	}
	if err := db.migrate(ctx); err != nil {
		db.Close()
		return nil, err
	}
	stream, err := newStream(ctx, db)
	if err != nil {
		db.Close()
		return nil, err
	}
	db.Stream = stream
	if err := db.loadErased(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

func (db *DB) openSQLite(path string, maxConns int) error {
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("creating database directory: %w", err)
		}
	}
	// synchronous(FULL): a commit is on disk before we answer the client, even
	// across power loss (NORMAL in WAL mode only survives process crashes).
	// Group commit in the roomserver amortizes the fsync.
	pragmas := "_pragma=journal_mode(WAL)&_pragma=busy_timeout(10000)&_pragma=foreign_keys(on)&_pragma=synchronous(FULL)"
	w, err := sql.Open("sqlite", "file:"+path+"?"+pragmas+"&_txlock=immediate")
	if err != nil {
		return fmt.Errorf("opening sqlite %s: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	w.SetConnMaxIdleTime(0)
	// The writer connection creates the file and switches it to WAL before readers open.
	if err := w.Ping(); err != nil {
		w.Close()
		return fmt.Errorf("opening sqlite %s: %w", path, err)
	}
	r, err := sql.Open("sqlite", "file:"+path+"?"+pragmas+"&_pragma=query_only(on)")
	if err != nil {
		w.Close()
		return fmt.Errorf("opening sqlite %s: %w", path, err)
	}
	if maxConns <= 0 {
		maxConns = 8
	}
	r.SetMaxOpenConns(maxConns)
	r.SetMaxIdleConns(maxConns)
	db.dialect, db.sqlWriter, db.sqlReader = SQLite, w, r
	db.writerStmts, db.readerStmts = newStmtCache(w), newStmtCache(r)
	return nil
}

func (db *DB) openPostgres(ctx context.Context, url string, maxConns int) error {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return fmt.Errorf("parsing postgres url: %w", err)
	}
	if maxConns > 0 {
		cfg.MaxConns = int32(maxConns)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("connecting to postgres: %w", err)
	}
	pingCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := pool.Ping(pingCtx); err != nil {
		pool.Close()
		return fmt.Errorf("connecting to postgres: %w", err)
	}
	db.dialect, db.pg = Postgres, pool
	return nil
}

// Close releases all connections.
func (db *DB) Close() {
	if db.sqlWriter != nil {
		db.writerStmts.close()
		db.readerStmts.close()
		db.sqlWriter.Close()
		db.sqlReader.Close()
	}
	if db.pg != nil {
		db.pg.Close()
	}
}

// PoolStats reports connection pool figures for /metrics.
func (db *DB) PoolStats() (open, inUse, idle int) {
	if db.pg != nil {
		s := db.pg.Stat()
		return int(s.TotalConns()), int(s.AcquiredConns()), int(s.IdleConns())
	}
	ws, rs := db.sqlWriter.Stats(), db.sqlReader.Stats()
	return ws.OpenConnections + rs.OpenConnections, ws.InUse + rs.InUse, ws.Idle + rs.Idle
}

// writer runs statements on the write connection, outside any transaction.
func (db *DB) writer() Querier {
	if db.pg != nil {
		return pgQuerier{db.pg}
	}
	return sqlQuerier{c: db.sqlWriter, stmts: db.writerStmts}
}

// reader runs read queries (on SQLite, the read-only connection pool).
func (db *DB) reader() Querier {
	if db.pg != nil {
		return pgQuerier{db.pg}
	}
	return sqlQuerier{c: db.sqlReader, stmts: db.readerStmts}
}

// Exec runs a write statement outside any explicit transaction.
func (db *DB) Exec(ctx context.Context, query string, args ...any) (int64, error) {
	return db.writer().Exec(ctx, query, args...)
}

// Query runs a read query.
func (db *DB) Query(ctx context.Context, query string, args ...any) (Rows, error) {
	db.reads.Add(1)
	return db.reader().Query(ctx, query, args...)
}

// QueryRow runs a read query expected to return at most one row.
func (db *DB) QueryRow(ctx context.Context, query string, args ...any) Row {
	db.reads.Add(1)
	return db.reader().QueryRow(ctx, query, args...)
}

// Tx runs fn in a read-write transaction, committing when fn returns nil.
func (db *DB) Tx(ctx context.Context, fn func(tx Querier) error) error {
	if db.pg != nil {
		tx, err := db.pg.Begin(ctx)
		if err != nil {
			return fmt.Errorf("begin: %w", err)
		}
		defer tx.Rollback(context.WithoutCancel(ctx))
		if err := fn(pgQuerier{tx}); err != nil {
			return err
		}
		if err := tx.Commit(ctx); err != nil {
			return fmt.Errorf("commit: %w", err)
		}
		return nil
	}
	tx, err := db.sqlWriter.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	// After the transaction, prepare what it ran unprepared (stmtCache.lookup).
	defer db.writerStmts.preparePending(context.WithoutCancel(ctx))
	defer tx.Rollback()
	if err := fn(sqlQuerier{c: tx, stmts: db.writerStmts, tx: tx}); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// IsUniqueViolation reports whether err is a unique/primary key conflict.
func IsUniqueViolation(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code == "23505"
	}
	var sqErr *sqlite.Error
	if errors.As(err, &sqErr) {
		return sqErr.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE || sqErr.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
	}
	return false
}

// --- database/sql adapter (SQLite) ---

type sqlConn interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// sqlQuerier runs statements on a *sql.DB or, with tx set, in a transaction
// of the *sql.DB whose prepared statements stmts holds.
type sqlQuerier struct {
	c     sqlConn
	stmts *stmtCache // nil: run every query as text
	tx    *sql.Tx
}

// prepared returns the cached prepared statement for query (bound to the
// transaction inside one), or nil to run the query as text.
func (q sqlQuerier) prepared(ctx context.Context, query string, nargs int) *sql.Stmt {
	if q.tx == nil {
		return q.stmts.get(ctx, query, nargs)
	}
	if s := q.stmts.lookup(query, nargs); s != nil {
		return q.tx.StmtContext(ctx, s) // closed with the transaction
	}
	return nil
}

func (q sqlQuerier) Exec(ctx context.Context, query string, args ...any) (int64, error) {
	var res sql.Result
	var err error
	if s := q.prepared(ctx, query, len(args)); s != nil {
		res, err = s.ExecContext(ctx, args...)
	} else {
		res, err = q.c.ExecContext(ctx, query, args...)
	}
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

func (q sqlQuerier) Query(ctx context.Context, query string, args ...any) (Rows, error) {
	var rows *sql.Rows
	var err error
	if s := q.prepared(ctx, query, len(args)); s != nil {
		rows, err = s.QueryContext(ctx, args...)
	} else {
		rows, err = q.c.QueryContext(ctx, query, args...)
	}
	if err != nil {
		return nil, err
	}
	return sqlRows{rows}, nil
}

func (q sqlQuerier) QueryRow(ctx context.Context, query string, args ...any) Row {
	if s := q.prepared(ctx, query, len(args)); s != nil {
		return sqlRow{s.QueryRowContext(ctx, args...)}
	}
	return sqlRow{q.c.QueryRowContext(ctx, query, args...)}
}

type sqlRows struct{ *sql.Rows }

func (r sqlRows) Close() { _ = r.Rows.Close() }

type sqlRow struct{ r *sql.Row }

func (r sqlRow) Scan(dest ...any) error {
	if err := r.r.Scan(dest...); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		return err
	}
	return nil
}

// --- pgx adapter (PostgreSQL) ---

type pgConn interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

type pgQuerier struct{ c pgConn }

func (q pgQuerier) Exec(ctx context.Context, query string, args ...any) (int64, error) {
	tag, err := q.c.Exec(ctx, query, args...)
	if err != nil {
		return 0, err
	}
	return tag.RowsAffected(), nil
}

func (q pgQuerier) Query(ctx context.Context, query string, args ...any) (Rows, error) {
	rows, err := q.c.Query(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	return rows, nil
}

func (q pgQuerier) QueryRow(ctx context.Context, query string, args ...any) Row {
	return pgRow{q.c.QueryRow(ctx, query, args...)}
}

type pgRow struct{ r pgx.Row }

func (r pgRow) Scan(dest ...any) error {
	if err := r.r.Scan(dest...); err != nil {
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrNotFound
		}
		return err
	}
	return nil
}
