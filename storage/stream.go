package storage

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// streamTables lists every table whose rows carry a position in the one stream
// (column stream_pos). At start-up the stream resumes after the largest of them
// (or after the persisted reservation, whichever is higher). Each area's file
// registers its tables in init().
var streamTables []string

func registerStreamTable(table string) { streamTables = append(streamTables, table) }

// streamBlock is how many positions one write of the high-water mark reserves.
// A restart skips what was reserved but not used (at most this many positions):
// gaps are harmless, reuse is not.
const streamBlock = 1000

// Stream hands out positions in the single, monotonically increasing stream
// that /sync reads. Writers take a position before their transaction and
// report it finished after commit (or abort). Current() only advances over
// positions whose writers have all finished, so a reader that has seen
// position P never later finds a new row at or below P — even when concurrent
// transactions commit out of order.
//
// Positions are handed out only below a high-water mark persisted in the store
// (stream_reserved), extended a block at a time ahead of need. A client may
// hold a sync token naming a position whose rows are gone (acknowledged
// to-device messages are deleted; a failed commit leaves nothing), so the
// largest surviving stream_pos is not a safe place to resume from: new rows
// would land at positions the client has already passed and never be sent.
type Stream struct {
	mu        sync.Mutex
	last      int64          // last allocated
	current   int64          // all positions <= current are finished
	reserved  int64          // persisted high-water mark: last <= reserved
	extending bool           // a background extension is running
	inFlight  map[int64]bool // allocated, not yet finished
	done      map[int64]bool // finished, but above an unfinished position
	onAdvance []func(pos int64)

	reserveMu sync.Mutex // serializes writes of the high-water mark
	persist   func(ctx context.Context, upTo int64) error
}

func newStream(ctx context.Context, db *DB) (*Stream, error) {
	var max int64
	for _, t := range append([]string{"stream_reserved"}, streamTables...) {
		col := "stream_pos"
		if t == "stream_reserved" {
			col = "reserved"
		}
		var m int64
		if err := db.QueryRow(ctx, `SELECT COALESCE(MAX(`+col+`), 0) FROM `+t).Scan(&m); err != nil {
			return nil, fmt.Errorf("reading stream position of %s: %w", t, err)
		}
		max = maxInt64(max, m)
	}
	s := &Stream{last: max, current: max, reserved: max, inFlight: map[int64]bool{}, done: map[int64]bool{},
		persist: db.reserveStream}
	if err := s.reserve(max + streamBlock); err != nil {
		return nil, err
	}
	return s, nil
}

// reserveStream raises the persisted high-water mark to upTo (never lowers it).
func (db *DB) reserveStream(ctx context.Context, upTo int64) error {
	_, err := db.Exec(ctx, `INSERT INTO stream_reserved (id, reserved) VALUES (1, $1)
		ON CONFLICT (id) DO UPDATE SET reserved = excluded.reserved WHERE stream_reserved.reserved < excluded.reserved`, upTo)
	return err
}

// Current is the highest position that is safe to read up to.
func (s *Stream) Current() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.current
}

// OnAdvance registers a callback run (outside the lock) whenever Current advances.
func (s *Stream) OnAdvance(fn func(pos int64)) {
	s.mu.Lock()
	s.onAdvance = append(s.onAdvance, fn)
	s.mu.Unlock()
}

// Allocate reserves the next position. The caller must call finish exactly
// once, after its transaction committed or failed. It fails only when the
// high-water mark cannot be persisted (the store is not writable).
func (s *Stream) Allocate() (pos int64, finish func(), err error) {
	return s.AllocateN(1)
}

// AllocateN reserves n consecutive positions with one finish. It must not be
// called while holding a transaction: it may write the high-water mark, and
// SQLite has one writer connection.
func (s *Stream) AllocateN(n int) (first int64, finish func(), err error) {
	if n <= 0 {
		return 0, func() {}, nil
	}
	for {
		s.mu.Lock()
		if s.last+int64(n) <= s.reserved {
			first = s.last + 1
			s.last += int64(n)
			for p := first; p <= s.last; p++ {
				s.inFlight[p] = true
			}
			last := s.last
			// Extend ahead of need, off the caller's path, when half the block is used.
			extend := !s.extending && s.reserved-s.last < streamBlock/2
			if extend {
				s.extending = true
			}
			s.mu.Unlock()
			if extend {
				go s.extendAhead()
			}
			var once sync.Once
			return first, func() {
				once.Do(func() {
					for p := first; p <= last; p++ {
						s.finish(p)
					}
				})
			}, nil
		}
		need := s.last + int64(n)
		s.mu.Unlock()
		if err := s.reserve(need + streamBlock); err != nil {
			return 0, func() {}, err
		}
	}
}

// extendAhead moves the high-water mark a block past the last allocation.
func (s *Stream) extendAhead() {
	s.mu.Lock()
	target := s.last + streamBlock
	s.mu.Unlock()
	if err := s.reserve(target); err != nil {
		// Not fatal: an allocation that runs out of reserved positions retries
		// synchronously and reports the error to its caller.
		slog.Warn("reserving stream positions ahead", "err", err)
	}
	s.mu.Lock()
	s.extending = false
	s.mu.Unlock()
}

// reserve persists a high-water mark of at least target, unless one already is.
func (s *Stream) reserve(target int64) error {
	s.reserveMu.Lock()
	defer s.reserveMu.Unlock()
	s.mu.Lock()
	done := s.reserved >= target
	s.mu.Unlock()
	if done {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.persist(ctx, target); err != nil {
		return fmt.Errorf("reserving stream positions up to %d: %w", target, err)
	}
	s.mu.Lock()
	s.reserved = maxInt64(s.reserved, target)
	s.mu.Unlock()
	return nil
}

func (s *Stream) finish(pos int64) {
	s.mu.Lock()
	delete(s.inFlight, pos)
	s.done[pos] = true
	advanced := false
	for s.done[s.current+1] {
		delete(s.done, s.current+1)
		s.current++
		advanced = true
	}
	cur, callbacks := s.current, s.onAdvance
	s.mu.Unlock()
	if advanced {
		for _, fn := range callbacks {
			fn(cur)
		}
	}
}

func maxInt64(a, b int64) int64 {
	if a > b {
		return a
	}
	return b
}
