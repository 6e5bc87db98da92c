// Package notifier wakes /sync long-polls when the stream advances. Waiters
// register for a user; writers say which users an advance concerns, so a
// message in one room wakes only that room's members.
package notifier

import (
	"context"
	"sync"
)

// Notifier tracks the current stream position and who waits for what.
type Notifier struct {
	mu      sync.Mutex
	pos     int64
	waiters map[string]map[*waiter]struct{} // by user ID
}

type waiter struct {
	after int64
	ch    chan int64
}

// New returns a notifier starting at pos.
func New(pos int64) *Notifier {
	return &Notifier{pos: pos, waiters: map[string]map[*waiter]struct{}{}}
}

// Position is the latest advertised stream position.
func (n *Notifier) Position() int64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.pos
}

// Advance records a new stream position and wakes the given users' waiters
// whose position is behind it. Passing no users only moves the position.
func (n *Notifier) Advance(pos int64, users ...string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if pos > n.pos {
		n.pos = pos
	}
	for _, u := range users {
		for w := range n.waiters[u] {
			if w.after < n.pos {
				select {
				case w.ch <- n.pos:
				default:
				}
			}
		}
	}
}

// Wake wakes every waiter of the given users regardless of position (for
// in-memory events such as typing, which have no stream position).
func (n *Notifier) Wake(users ...string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, u := range users {
		for w := range n.waiters[u] {
			select {
			case w.ch <- n.pos:
			default:
			}
		}
	}
}

// Wait blocks until user is woken with something after `after`, or ctx ends.
// It returns the stream position at wake-up. Callers re-check their data: a
// wake-up is a hint, not a guarantee that something relevant arrived.
func (n *Notifier) Wait(ctx context.Context, user string, after int64) int64 {
	w := &waiter{after: after, ch: make(chan int64, 1)}
	n.mu.Lock()
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
		if len(set) == 0 && n.waiters[user] != nil && len(n.waiters[user]) == 0 {
			delete(n.waiters, user)
		}
		n.mu.Unlock()
	}()
	select {
	case p := <-w.ch:
		return p
	case <-ctx.Done():
		return n.Position()
	}
}
