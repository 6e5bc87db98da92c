package federationsender

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"maunium.net/go/mautrix"
	mfed "maunium.net/go/mautrix/federation"

	"github.com/myelin-chat/myelin/federation"
	"github.com/myelin-chat/myelin/internal/pgtest"
	"github.com/myelin-chat/myelin/storage"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// eduStore is the real store, with the events the queued PDUs name made up.
type eduStore struct{ *storage.DB }

func (eduStore) GetEvents(_ context.Context, ids []string) (map[string]*storage.Event, error) {
	out := map[string]*storage.Event{}
	for _, id := range ids {
		out[id] = &storage.Event{EventID: id, JSON: []byte(`{"event_id":"` + id + `"}`)}
	}
	return out, nil
}

type allowPolicy struct{ refuse string }

func (p allowPolicy) AllowServer(_ context.Context, s string, _ federation.Purpose) bool {
	return s != p.refuse
}

// sentTxn is what the fake destination received, as JSON to compare bodies.
type sentTxn struct {
	ID   string
	PDUs []string
	EDUs []string
}

// recClient records transactions; fail makes it answer 500.
type recClient struct {
	mu   sync.Mutex
	txns []sentTxn
	fail bool
}

func (c *recClient) SendTransaction(_ context.Context, req *mfed.ReqSendTransaction) (*mfed.RespSendTransaction, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := sentTxn{ID: req.TxnID}
	for _, p := range req.PDUs {
		t.PDUs = append(t.PDUs, string(p))
	}
	for _, e := range req.EDUs {
		t.EDUs = append(t.EDUs, string(e))
	}
	c.txns = append(c.txns, t)
	if c.fail {
		return nil, mautrix.HTTPError{Response: &http.Response{StatusCode: 500}, Message: "down"}
	}
	return &mfed.RespSendTransaction{}, nil
}

func (c *recClient) sent() []sentTxn {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.txns)
}

func (c *recClient) setFail(f bool) {
	c.mu.Lock()
	c.fail = f
	c.mu.Unlock()
}

// waitFor polls cond until it holds (5 s).
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

type eduEnv struct {
	db     *storage.DB
	queue  *Queue
	client *recClient
	reg    *prometheus.Registry
	now    time.Time
	sender *Sender
}

func newEDUEnv(t *testing.T, backend string, maxQueued int) *eduEnv {
	t.Helper()
	db, err := storage.Open(context.Background(), pgtest.StoreURL(t, backend), 4)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	e := &eduEnv{db: db, client: &recClient{}, reg: prometheus.NewRegistry(), now: time.Unix(1_700_000_000, 0)}
	e.queue, err = NewQueue(QueueOptions{ServerName: "a.test", Store: db, Policy: allowPolicy{refuse: "evil.test"},
		Metrics: e.reg, MaxQueuedPerDestination: maxQueued, Now: func() time.Time { return e.now }})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// start starts a Sender over the env's store and queue (a restart when one ran).
func (e *eduEnv) start(t *testing.T) {
	t.Helper()
	if e.sender != nil {
		e.sender.Close()
	}
	s, err := New(context.Background(), Options{ServerName: "a.test", Store: eduStore{e.db}, Client: e.client,
		Policy: allowPolicy{refuse: "evil.test"}, EDUs: e.queue, MinBackoff: time.Hour, Now: func() time.Time { return e.now }})
	if err != nil {
		t.Fatal(err)
	}
	e.sender = s
	t.Cleanup(s.Close)
}

func (e *eduEnv) queueEDUs(t *testing.T, dests []string, typ string, from, to int, ephemeral bool) {
	t.Helper()
	for i := from; i <= to; i++ {
		if err := e.queue.QueueEDU(context.Background(), dests, typ, json.RawMessage(fmt.Sprintf(`{"n":%d}`, i)), ephemeral); err != nil {
			t.Fatal(err)
		}
	}
}

// eduNumbers lists the "n" of each EDU of a transaction, checking its type.
func eduNumbers(t *testing.T, txn sentTxn, typ string) []int {
	t.Helper()
	var out []int
	for _, raw := range txn.EDUs {
		var e struct {
			Type    string `json:"edu_type"`
			Content struct {
				N int `json:"n"`
			} `json:"content"`
		}
		if err := json.Unmarshal([]byte(raw), &e); err != nil || e.Type != typ {
			t.Fatalf("EDU %s: type %q, %v", raw, e.Type, err)
		}
		out = append(out, e.Content.N)
	}
	return out
}

func seq(from, to int) []int {
	var out []int
	for i := from; i <= to; i++ {
		out = append(out, i)
	}
	return out
}

func remaining(t *testing.T, db *storage.DB, dest string) int {
	t.Helper()
	a, err := db.FederationEDUBatch(context.Background(), dest, false, 1000)
	if err != nil {
		t.Fatal(err)
	}
	b, err := db.FederationEDUBatch(context.Background(), dest, true, 1000)
	if err != nil {
		t.Fatal(err)
	}
	return len(a) + len(b)
}

// TestEDUOnlyTransactions: EDUs alone make transactions, to every
// destination but ours and the refused one, 100 at most each, in order,
// under IDs that never repeat; acknowledged EDUs are deleted. Destinations
// holding only EDUs get a worker at startup.
func TestEDUOnlyTransactions(t *testing.T) {
	for _, backend := range pgtest.Backends {
		t.Run(backend, func(t *testing.T) {
			e := newEDUEnv(t, backend, 0)
			// Queued before the Sender starts (as after a restart): found at startup.
			e.queueEDUs(t, []string{"a.test", "b.test", "evil.test", "b.test"}, "m.test", 1, 150, false)
			e.start(t)
			waitFor(t, "150 EDUs sent", func() bool { return len(e.client.sent()) == 2 })
			got := e.client.sent()
			if !slices.Equal(eduNumbers(t, got[0], "m.test"), seq(1, 100)) || !slices.Equal(eduNumbers(t, got[1], "m.test"), seq(101, 150)) {
				t.Fatalf("EDUs not in order, 100 per transaction: %v / %v", eduNumbers(t, got[0], "m.test"), eduNumbers(t, got[1], "m.test"))
			}
			if len(got[0].PDUs) != 0 {
				t.Fatalf("PDUs in an EDU-only transaction: %v", got[0].PDUs)
			}
			// Queued while running: woken, no polling.
			e.queueEDUs(t, []string{"b.test"}, "m.test", 151, 151, false)
			waitFor(t, "the third transaction", func() bool { return len(e.client.sent()) == 3 })
			ids := map[string]bool{}
			for _, txn := range e.client.sent() {
				if ids[txn.ID] {
					t.Fatalf("transaction ID %s used twice", txn.ID)
				}
				ids[txn.ID] = true
			}
			waitFor(t, "the queue emptied", func() bool { return remaining(t, e.db, "b.test") == 0 })
			for _, d := range []string{"a.test", "evil.test"} {
				if n := remaining(t, e.db, d); n != 0 {
					t.Fatalf("%d EDUs queued for %s", n, d)
				}
			}
		})
	}
}

// TestMixedTransactions: PDUs (≤ 50) and EDUs (≤ 100) travel together, and
// a transaction ID is never reused whether it carries PDUs, EDUs or both.
func TestMixedTransactions(t *testing.T) {
	for _, backend := range pgtest.Backends {
		t.Run(backend, func(t *testing.T) {
			e := newEDUEnv(t, backend, 0)
			ctx := context.Background()
			var items []storage.FederationQueueItem
			for p := int64(1); p <= 60; p++ {
				items = append(items, storage.FederationQueueItem{Destination: "b.test", StreamPos: p, RoomID: "!r:a.test",
					EventID: fmt.Sprintf("$e%d", p), QueuedTS: 1})
			}
			if err := e.db.EnqueueFederation(ctx, items); err != nil {
				t.Fatal(err)
			}
			e.queueEDUs(t, []string{"b.test"}, "m.test", 1, 120, false)
			e.start(t)
			waitFor(t, "two transactions", func() bool { return len(e.client.sent()) == 2 })
			got := e.client.sent()
			if len(got[0].PDUs) != 50 || len(got[0].EDUs) != 100 || len(got[1].PDUs) != 10 || len(got[1].EDUs) != 20 {
				t.Fatalf("transactions carry %d+%d and %d+%d", len(got[0].PDUs), len(got[0].EDUs), len(got[1].PDUs), len(got[1].EDUs))
			}
			if got[0].ID == got[1].ID {
				t.Fatalf("one transaction ID twice: %s", got[0].ID)
			}
			// A PDU-only one after them still gets a new ID.
			if err := e.db.EnqueueFederation(ctx, []storage.FederationQueueItem{{Destination: "b.test", StreamPos: 61,
				RoomID: "!r:a.test", EventID: "$e61", QueuedTS: 1}}); err != nil {
				t.Fatal(err)
			}
			e.sender.wake("b.test")
			waitFor(t, "the third transaction", func() bool { return len(e.client.sent()) == 3 })
			e.queueEDUs(t, []string{"b.test"}, "m.test", 121, 121, false)
			waitFor(t, "the fourth transaction", func() bool { return len(e.client.sent()) == 4 })
			seen := map[string]bool{}
			for _, txn := range e.client.sent() {
				if seen[txn.ID] {
					t.Fatalf("transaction ID %s used twice: %+v", txn.ID, e.client.sent())
				}
				seen[txn.ID] = true
			}
		})
	}
}

// TestEDURetryAcrossRestart: a failed transaction is retried, after a
// restart, with exactly the same PDUs and EDUs under the same ID, though
// more were queued meanwhile; those follow in the next transaction.
func TestEDURetryAcrossRestart(t *testing.T) {
	for _, backend := range pgtest.Backends {
		t.Run(backend, func(t *testing.T) {
			e := newEDUEnv(t, backend, 0)
			ctx := context.Background()
			if err := e.db.EnqueueFederation(ctx, []storage.FederationQueueItem{{Destination: "b.test", StreamPos: 7,
				RoomID: "!r:a.test", EventID: "$e7", QueuedTS: 1}}); err != nil {
				t.Fatal(err)
			}
			e.queueEDUs(t, []string{"b.test"}, "m.test", 1, 3, false)
			e.client.setFail(true)
			e.start(t)
			waitFor(t, "the first attempt", func() bool { return len(e.client.sent()) == 1 })
			first := e.client.sent()[0]
			waitFor(t, "the failure recorded", func() bool {
				st, err := e.db.FederationDestinationState(ctx, "b.test")
				return err == nil && st.Failures == 1
			})
			e.sender.Close()
			// Queued while the Sender is down: not part of the retry.
			e.queueEDUs(t, []string{"b.test"}, "m.test", 4, 5, false)
			if err := e.db.EnqueueFederation(ctx, []storage.FederationQueueItem{{Destination: "b.test", StreamPos: 9,
				RoomID: "!r:a.test", EventID: "$e9", QueuedTS: 1}}); err != nil {
				t.Fatal(err)
			}
			e.client.setFail(false)
			e.now = e.now.Add(2 * time.Hour) // past the backoff
			e.start(t)
			waitFor(t, "the retry and the next", func() bool { return len(e.client.sent()) == 3 })
			got := e.client.sent()
			retry, next := got[1], got[2]
			if retry.ID != first.ID || !slices.Equal(retry.PDUs, first.PDUs) || !slices.Equal(retry.EDUs, first.EDUs) {
				t.Fatalf("retry differs:\nfirst %+v\nretry %+v", first, retry)
			}
			if !slices.Equal(eduNumbers(t, first, "m.test"), []int{1, 2, 3}) || len(first.PDUs) != 1 {
				t.Fatalf("first transaction: %+v", first)
			}
			if next.ID == first.ID || !slices.Equal(eduNumbers(t, next, "m.test"), []int{4, 5}) || len(next.PDUs) != 1 ||
				!strings.Contains(next.PDUs[0], "$e9") {
				t.Fatalf("next transaction: %+v", next)
			}
			waitFor(t, "the queue emptied", func() bool { return remaining(t, e.db, "b.test") == 0 })
		})
	}
}

// TestEphemeralDroppedWhileFailing: while a destination fails, ephemeral
// EDUs for it are dropped (those queued and those that come; counted), the
// others kept, and none makes it retry before its backoff ends; the
// transaction in flight keeps its ephemeral EDUs.
func TestEphemeralDroppedWhileFailing(t *testing.T) {
	e := newEDUEnv(t, "sqlite", 0)
	e.client.setFail(true)
	e.queueEDUs(t, []string{"b.test"}, "m.typing", 1, 1, true)
	e.start(t)
	waitFor(t, "the first attempt", func() bool { return len(e.client.sent()) == 1 })
	waitFor(t, "the destination failing", func() bool { return e.queue.isFailing("b.test") })
	e.queueEDUs(t, []string{"b.test"}, "m.typing", 2, 20, true)
	e.queueEDUs(t, []string{"b.test"}, "m.direct_to_device", 21, 22, false)
	time.Sleep(100 * time.Millisecond)
	if n := len(e.client.sent()); n != 1 {
		t.Fatalf("a backed-off destination was retried early: %d attempts", n)
	}
	if n := testutil.ToFloat64(e.queue.dropped.WithLabelValues("failing")); n != 19 {
		t.Fatalf("dropped(failing) = %v, want 19", n)
	}
	inTxn, _ := e.db.FederationEDUBatch(context.Background(), "b.test", true, 100)
	rest, _ := e.db.FederationEDUBatch(context.Background(), "b.test", false, 100)
	if len(inTxn) != 1 || inTxn[0].Type != "m.typing" || len(rest) != 2 || rest[0].Type != "m.direct_to_device" {
		t.Fatalf("queue while failing: in flight %v, rest %v", inTxn, rest)
	}
}

// TestEDUQueueCap: a destination's queue holds MaxQueuedPerDestination
// EDUs; more are dropped and counted, other destinations unaffected.
func TestEDUQueueCap(t *testing.T) {
	e := newEDUEnv(t, "sqlite", 5)
	e.queueEDUs(t, []string{"b.test", "c.test"}, "m.test", 1, 5, false)
	e.queueEDUs(t, []string{"b.test"}, "m.test", 6, 8, false)
	if b, c := remaining(t, e.db, "b.test"), remaining(t, e.db, "c.test"); b != 5 || c != 5 {
		t.Fatalf("queued %d and %d, want 5 and 5", b, c)
	}
	if n := testutil.ToFloat64(e.queue.dropped.WithLabelValues("cap")); n != 3 {
		t.Fatalf("dropped(cap) = %v, want 3", n)
	}
	// Bad input is refused, nothing queued.
	for _, c := range []struct {
		typ     string
		content string
	}{{"", `{}`}, {"m.test", `{`}, {"m.test", `{"x":"` + strings.Repeat("a", MaxEDUBytes) + `"}`}} {
		if err := e.queue.QueueEDU(context.Background(), []string{"d.test"}, c.typ, json.RawMessage(c.content), false); err == nil {
			t.Fatalf("QueueEDU(%q, %.20s) accepted", c.typ, c.content)
		}
	}
	if n := remaining(t, e.db, "d.test"); n != 0 {
		t.Fatalf("bad EDUs queued: %d", n)
	}
}
