package push

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/myelin-chat/myelin/storage"
)

// memQueue is an in-memory DeliveryStore.
type memQueue struct {
	mu       sync.Mutex
	items    []storage.PushQueueItem
	done     map[int64]string
	attempts map[int64]int64
	next     int64
}

func newMemQueue() *memQueue {
	return &memQueue{done: map[int64]string{}, attempts: map[int64]int64{}}
}

func (m *memQueue) EnqueuePushes(_ context.Context, items []storage.PushQueueItem) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, it := range items {
		m.next++
		it.ID = m.next
		m.items = append(m.items, it)
	}
	return nil
}

func (m *memQueue) PendingPushGateways(context.Context) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	seen := map[string]bool{}
	var out []string
	for _, it := range m.items {
		if _, done := m.done[it.ID]; !done && !seen[it.URL] {
			seen[it.URL] = true
			out = append(out, it.URL)
		}
	}
	return out, nil
}

func (m *memQueue) PendingPushes(_ context.Context, url string, limit int) ([]storage.PushQueueItem, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []storage.PushQueueItem
	for _, it := range m.items {
		if _, done := m.done[it.ID]; !done && it.URL == url && len(out) < limit {
			out = append(out, it)
		}
	}
	return out, nil
}

func (m *memQueue) FinishPushes(_ context.Context, ids []int64, result string, _ int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, id := range ids {
		m.done[id] = result
	}
	return nil
}

func (m *memQueue) CountPushAttempt(_ context.Context, id int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.attempts[id]++
	return nil
}

func (m *memQueue) PrunePushQueue(context.Context, int64) error { return nil }

func (m *memQueue) PushQueueDepth(context.Context) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return int64(len(m.items) - len(m.done)), nil
}

func (m *memQueue) DeletePushersByKey(context.Context, string, string, int64) error { return nil }

func (m *memQueue) state(id int64) (string, int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.done[id], m.attempts[id]
}

// TestDeliveryRefusesPrivateGateways: without push.allow_private_gateways
// the dialer refuses a gateway on a loopback address (checked on the address
// dialled, so a name resolving there is refused alike): the gateway never
// sees a request and the push stays queued for retry. With the setting, the
// same gateway gets it.
func TestDeliveryRefusesPrivateGateways(t *testing.T) {
	var hits atomic.Int32
	gw := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		hits.Add(1)
		_, _ = w.Write([]byte(`{"rejected":[]}`))
	}))
	defer gw.Close()
	for _, allow := range []bool{false, true} {
		q := newMemQueue()
		d, err := NewDelivery(DeliveryOptions{Store: q, AllowPrivate: allow, MinBackoff: 10 * time.Millisecond,
			MaxBackoff: 20 * time.Millisecond, RequestTimeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		before := hits.Load()
		if err := d.Enqueue(context.Background(), []storage.PushQueueItem{{UserID: "@u:x", AppID: "a", PushKey: "k",
			URL: gw.URL + gatewayPath, Body: `{"notification":{"devices":[]}}`, QueuedTS: time.Now().UnixMilli()}}); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(5 * time.Second)
		for {
			result, attempts := q.state(1)
			if !allow && attempts >= 2 {
				break
			}
			if allow && result != "" {
				if result != resultSent {
					t.Fatalf("allowed: result %q", result)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("allow=%v: result %q after %d attempts", allow, result, attempts)
			}
			time.Sleep(5 * time.Millisecond)
		}
		d.Close()
		if got := hits.Load() - before; (got > 0) != allow {
			t.Fatalf("allow=%v: the gateway saw %d requests", allow, got)
		}
		if result, _ := q.state(1); !allow && result != "" {
			t.Fatalf("refused push finished as %q, want it kept queued", result)
		}
	}
}

// TestDeliveryGivesUp: a 4xx other than 429 ends a push (refused); a push
// failing past MaxRetryAge is given up (expired).
func TestDeliveryGivesUp(t *testing.T) {
	status := atomic.Int32{}
	gw := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(int(status.Load()))
	}))
	defer gw.Close()
	for _, tc := range []struct {
		status int
		age    time.Duration
		want   string
	}{{400, 0, resultRefused}, {404, 0, resultRefused}, {503, 2 * time.Hour, resultExpired}, {429, 2 * time.Hour, resultExpired}} {
		status.Store(int32(tc.status))
		q := newMemQueue()
		d, err := NewDelivery(DeliveryOptions{Store: q, AllowPrivate: true, MinBackoff: 10 * time.Millisecond,
			MaxBackoff: 20 * time.Millisecond, MaxRetryAge: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		_ = d.Enqueue(context.Background(), []storage.PushQueueItem{{URL: gw.URL + gatewayPath, Body: `{}`,
			QueuedTS: time.Now().Add(-tc.age).UnixMilli()}})
		deadline := time.Now().Add(5 * time.Second)
		for {
			if result, _ := q.state(1); result != "" {
				if result != tc.want {
					t.Fatalf("status %d: %q, want %q", tc.status, result, tc.want)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("status %d: never finished", tc.status)
			}
			time.Sleep(5 * time.Millisecond)
		}
		d.Close()
	}
}

func TestBackoff(t *testing.T) {
	for f, want := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 4: 8 * time.Second, 20: time.Hour} {
		if got := backoff(time.Second, time.Hour, f); got != want {
			t.Errorf("backoff(%d) = %s, want %s", f, got, want)
		}
	}
}
