package storage

import (
	"context"
	"fmt"
	"sync"
)

// streamTables lists every table whose rows carry a position in the one stream
// (column stream_pos). At start-up the stream resumes after the largest of them.
// Each area's file registers its tables in init().
var streamTables []string

func registerStreamTable(table string) { streamTables = append(streamTables, table) }

// Stream hands out positions in the single, monotonically increasing stream
// that /sync reads. Writers take a position before their transaction and
// report it finished after commit (or abort). Current() only advances over
// positions whose writers have all finished, so a reader that has seen
// position P never later finds a new row at or below P — even when concurrent
// transactions commit out of order.
type Stream struct {
	mu        sync.Mutex
	last      int64          // last allocated
	current   int64          // all positions <= current are finished
	inFlight  map[int64]bool // allocated, not yet finished
	done      map[int64]bool // finished, but above an unfinished position
	onAdvance []func(pos int64)
}

func newStream(ctx context.Context, db *DB) (*Stream, error) {
	var max int64
	for _, t := range streamTables {
		var m int64
		if err := db.QueryRow(ctx, `SELECT COALESCE(MAX(stream_pos), 0) FROM `+t).Scan(&m); err != nil {
			return nil, fmt.Errorf("reading stream position of %s: %w", t, err)
		}
		max = maxInt64(max, m)
	}
	return &Stream{last: max, current: max, inFlight: map[int64]bool{}, done: map[int64]bool{}}, nil
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
// once, after its transaction committed or failed.
func (s *Stream) Allocate() (pos int64, finish func()) {
	s.mu.Lock()
	s.last++
	pos = s.last
	s.inFlight[pos] = true
	s.mu.Unlock()
	var once sync.Once
	return pos, func() { once.Do(func() { s.finish(pos) }) }
}

// AllocateN reserves n consecutive positions with one finish.
func (s *Stream) AllocateN(n int) (first int64, finish func()) {
	if n <= 0 {
		return 0, func() {}
	}
	s.mu.Lock()
	first = s.last + 1
	s.last += int64(n)
	for p := first; p <= s.last; p++ {
		s.inFlight[p] = true
	}
	last := s.last
	s.mu.Unlock()
	var once sync.Once
	return first, func() {
		once.Do(func() {
			for p := first; p <= last; p++ {
				s.finish(p)
			}
		})
	}
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
