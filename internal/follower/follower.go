// Package follower runs the work that follows new room events — copying push
// rules to an upgraded room, the federation sender, queueing push
// notifications; application services later — outside the room writer. A follower tails the
// one stream (storage.Stream) from a cursor it keeps in the store: woken when
// the stream advances, it reads the events after its cursor in pages, hands
// each page to its handler and moves the cursor past the page once the
// handler succeeded (writing it to the store at most about once a second).
//
// Delivery is at least once: a crash after the handler ran and before the
// cursor was written hands the same events over again, so handlers must be
// idempotent. A handler error or panic retries the same
// page with a growing delay; a handler that can never succeed on an event
// holds its follower there, so handlers should only fail for what may pass
// (the store being unavailable) and log-and-skip what never will.
//
// A follower seen for the first time (no saved cursor) starts at the stream's
// current position, not at the beginning of history: adding a follower to an
// existing server does not replay every past event through it — unless it
// asks to (Options.FromStart: a follower that indexes history, such as the
// mxc reference record, backfills that way, page by page).
package follower

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/myelin-chat/myelin/internal/recovery"
	"github.com/myelin-chat/myelin/storage"
)

// Store is what a follower reads and writes (implemented by *storage.DB).
type Store interface {
	StreamCursor(ctx context.Context, name string) (pos int64, found bool, err error)
	SaveStreamCursor(ctx context.Context, name string, pos int64) error
	StreamEvents(ctx context.Context, after, upTo int64, limit int) ([]*storage.Event, error)
}

// Stream is the stream a follower tails (implemented by *storage.Stream).
type Stream interface {
	Current() int64
	OnAdvance(fn func(pos int64))
}

// Handler handles one page of events, ascending by stream position. It must
// be idempotent (see the package comment).
type Handler func(ctx context.Context, events []*storage.Event) error

// Options configure a follower. Name, Store, Stream and Handle are required.
type Options struct {
	Name   string // the cursor's key in the store: stable across releases
	Store  Store
	Stream Stream
	Handle Handler
	// PageSize is how many events one handler call gets at most (default 100).
	PageSize int
	// MinBackoff and MaxBackoff bound the delay before a failed page is
	// retried; it doubles on every consecutive failure (defaults 100ms, 1m).
	MinBackoff, MaxBackoff time.Duration
	// FromStart: the first time (no saved cursor) start at position 0, so
	// that every stored event passes through the handler once (a backfill).
	FromStart bool
}

// The cursor moves in memory with every page, and is written at most every
// saveInterval (and at Close), or sooner once saveEvery positions ahead of
// the saved one: a follower does not add a write to every commit of the room
// writer, and a crash replays at most about a second of events (delivery is
// at least once anyway).
const (
	saveInterval = time.Second
	saveEvery    = 1000
)

// Follower is one running follower.
type Follower struct {
	opts   Options
	wake   chan struct{}
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}

	mu      sync.Mutex
	cursor  int64     // everything up to here is handled
	saved   int64     // the cursor as last written to the store
	savedAt time.Time // when
}

// Start loads the follower's cursor (or, the first time, saves the stream's
// current position as its cursor) and starts following in the background.
// Events committed after Start returns are always handed to the handler.
func Start(ctx context.Context, opts Options) (*Follower, error) {
	if opts.PageSize <= 0 {
		opts.PageSize = 100
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = 100 * time.Millisecond
	}
	if opts.MaxBackoff < opts.MinBackoff {
		opts.MaxBackoff = max(time.Minute, opts.MinBackoff)
	}
	pos, found, err := opts.Store.StreamCursor(ctx, opts.Name)
	if err != nil {
		return nil, fmt.Errorf("follower %s: %w", opts.Name, err)
	}
	if !found {
		pos = opts.Stream.Current()
		if opts.FromStart {
			pos = 0
		}
		if err := opts.Store.SaveStreamCursor(ctx, opts.Name, pos); err != nil {
			return nil, fmt.Errorf("follower %s: %w", opts.Name, err)
		}
	}
	f := &Follower{opts: opts, wake: make(chan struct{}, 1), done: make(chan struct{}), cursor: pos, saved: pos, savedAt: time.Now()}
	f.ctx, f.cancel = context.WithCancel(context.Background())
	// The stream keeps its callbacks for its lifetime: after Close this one
	// only fills a buffer nobody reads.
	opts.Stream.OnAdvance(func(int64) { f.poke() })
	f.poke() // catch up with what was committed while it was stopped
	go f.run()
	return f, nil
}

// Name is the follower's name.
func (f *Follower) Name() string { return f.opts.Name }

// Position is the last stream position the follower has handled.
func (f *Follower) Position() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cursor
}

// Lag is how many stream positions the follower is behind the stream.
func (f *Follower) Lag() int64 { return max(0, f.opts.Stream.Current()-f.Position()) }

// Close stops the follower, waits for a handler call in progress to return
// (its context is cancelled) and saves the cursor. Call it before closing
// the store.
func (f *Follower) Close() {
	f.cancel()
	<-f.done
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := f.save(ctx, true); err != nil {
		slog.Warn("saving a follower's cursor at shutdown", "follower", f.opts.Name, "err", err)
	}
}

func (f *Follower) poke() {
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

func (f *Follower) run() {
	defer close(f.done)
	backoff := time.Duration(0)
	for {
		// Idle with a cursor not yet written: write it after a while.
		var saveLater <-chan time.Time
		if f.unsaved() {
			saveLater = time.After(saveInterval)
		}
		select {
		case <-f.ctx.Done():
			return
		case <-saveLater:
			if err := f.save(f.ctx, true); err != nil && f.ctx.Err() == nil {
				slog.Warn("saving a follower's cursor", "follower", f.opts.Name, "err", err)
			}
			continue
		case <-f.wake:
		}
		if err := f.catchUp(); err != nil {
			if f.ctx.Err() != nil {
				return
			}
			backoff = min(max(2*backoff, f.opts.MinBackoff), f.opts.MaxBackoff)
			slog.Error("follower failed; retrying", "follower", f.opts.Name, "after", f.Position(), "retry_in", backoff, "err", err)
			select {
			case <-f.ctx.Done():
				return
			case <-time.After(backoff):
			}
			f.poke()
			continue
		}
		backoff = 0
	}
}

// catchUp hands over, page by page, every event up to the stream's current
// position.
func (f *Follower) catchUp() error {
	for {
		upTo := f.opts.Stream.Current()
		after := f.Position()
		if after >= upTo {
			return nil
		}
		evs, err := f.opts.Store.StreamEvents(f.ctx, after, upTo, f.opts.PageSize)
		if err != nil {
			return err
		}
		next := upTo // a short page: nothing else up to upTo
		if len(evs) == f.opts.PageSize {
			next = evs[len(evs)-1].StreamPos
		}
		if len(evs) > 0 {
			err := recovery.Call(recovery.Follower, func() error { return f.opts.Handle(f.ctx, evs) },
				"follower", f.opts.Name, "from", evs[0].StreamPos, "to", evs[len(evs)-1].StreamPos)
			if err != nil {
				return fmt.Errorf("handling events %d..%d: %w", evs[0].StreamPos, evs[len(evs)-1].StreamPos, err)
			}
		}
		f.mu.Lock()
		f.cursor = next
		f.mu.Unlock()
		if err := f.save(f.ctx, false); err != nil {
			return err
		}
	}
}

func (f *Follower) unsaved() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cursor != f.saved
}

// save writes the cursor if it moved: always when forced, else only once it
// is saveInterval or saveEvery positions past the last write.
func (f *Follower) save(ctx context.Context, force bool) error {
	f.mu.Lock()
	cursor, saved, savedAt := f.cursor, f.saved, f.savedAt
	f.mu.Unlock()
	if cursor == saved || (!force && cursor-saved < saveEvery && time.Since(savedAt) < saveInterval) {
		return nil
	}
	if err := f.opts.Store.SaveStreamCursor(ctx, f.opts.Name, cursor); err != nil {
		return err
	}
	f.mu.Lock()
	f.saved, f.savedAt = cursor, time.Now()
	f.mu.Unlock()
	return nil
}
