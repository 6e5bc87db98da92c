// Package notifier wakes /sync long-polls. Writers say which users a new
// stream position concerns; a waiter is woken once the stream's safe position
// (storage.Stream.Current) has reached a position that concerns it, so a
// woken /sync always finds what woke it.
package notifier

import (
	"context"
	"sync"
)

// Notifier tracks, per user, the latest position that concerns them.
type Notifier struct {
	mu      sync.Mutex
	current int64              // the stream's safe position
	pending map[int64][]string // positions above current, with the users they concern
	latest  map[string]int64   // per user: latest delivered position that concerns them
	waiters map[string]map[*waiter]struct{}
	wakeSeq uint64            // counts Wake calls
	woken   map[string]uint64 // per user: wakeSeq of the latest Wake that concerned them

	closeOnce sync.Once
	closed    chan struct{} // closed on shutdown: every wait returns at once
}

type waiter struct {
	after int64
	ch    chan struct{}
}

// New returns a notifier whose stream is at current.
func New(current int64) *Notifier {
	return &Notifier{
		current: current,
		pending: map[int64][]string{},
		latest:  map[string]int64{},
		waiters: map[string]map[*waiter]struct{}{},
		woken:   map[string]uint64{},
		closed:  make(chan struct{}),
	}
}

// Current is the stream's safe position as last reported by Advanced.
func (n *Notifier) Current() int64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.current
}

// Notify records that stream position pos concerns users. Call it after the
// write committed; delivery waits until the stream is safe up to pos.
func (n *Notifier) Notify(pos int64, users ...string) {
	if len(users) == 0 {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if pos <= n.current {
		n.deliver(pos, users)
		return
	}
	n.pending[pos] = append(n.pending[pos], users...)
}

// Advanced is called when the stream's safe position moves (storage.Stream.OnAdvance).
func (n *Notifier) Advanced(current int64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if current <= n.current {
		return
	}
	n.current = current
	for pos, users := range n.pending {
		if pos <= current {
			n.deliver(pos, users)
			delete(n.pending, pos)
		}
	}
}

func (n *Notifier) deliver(pos int64, users []string) {
	for _, u := range users {
		if pos > n.latest[u] {
			n.latest[u] = pos
		}
		for w := range n.waiters[u] {
			if pos > w.after {
				select {
				case w.ch <- struct{}{}:
				default:
				}
			}
		}
	}
}

// Wake wakes the users' waiters regardless of position, for in-memory events
// without a stream position (typing). It is remembered: a WaitMarked whose
// mark predates it returns at once, so a change that lands between a reader's
// read and its wait is not lost.
func (n *Notifier) Wake(users ...string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.wakeSeq++
	for _, u := range users {
		n.woken[u] = n.wakeSeq
		for w := range n.waiters[u] {
			select {
			case w.ch <- struct{}{}:
			default:
			}
		}
	}
}

// WakeMark is the current Wake sequence number. Take it before reading the
// in-memory state that Wake announces, and pass it to WaitMarked.
func (n *Notifier) WakeMark() uint64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.wakeSeq
}

// Wait blocks until something after position `after` concerns user, or Wake
// is called for user, or ctx ends. It returns at once if such a position was
// already delivered. It returns false when ctx ended first.
func (n *Notifier) Wait(ctx context.Context, user string, after int64) bool {
	return n.wait(ctx, user, after, 0, false)
}

// WaitMarked is Wait that also returns at once if Wake was called for user
// after mark (a WakeMark taken before the caller read its state).
func (n *Notifier) WaitMarked(ctx context.Context, user string, after int64, mark uint64) bool {
	return n.wait(ctx, user, after, mark, true)
}

func (n *Notifier) wait(ctx context.Context, user string, after int64, mark uint64, marked bool) bool {
	select {
	case <-n.closed:
		return false
	default:
	}
	n.mu.Lock()
	if n.latest[user] > after || (marked && n.woken[user] > mark) {
		n.mu.Unlock()
		return true
	}
	w := &waiter{after: after, ch: make(chan struct{}, 1)}
	set := n.waiters[user]
	if set == nil {
		set = map[*waiter]struct{}{}
		n.waiters[user] = set
	}
	set[w] = struct{}{}
	n.mu.Unlock()
	defer func() {
		n.mu.Lock()
		delete(set, w)
		if len(set) == 0 {
			delete(n.waiters, user)
		}
		n.mu.Unlock()
	}()
	select {
	case <-w.ch:
		return true
	case <-ctx.Done():
		return false
	case <-n.closed:
		return false
	}
}

// Close ends every current and future wait, as if its context had ended: on
// shutdown, long-polls answer at once instead of holding the server open.
func (n *Notifier) Close() {
	n.closeOnce.Do(func() { close(n.closed) })
}
