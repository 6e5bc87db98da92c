package storage

import (
	"context"
	"database/sql"
	"strings"
	"sync"
)

// The SQLite driver prepares every statement it is handed as text, and
// database/sql does not cache: under /sync load, re-preparing was about a
// quarter of the server's CPU. stmtCache keeps the prepared statements of one
// *sql.DB keyed by query text (database/sql then keeps one prepared copy per
// connection of the pool). pgx caches per connection by itself.
//
// The cache is bounded. Queries are constants, except those over a variable
// number of values ("IN ($1, ..., $n)", multi-row INSERTs): those with more
// than maxCachedArgs arguments are never cached, and once maxCachedStmts
// texts are cached, further ones run unprepared, as without a cache.
const (
	maxCachedStmts = 1024
	maxCachedArgs  = 32
)

type stmtCache struct {
	db *sql.DB

	mu      sync.RWMutex
	stmts   map[string]*sql.Stmt
	pending map[string]bool // missed inside a transaction, to prepare after it
	closed  bool
}

func newStmtCache(db *sql.DB) *stmtCache {
	return &stmtCache{db: db, stmts: map[string]*sql.Stmt{}, pending: map[string]bool{}}
}

// cacheable leaves out what is run rarely or built per call: scripts of
// several statements (migrations) and long variable argument lists.
func cacheable(query string, nargs int) bool {
	return nargs <= maxCachedArgs && !strings.Contains(query, ";")
}

// get returns the prepared statement for query, preparing it on a miss. It
// returns nil when the query is not to be cached, the cache is full or
// preparing failed: the caller then runs the query as text, which reports
// any error in it.
func (c *stmtCache) get(ctx context.Context, query string, nargs int) *sql.Stmt {
	if c == nil || !cacheable(query, nargs) {
		return nil
	}
	c.mu.RLock()
	s, full := c.stmts[query], len(c.stmts) >= maxCachedStmts || c.closed
	c.mu.RUnlock()
	if s != nil || full {
		return s
	}
	return c.prepare(ctx, query)
}

// lookup is get for use inside a transaction: it never prepares, because on
// the writer the transaction holds the one connection that preparing on the
// *sql.DB would wait for. A miss is remembered for preparePending.
func (c *stmtCache) lookup(query string, nargs int) *sql.Stmt {
	if c == nil || !cacheable(query, nargs) {
		return nil
	}
	c.mu.RLock()
	s, known := c.stmts[query], c.pending[query]
	c.mu.RUnlock()
	if s == nil && !known {
		c.mu.Lock()
		if len(c.stmts)+len(c.pending) < maxCachedStmts {
			c.pending[query] = true
		}
		c.mu.Unlock()
	}
	return s
}

// preparePending prepares the statements transactions missed; call it once
// the transaction has ended.
func (c *stmtCache) preparePending(ctx context.Context) {
	if c == nil {
		return
	}
	c.mu.RLock()
	none := len(c.pending) == 0
	c.mu.RUnlock()
	if none {
		return
	}
	c.mu.Lock()
	queries := make([]string, 0, len(c.pending))
	for q := range c.pending {
		queries = append(queries, q)
	}
	clear(c.pending)
	c.mu.Unlock()
	for _, q := range queries {
		c.prepare(ctx, q)
	}
}

func (c *stmtCache) prepare(ctx context.Context, query string) *sql.Stmt {
	s, err := c.db.PrepareContext(ctx, query)
	if err != nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if prev := c.stmts[query]; prev != nil { // prepared concurrently
		s.Close()
		return prev
	}
	if len(c.stmts) >= maxCachedStmts || c.closed {
		s.Close()
		return nil
	}
	c.stmts[query] = s
	return s
}

// len is the number of cached statements.
func (c *stmtCache) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.stmts)
}

func (c *stmtCache) close() {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range c.stmts {
		s.Close()
	}
	clear(c.stmts)
	c.closed = true
}
