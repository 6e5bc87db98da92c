package federationapi

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/myelin-chat/myelin/federation"
)

// TestHeavyReadsBoundedPerOrigin: an origin with MaxHeavyPerOrigin costly
// requests running gets 429 M_LIMIT_EXCEEDED for the next one; another
// origin is not affected; a finished request frees its slot, and an origin
// with nothing running keeps no entry.
func TestHeavyReadsBoundedPerOrigin(t *testing.T) {
	slots := newOriginSlots(MaxHeavyPerOrigin)
	release := make(chan struct{})
	var started sync.WaitGroup
	h := slots.bounded(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("block") != "" {
			started.Done()
			<-release
		}
		w.WriteHeader(http.StatusOK)
	}))
	call := func(origin, query string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodGet, "/v1/state/!r:x?"+query, nil)
		req = req.WithContext(federation.WithOrigin(req.Context(), origin))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	var done sync.WaitGroup
	for range MaxHeavyPerOrigin {
		started.Add(1)
		done.Add(1)
		go func() {
			defer done.Done()
			if rec := call("hostile.example", "block=1"); rec.Code != http.StatusOK {
				t.Errorf("blocked request: %d", rec.Code)
			}
		}()
	}
	started.Wait()
	rec := call("hostile.example", "")
	if rec.Code != http.StatusTooManyRequests || !strings.Contains(rec.Body.String(), "M_LIMIT_EXCEEDED") || !strings.Contains(rec.Body.String(), "retry_after_ms") {
		t.Fatalf("over the bound: %d %s", rec.Code, rec.Body)
	}
	if rec := call("other.example", ""); rec.Code != http.StatusOK {
		t.Fatalf("another origin: %d", rec.Code)
	}
	close(release)
	done.Wait()
	if rec := call("hostile.example", ""); rec.Code != http.StatusOK {
		t.Fatalf("after the others finished: %d", rec.Code)
	}
	slots.mu.Lock()
	n := len(slots.running)
	slots.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d origins still counted with nothing running", n)
	}
}
