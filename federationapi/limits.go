package federationapi

import (
	"net/http"
	"sync"

	"github.com/myelin-chat/myelin/federation"
	"github.com/myelin-chat/myelin/internal/mxhttp"
)

// MaxHeavyPerOrigin bounds the costly reads (state, auth chains, DAG walks,
// joins, hierarchies) one server may have running at once: they hold room
// snapshots and the store for long, and one hostile server could otherwise
// occupy them all. A well-behaved server asks for a room's state a few times
// at most while joining or catching up. Beyond it: 429 with retry_after_ms.
const MaxHeavyPerOrigin = 4

// originSlots counts the heavy requests running per origin; an origin with
// none running has no entry, so memory is bounded by the requests in flight.
type originSlots struct {
	mu      sync.Mutex
	running map[string]int
	max     int
}

func newOriginSlots(max int) *originSlots {
	return &originSlots{running: map[string]int{}, max: max}
}

func (o *originSlots) acquire(origin string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.running[origin] >= o.max {
		return false
	}
	o.running[origin]++
	return true
}

func (o *originSlots) release(origin string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.running[origin]--; o.running[origin] <= 0 {
		delete(o.running, origin)
	}
}

// bounded runs h within the origin's slots.
func (o *originSlots) bounded(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		origin := federation.Origin(r.Context())
		if !o.acquire(origin) {
			mxhttp.WriteError(w, r, mxhttp.LimitExceeded("Too many concurrent requests from %s", origin).With("retry_after_ms", 1000))
			return
		}
		defer o.release(origin)
		h.ServeHTTP(w, r)
	})
}
