package push

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/myelin-chat/myelin/internal/netguard"
	"github.com/myelin-chat/myelin/internal/recovery"
	"github.com/myelin-chat/myelin/storage"
)

// DeliveryStore is the push queue in the store: *storage.DB.
type DeliveryStore interface {
	EnqueuePushes(ctx context.Context, items []storage.PushQueueItem) error
	PendingPushGateways(ctx context.Context) ([]string, error)
	PendingPushes(ctx context.Context, url string, limit int) ([]storage.PushQueueItem, error)
	FinishPushes(ctx context.Context, ids []int64, result string, ts int64) error
	CountPushAttempt(ctx context.Context, id int64) error
	PrunePushQueue(ctx context.Context, before int64) error
	PushQueueDepth(ctx context.Context) (int64, error)
	DeletePushersByKey(ctx context.Context, appID, pushKey string, ts int64) error
}

// Registerer registers metrics (*metrics.Registry).
type Registerer interface {
	Register(prometheus.Collector) error
}

// DeliveryOptions configure push delivery (config push.delivery).
type DeliveryOptions struct {
	Store DeliveryStore
	// AllowPrivate lets gateways be on non-public addresses
	// (push.allow_private_gateways); otherwise the dialer refuses them.
	AllowPrivate bool
	// Workers bounds the gateways sent to at once; PerGateway the requests
	// in flight to one gateway (for different pushers).
	Workers, PerGateway int
	RequestTimeout      time.Duration
	// MinBackoff, MaxBackoff bound a failing gateway's wait (doubling).
	MinBackoff, MaxBackoff time.Duration
	// MaxRetryAge: a push still failing this long after it was queued is given up.
	MaxRetryAge time.Duration
	Metrics     Registerer // nil: no metrics
}

// Results of a push, as stored (push_queue.result) and counted.
const (
	resultSent     = "sent"     // the gateway took it
	resultRejected = "rejected" // the gateway took it and rejected the pushkey: the pusher is gone
	resultRefused  = "refused"  // a 4xx other than 429: retrying cannot help
	resultExpired  = "expired"  // still failing after MaxRetryAge
	resultRetried  = "retried"  // a failed attempt (counted, not stored)
)

// keepDone is how long finished pushes stay in the queue (the dedup of a
// follower's replay after a crash).
const keepDone = 24 * time.Hour

// Delivery sends the push queue to the gateways: a dispatcher starts one
// worker per gateway with pending pushes (at most Workers at once); a worker
// sends its gateway's pushes oldest first, different pushers in parallel
// (PerGateway) and each pusher's in order. A failure (5xx, 429, a timeout,
// no connection) stops the gateway's worker and backs the gateway off
// (doubling from MinBackoff to MaxBackoff): the pushes stay queued, in order,
// and the other gateways are not held up. Nothing is lost on a restart: the
// queue is the store's, and pushes in flight at a crash are sent again
// (gateways deduplicate by event_id, as the spec asks).
type Delivery struct {
	o       DeliveryOptions
	client  *http.Client
	ctx     context.Context
	cancel  context.CancelFunc
	wake    chan struct{}
	done    chan struct{}
	workers sync.WaitGroup

	mu       sync.Mutex
	gateways map[string]*gatewayState
	active   int

	results *prometheus.CounterVec
	latency prometheus.Histogram
}

type gatewayState struct {
	running  bool
	failures int
	until    time.Time // backed off until
}

// NewDelivery starts delivery; Close stops it.
func NewDelivery(o DeliveryOptions) (*Delivery, error) {
	o.Workers, o.PerGateway = max(o.Workers, 1), max(o.PerGateway, 1)
	if o.RequestTimeout <= 0 {
		o.RequestTimeout = 10 * time.Second
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = time.Second
	}
	o.MaxBackoff = max(o.MaxBackoff, o.MinBackoff)
	if o.MaxRetryAge <= 0 {
		o.MaxRetryAge = 24 * time.Hour
	}
	d := &Delivery{o: o, wake: make(chan struct{}, 1), done: make(chan struct{}), gateways: map[string]*gatewayState{},
		results: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "myelin_push_notifications_total",
			Help: "Pushes to push gateways by result: sent, rejected (pushkey removed), refused (4xx), expired (given up), retried."},
			[]string{"result"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "myelin_push_delivery_seconds",
			Help:    "Time from queueing a push to its gateway's answer.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 3600}}),
	}
	d.client = gatewayClient(o.AllowPrivate, o.RequestTimeout, o.PerGateway)
	d.ctx, d.cancel = context.WithCancel(context.Background())
	if o.Metrics != nil {
		depth := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "myelin_push_queue_depth",
			Help: "Pushes queued for push gateways and not yet delivered."}, func() float64 {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			n, err := o.Store.PushQueueDepth(ctx)
			if err != nil {
				return -1
			}
			return float64(n)
		})
		for _, c := range []prometheus.Collector{d.results, d.latency, depth} {
			if err := o.Metrics.Register(c); err != nil {
				return nil, fmt.Errorf("push delivery metrics: %w", err)
			}
		}
	}
	d.poke() // what a previous run left queued
	go d.run()
	return d, nil
}

// gatewayClient dials only public addresses (checked on the address dialled,
// after resolution, so DNS cannot point it inside), unless allowPrivate; it
// follows no redirects.
func gatewayClient(allowPrivate bool, timeout time.Duration, perHost int) *http.Client {
	dialer := &net.Dialer{Timeout: timeout}
	if !allowPrivate {
		dialer.Control = func(_, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil || !netguard.IsPublicAddr(ap.Addr()) {
				return fmt.Errorf("push gateway at %s: not a public address", address)
			}
			return nil
		}
	}
	tr := &http.Transport{DialContext: dialer.DialContext, MaxIdleConnsPerHost: perHost, IdleConnTimeout: time.Minute,
		TLSHandshakeTimeout: timeout, ResponseHeaderTimeout: timeout, ForceAttemptHTTP2: true}
	return &http.Client{Transport: tr, Timeout: timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// Enqueue stores items and wakes the dispatcher.
func (d *Delivery) Enqueue(ctx context.Context, items []storage.PushQueueItem) error {
	if len(items) == 0 {
		return nil
	}
	if err := d.o.Store.EnqueuePushes(ctx, items); err != nil {
		return err
	}
	d.poke()
	return nil
}

func (d *Delivery) poke() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// Close stops the dispatcher and waits for the workers (pushes in flight are
// cut short and stay queued).
func (d *Delivery) Close() {
	d.cancel()
	<-d.done
	d.workers.Wait()
	d.client.CloseIdleConnections()
}

func (d *Delivery) run() {
	defer close(d.done)
	timer := time.NewTimer(time.Hour)
	prune := time.NewTicker(time.Hour)
	defer timer.Stop()
	defer prune.Stop()
	d.prune()
	for {
		next := d.dispatch()
		timer.Reset(next)
		select {
		case <-d.ctx.Done():
			return
		case <-d.wake:
		case <-timer.C:
		case <-prune.C:
			d.prune()
		}
	}
}

func (d *Delivery) prune() {
	if err := d.o.Store.PrunePushQueue(d.ctx, time.Now().Add(-keepDone).UnixMilli()); err != nil && d.ctx.Err() == nil {
		slog.Warn("push: pruning the queue", "err", err)
	}
}

// dispatch starts a worker for each gateway with pending pushes that is
// neither running nor backed off, and returns how long until the next
// backed-off gateway may be tried (a worker's end wakes it sooner).
func (d *Delivery) dispatch() time.Duration {
	next := time.Hour
	gws, err := d.o.Store.PendingPushGateways(d.ctx)
	if err != nil {
		if d.ctx.Err() == nil {
			slog.Warn("push: reading the queue", "err", err)
		}
		return d.o.MinBackoff
	}
	now := time.Now()
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, g := range gws {
		st := d.gateways[g]
		if st == nil {
			st = &gatewayState{}
			d.gateways[g] = st
		}
		if st.running {
			continue
		}
		if wait := st.until.Sub(now); wait > 0 {
			next = min(next, wait)
			continue
		}
		if d.active >= d.o.Workers {
			break
		}
		st.running = true
		d.active++
		d.workers.Add(1)
		go d.work(g, st)
	}
	return next
}

// work sends gateway's pending pushes until none are left or it fails.
func (d *Delivery) work(gateway string, st *gatewayState) {
	failed := false
	defer func() {
		d.mu.Lock()
		st.running = false
		d.active--
		if failed {
			st.failures++
			st.until = time.Now().Add(backoff(d.o.MinBackoff, d.o.MaxBackoff, st.failures))
		} else {
			st.failures, st.until = 0, time.Time{}
		}
		d.mu.Unlock()
		d.workers.Done()
		d.poke()
	}()
	err := recovery.Call("push delivery", func() error {
		for d.ctx.Err() == nil {
			items, err := d.o.Store.PendingPushes(d.ctx, gateway, 100)
			if err != nil {
				return err
			}
			if len(items) == 0 {
				return nil
			}
			if ok := d.sendPage(items); !ok {
				failed = true
				return nil
			}
		}
		return nil
	})
	if err != nil {
		failed = true
		if d.ctx.Err() == nil {
			slog.Warn("push: delivering", "gateway", gateway, "err", err)
		}
	}
}

func backoff(lo, hi time.Duration, failures int) time.Duration {
	b := lo
	for i := 1; i < failures && b < hi; i++ {
		b *= 2
	}
	return min(b, hi)
}

// sendPage sends a page of one gateway's pushes: each pusher's in order (a
// failure stops that pusher's), different pushers in parallel. It reports
// false when any push failed in a way worth retrying.
func (d *Delivery) sendPage(items []storage.PushQueueItem) bool {
	type lane struct{ items []storage.PushQueueItem }
	var order []string
	lanes := map[string]*lane{}
	for _, it := range items {
		k := it.UserID + "\x00" + it.AppID + "\x00" + it.PushKey
		if lanes[k] == nil {
			lanes[k] = &lane{}
			order = append(order, k)
		}
		lanes[k].items = append(lanes[k].items, it)
	}
	var mu sync.Mutex
	done := map[string][]int64{}
	ok := true
	sem := make(chan struct{}, d.o.PerGateway)
	var wg sync.WaitGroup
	for _, k := range order {
		l := lanes[k]
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			for _, it := range l.items {
				result := d.send(it)
				d.results.WithLabelValues(result).Inc()
				if result == resultRetried {
					if time.Since(time.UnixMilli(it.QueuedTS)) < d.o.MaxRetryAge {
						if err := d.o.Store.CountPushAttempt(d.ctx, it.ID); err != nil && d.ctx.Err() == nil {
							slog.Warn("push: counting an attempt", "err", err)
						}
						mu.Lock()
						ok = false
						mu.Unlock()
						return // this pusher's later pushes wait their turn
					}
					result = resultExpired
					d.results.WithLabelValues(result).Inc()
				}
				mu.Lock()
				done[result] = append(done[result], it.ID)
				mu.Unlock()
				if result == resultRejected {
					return // the pusher and its other pushes are gone
				}
			}
		}()
	}
	wg.Wait()
	now := time.Now().UnixMilli()
	for result, ids := range done {
		if err := d.o.Store.FinishPushes(d.ctx, ids, result, now); err != nil {
			if d.ctx.Err() == nil {
				slog.Warn("push: recording sent pushes", "err", err)
			}
			return false
		}
	}
	return ok
}

// send makes one request and classifies its outcome.
func (d *Delivery) send(it storage.PushQueueItem) string {
	ctx, cancel := context.WithTimeout(d.ctx, d.o.RequestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, it.URL, bytes.NewReader([]byte(it.Body)))
	if err != nil {
		return resultRefused // a URL that cannot make a request never will
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := d.client.Do(req)
	if err != nil {
		if d.ctx.Err() == nil {
			slog.Debug("push: gateway unreachable", "url", it.URL, "err", err)
		}
		return resultRetried
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64*1024))
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		d.latency.Observe(time.Since(time.UnixMilli(it.QueuedTS)).Seconds())
		var answer struct {
			Rejected []string `json:"rejected"`
		}
		_ = json.Unmarshal(body, &answer)
		for _, k := range answer.Rejected {
			if k != it.PushKey {
				continue
			}
			// The spec: the homeserver must remove a rejected pushkey's pusher.
			if err := d.o.Store.DeletePushersByKey(d.ctx, it.AppID, it.PushKey, time.Now().UnixMilli()); err != nil {
				slog.Warn("push: removing a rejected pusher", "err", err)
				return resultRetried
			}
			return resultRejected
		}
		return resultSent
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		return resultRetried
	default:
		slog.Info("push: gateway refused a push", "url", it.URL, "status", resp.StatusCode)
		return resultRefused
	}
}
