package follower

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/myelin-chat/myelin/storage"
)

// fakeStore is an in-memory stream of events and cursors; it is also the
// Stream (Current is the last appended position).
type fakeStore struct {
	mu        sync.Mutex
	events    []*storage.Event
	current   int64
	cursors   map[string]int64
	saves     int
	onAdvance []func(int64)
}

func newFakeStore() *fakeStore { return &fakeStore{cursors: map[string]int64{}} }

func (s *fakeStore) StreamCursor(_ context.Context, name string) (int64, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	pos, ok := s.cursors[name]
	return pos, ok, nil
}

func (s *fakeStore) SaveStreamCursor(_ context.Context, name string, pos int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cursors[name] = pos
	s.saves++
	return nil
}

func (s *fakeStore) StreamEvents(_ context.Context, after, upTo int64, limit int) ([]*storage.Event, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*storage.Event
	for _, e := range s.events {
		if e.StreamPos > after && e.StreamPos <= upTo && len(out) < limit {
			out = append(out, e)
		}
	}
	return out, nil
}

func (s *fakeStore) Current() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.current
}

func (s *fakeStore) OnAdvance(fn func(int64)) {
	s.mu.Lock()
	s.onAdvance = append(s.onAdvance, fn)
	s.mu.Unlock()
}

// add commits n events (and, with gap, a position without one after each)
// and advances the stream.
func (s *fakeStore) add(n int, gap bool) {
	s.mu.Lock()
	for range n {
		s.current++
		s.events = append(s.events, &storage.Event{StreamPos: s.current, EventID: "$" + string(rune('a'+s.current%26))})
		if gap {
			s.current++
		}
	}
	cur, fns := s.current, slices.Clone(s.onAdvance)
	s.mu.Unlock()
	for _, fn := range fns {
		fn(cur)
	}
}

func (s *fakeStore) cursor(name string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cursors[name]
}

// recorder is a handler that records the positions it was given.
type recorder struct {
	mu    sync.Mutex
	pages [][]int64
	fail  func(call int) error // nil: succeed
	calls int
}

func (r *recorder) handle(_ context.Context, evs []*storage.Event) error {
	r.mu.Lock()
	r.calls++
	call := r.calls
	fail := r.fail
	r.mu.Unlock()
	if fail != nil {
		if err := fail(call); err != nil {
			return err
		}
	}
	var page []int64
	for _, e := range evs {
		page = append(page, e.StreamPos)
	}
	r.mu.Lock()
	r.pages = append(r.pages, page)
	r.mu.Unlock()
	return nil
}

func (r *recorder) positions() []int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []int64
	for _, p := range r.pages {
		out = append(out, p...)
	}
	return out
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func start(t *testing.T, st *fakeStore, r *recorder, page int) *Follower {
	t.Helper()
	f, err := Start(context.Background(), Options{Name: "test", Store: st, Stream: st, Handle: r.handle,
		PageSize: page, MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	return f
}

func seq(from, to int64, step int64) []int64 {
	var out []int64
	for p := from; p <= to; p += step {
		out = append(out, p)
	}
	return out
}

// A new follower starts at the stream's current position; what follows is
// handed over in pages of at most PageSize, in order, each once.
func TestFollowerStartsAtCurrentAndPages(t *testing.T) {
	st := newFakeStore()
	st.add(5, false) // history: never handed to a new follower
	r := &recorder{}
	f := start(t, st, r, 3)
	if got := st.cursor("test"); got != 5 {
		t.Fatalf("a new follower's saved cursor = %d, want the current position 5", got)
	}
	st.add(7, true) // events at 6, 8, …, 18; positions without events between them
	waitFor(t, "the follower to reach the stream", func() bool { return f.Position() == st.Current() })
	if got, want := r.positions(), seq(6, 18, 2); !slices.Equal(got, want) {
		t.Fatalf("handled %v, want %v", got, want)
	}
	for _, p := range r.pages {
		if len(p) > 3 {
			t.Fatalf("a page of %d events, page size 3: %v", len(p), r.pages)
		}
	}
	// Idle, the follower writes its cursor soon (not on every page).
	waitFor(t, "the cursor to be saved", func() bool { return st.cursor("test") == st.Current() })
	if f.Lag() != 0 {
		t.Fatalf("lag %d when caught up", f.Lag())
	}
}

// A follower restarted on the same store resumes after its saved cursor:
// what was committed while it was stopped is handed over, nothing twice.
func TestFollowerResumesFromItsCursor(t *testing.T) {
	st := newFakeStore()
	r1 := &recorder{}
	f1, err := Start(context.Background(), Options{Name: "test", Store: st, Stream: st, Handle: r1.handle})
	if err != nil {
		t.Fatal(err)
	}
	st.add(4, false)
	waitFor(t, "the first run to handle 1..4", func() bool { return f1.Position() == 4 })
	f1.Close()
	st.add(3, false) // committed while stopped
	r2 := &recorder{}
	f2 := start(t, st, r2, 100)
	waitFor(t, "the second run to catch up", func() bool { return f2.Position() == 7 })
	if got := r1.positions(); !slices.Equal(got, seq(1, 4, 1)) {
		t.Fatalf("first run handled %v", got)
	}
	if got := r2.positions(); !slices.Equal(got, seq(5, 7, 1)) {
		t.Fatalf("second run handled %v, want 5..7", got)
	}
}

// A handler error retries the same page (after a delay) until it passes; the
// cursor does not move past a page that failed.
func TestFollowerRetriesAfterHandlerError(t *testing.T) {
	st := newFakeStore()
	r := &recorder{fail: func(call int) error {
		if call <= 3 {
			return errors.New("store unavailable")
		}
		return nil
	}}
	f := start(t, st, r, 100)
	st.add(2, false)
	waitFor(t, "the retried page to pass", func() bool { return f.Position() == 2 })
	if got := r.positions(); !slices.Equal(got, []int64{1, 2}) {
		t.Fatalf("handled %v, want [1 2] once", got)
	}
	if r.calls != 4 {
		t.Fatalf("%d handler calls, want 3 failures and a success", r.calls)
	}
}

// A panic in the handler is an error like any other: the follower keeps
// running and retries.
func TestFollowerSurvivesHandlerPanic(t *testing.T) {
	st := newFakeStore()
	r := &recorder{fail: func(call int) error {
		if call == 1 {
			panic("bad event")
		}
		return nil
	}}
	f := start(t, st, r, 100)
	st.add(1, false)
	waitFor(t, "the page to pass after the panic", func() bool { return f.Position() == 1 })
	if got := r.positions(); !slices.Equal(got, []int64{1}) {
		t.Fatalf("handled %v", got)
	}
}

// A follower stuck retrying stops promptly on Close and saves nothing past
// the failing page.
func TestFollowerCloseWhileFailing(t *testing.T) {
	st := newFakeStore()
	r := &recorder{fail: func(int) error { return errors.New("down") }}
	f, err := Start(context.Background(), Options{Name: "test", Store: st, Stream: st, Handle: r.handle,
		MinBackoff: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	st.add(1, false)
	waitFor(t, "a failed call", func() bool { r.mu.Lock(); defer r.mu.Unlock(); return r.calls > 0 })
	done := make(chan struct{})
	go func() { f.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return while the follower was backing off")
	}
	if got := st.cursor("test"); got != 0 {
		t.Fatalf("cursor saved at %d past a page that never passed", got)
	}
}

// A follower with FromStart, seen for the first time, hands over the whole
// history in pages (a backfill), then what follows; restarted, it resumes
// from its cursor and does not replay history again.
func TestFollowerFromStartBackfills(t *testing.T) {
	st := newFakeStore()
	st.add(7, false) // history
	r := &recorder{}
	opts := Options{Name: "test", Store: st, Stream: st, Handle: r.handle, PageSize: 3, FromStart: true}
	f, err := Start(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the backfill", func() bool { return f.Position() == 7 })
	st.add(2, false)
	waitFor(t, "the new events", func() bool { return f.Position() == 9 })
	f.Close()
	if got := r.positions(); !slices.Equal(got, seq(1, 9, 1)) {
		t.Fatalf("handled %v, want 1..9", got)
	}
	for _, p := range r.pages {
		if len(p) > 3 {
			t.Fatalf("a page of %d events, page size 3", len(p))
		}
	}
	r2 := &recorder{}
	opts.Handle = r2.handle
	f2, err := Start(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f2.Close)
	st.add(1, false)
	waitFor(t, "the restarted follower", func() bool { return f2.Position() == 10 })
	if got := r2.positions(); !slices.Equal(got, []int64{10}) {
		t.Fatalf("restarted follower handled %v, want only 10", got)
	}
}
