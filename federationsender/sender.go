// Package federationsender delivers the PDUs this server originates to the
// other servers in their rooms, losing nothing: a follower of the stream
// (internal/follower) puts each new local event in a durable queue per
// destination (the store's federation_queue), and one worker per
// destination with queued events sends them as transactions
// (PUT /_matrix/federation/v1/send/{txnId}, X-Matrix signed by the
// federation transport's client), deletes what was acknowledged and retries
// the rest with a persisted exponential backoff. After a long outage a
// destination's queue is trimmed to the latest events of each room: the
// destination fetches the gap itself (get_missing_events, backfill).
package federationsender

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix"
	mfed "maunium.net/go/mautrix/federation"

	"github.com/myelin-chat/myelin/audit"
	"github.com/myelin-chat/myelin/federation"
	"github.com/myelin-chat/myelin/internal/recovery"
	"github.com/myelin-chat/myelin/storage"
)

// FollowerName is the sender's stream cursor in the store.
const FollowerName = "federation_sender"

// Store is what the sender reads and writes (implemented by *storage.DB).
type Store interface {
	GetEvents(ctx context.Context, ids []string) (map[string]*storage.Event, error)
	JoinedServersAt(ctx context.Context, roomID string, pos int64) ([]string, error)
	EnqueueFederation(ctx context.Context, items []storage.FederationQueueItem) error
	FederationDestinationState(ctx context.Context, dest string) (*storage.FederationDestination, error)
	FederationQueuedDestinations(ctx context.Context) ([]string, error)
	FederationBatch(ctx context.Context, dest string, upTo int64, limit int) ([]storage.FederationQueueItem, error)
	StartFederationTxn(ctx context.Context, dest, txnID string, upTo int64) error
	AckFederationTxn(ctx context.Context, dest string, upTo, nowMS int64) error
	FederationTxnFailed(ctx context.Context, dest string, failures, backoffUntil int64) error
	DropFederationQueue(ctx context.Context, dest string) (int64, error)
	// KnownEvents: which of ids are stored timeline events (not outliers).
	KnownEvents(ctx context.Context, ids []string) (map[string]bool, error)
	TrimFederationQueue(ctx context.Context, dest string, after int64, maxPerRoom, keep int) (int64, error)
	FederationQueueStats(ctx context.Context, limit int) ([]storage.FederationQueueStat, storage.FederationQueueStat, error)
	// The EDU queue (edus.go): read, recorded with a transaction, trimmed.
	FederationEDUBatch(ctx context.Context, dest string, inTxn bool, limit int) ([]storage.FederationEDU, error)
	StartFederationEDUTxn(ctx context.Context, dest string, pduUpTo int64, eduIDs []int64) (string, error)
	DropEphemeralFederationEDUs(ctx context.Context, dest string) (int64, error)
}

// Client sends a transaction (implemented by mautrix's *federation.Client,
// the transport's Client: signing, discovery, private-address refusal).
type Client interface {
	SendTransaction(ctx context.Context, req *mfed.ReqSendTransaction) (*mfed.RespSendTransaction, error)
}

// Policy is the federation policy (federation.Policy).
type Policy interface {
	AllowServer(ctx context.Context, server string, purpose federation.Purpose) bool
}

// Audit records each transaction a destination acknowledged (a flow) and
// the events the policy kept from a server (a refusal): *audit.Log. Both
// only queue the record, so the worker does not wait for the store.
type Audit interface {
	Flow(actor string, f audit.Flow)
	Refusal(actor string, r audit.Refusal)
}

// Options configure the sender. ServerName, Store, Client and Policy are required.
type Options struct {
	ServerName string
	Store      Store
	Client     Client
	Policy     Policy
	// EDUs is the EDU queue (NewQueue) whose EDUs the workers send with the
	// PDUs; it wakes them. nil: none are queued (those already in the
	// store are still sent).
	EDUs    *Queue
	Metrics Registerer // nil: no metrics
	Audit   Audit      // nil: nothing recorded
	// Residency is the data-localization policy: a room's events go to a
	// destination only if it admits it, decided when they are queued and
	// again when a transaction is built (residency.go). nil: not asked.
	Residency Residency
	// MaxConcurrent bounds the destinations sent to at once (default 32).
	MaxConcurrent int
	// MinBackoff and MaxBackoff bound the delay after a failed transaction;
	// it doubles with each consecutive failure (defaults 5s, 1h).
	MinBackoff, MaxBackoff time.Duration
	// MaxQueuedPerRoom is how many events of one room a destination's queue
	// holds before the catch-up trim keeps only the latest KeepPerRoom
	// (defaults 1000 and 100).
	MaxQueuedPerRoom, KeepPerRoom int
	// RequestTimeout bounds one transaction (default 60s).
	RequestTimeout time.Duration
	// RefusalsBeforeDrop: a transaction the destination refuses as a whole
	// (400, 403, 413: sending it again cannot help) this many times in a
	// row is dropped so that the queue behind it moves on (default 3).
	RefusalsBeforeDrop int
	Now                func() time.Time // for tests; default time.Now
}

// MaxPDUsPerTxn is the spec's limit of PDUs in one transaction.
const MaxPDUsPerTxn = 50

// Sender is the running federation sender.
type Sender struct {
	opts    Options
	metrics *senderMetrics
	slots   chan struct{} // MaxConcurrent sends at once

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	workers map[string]*worker // destinations with a worker running or scheduled
	closed  bool
}

// worker is one destination's delivery state in memory.
type worker struct {
	running bool
	again   bool        // woken while running: look at the queue once more
	timer   *time.Timer // a retry scheduled after a backoff
	failing bool        // the last attempt failed: trim the queue as it grows
}

// New builds the sender and starts a worker for every destination that
// still has queued events (from before a restart). Its Handle is the
// handler of the sender's stream follower.
func New(ctx context.Context, o Options) (*Sender, error) {
	if o.MaxConcurrent <= 0 {
		o.MaxConcurrent = 32
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = 5 * time.Second
	}
	if o.MaxBackoff < o.MinBackoff {
		o.MaxBackoff = max(time.Hour, o.MinBackoff)
	}
	if o.MaxQueuedPerRoom <= 0 {
		o.MaxQueuedPerRoom = 1000
	}
	if o.KeepPerRoom <= 0 || o.KeepPerRoom > o.MaxQueuedPerRoom {
		o.KeepPerRoom = min(100, o.MaxQueuedPerRoom)
	}
	if o.RequestTimeout <= 0 {
		o.RequestTimeout = time.Minute
	}
	if o.RefusalsBeforeDrop <= 0 {
		o.RefusalsBeforeDrop = 3
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	s := &Sender{opts: o, slots: make(chan struct{}, o.MaxConcurrent), workers: map[string]*worker{}}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	if o.Metrics != nil {
		m, err := newMetrics(o.Metrics, s)
		if err != nil {
			return nil, err
		}
		s.metrics = m
	} else {
		s.metrics = noMetrics()
	}
	if o.EDUs != nil {
		o.EDUs.attach(s.wake)
	}
	dests, err := o.Store.FederationQueuedDestinations(ctx)
	if err != nil {
		return nil, err
	}
	for _, d := range dests {
		s.wake(d)
	}
	return s, nil
}

// Close stops the workers and waits for transactions in flight to end
// (cancelled). What was not acknowledged stays queued.
func (s *Sender) Close() {
	s.mu.Lock()
	s.closed = true
	for _, w := range s.workers {
		if w.timer != nil {
			w.timer.Stop()
		}
	}
	s.mu.Unlock()
	s.cancel()
	s.wg.Wait()
}

// Backoff is the delay after the given number of consecutive failures (≥ 1):
// MinBackoff doubling up to MaxBackoff.
func Backoff(failures int64, minB, maxB time.Duration) time.Duration {
	d := minB
	for i := int64(1); i < failures && d < maxB; i++ {
		d *= 2
	}
	return min(d, maxB)
}

// TxnID names the transaction carrying a destination's queue up to the
// stream position upTo. Positions are never reused and nothing at or below
// an acknowledged position is queued again, so it is unique per
// destination, and the same across retries (and restarts) of that batch.
// A transaction carrying EDUs is named by the store instead
// (storage.StartFederationEDUTxn: "m<position>.<n>").
func TxnID(upTo int64) string { return "m" + strconv.FormatInt(upTo, 10) }

// Handle is the stream follower's handler: it queues every event this
// server originated for the servers in its room at that event. It is
// idempotent (the queue ignores what it holds or was acknowledged).
func (s *Sender) Handle(ctx context.Context, events []*storage.Event) error {
	var items []storage.FederationQueueItem
	now := s.opts.Now().UnixMilli()
	refused := refusals{} // recorded once the page is handled (a failed page is handled again)
	res := &pageResidency{decisions: roomDecisions{r: s.opts.Residency}, refused: residencyRefusals{}}
	// Within a page, a room's servers change only with a member event.
	servers := map[string][]string{}
	for _, ev := range events {
		isMember := ev.Type == "m.room.member"
		origin := storage.ServerOfUser(ev.Sender)
		if origin != s.opts.ServerName {
			if isMember {
				delete(servers, ev.RoomID)
			}
			if !ev.Relay {
				continue // received over federation: its origin sends it
			}
			// Taken through send_join/leave/knock: only we have it; the
			// room's other servers get it from us, its origin excepted.
			dests, err := s.opts.Store.JoinedServersAt(ctx, ev.RoomID, ev.StreamPos)
			if err != nil {
				return err
			}
			items = s.queue(ctx, items, dests, ev, now, origin, refused, res)
			continue
		}
		// A join of one of our users adds only our server, to which nothing
		// is sent: the servers before it still stand, after it too. (Asking
		// the store for each join of a burst is quadratic: JoinedServersAt
		// walks every membership change after the event.)
		changes := isMember && !s.localJoin(ev)
		dests, ok := servers[ev.RoomID]
		if !ok || changes {
			var err error
			if dests, err = s.opts.Store.JoinedServersAt(ctx, ev.RoomID, ev.StreamPos); err != nil {
				return err
			}
			servers[ev.RoomID] = dests
			if changes {
				delete(servers, ev.RoomID) // the next event sees the membership after it
			}
		}
		if s.localJoin(ev) {
			viaSendJoin, err := s.joinedThroughResident(ctx, ev)
			if err != nil {
				return err
			}
			if viaSendJoin {
				continue
			}
		}
		items = s.queue(ctx, items, withTarget(dests, ev, s.opts.ServerName), ev, now, "", refused, res)
	}
	if len(items) == 0 {
		s.recordRefusals(refused)
		res.record(s)
		return nil
	}
	if err := s.opts.Store.EnqueueFederation(ctx, items); err != nil {
		return err
	}
	s.recordRefusals(refused)
	res.record(s)
	woken := map[string]bool{}
	for _, it := range items {
		if !woken[it.Destination] {
			woken[it.Destination] = true
			s.trimIfFailing(ctx, it.Destination)
			s.wake(it.Destination)
		}
	}
	return nil
}

// localJoin: ev is the join of one of our users.
// withTarget adds to a member event's destinations the server of the user
// it names when that user leaves or is banned, even though their server is
// not in the room: a rescinded invite or a refused knock must reach the
// server that holds it out of band. (An invite reached it through /invite.)
func withTarget(dests []string, ev *storage.Event, ours string) []string {
	if ev.Type != "m.room.member" || ev.StateKey == nil || (ev.Membership != "leave" && ev.Membership != "ban") {
		return dests
	}
	target := storage.ServerOfUser(*ev.StateKey)
	if target == "" || target == ours || slices.Contains(dests, target) {
		return dests
	}
	return append(slices.Clone(dests), target)
}

// queue adds ev for each destination but ours, except and those the policy
// refuses (counted in refused) or the residency policy does not admit to
// the room (counted in res).
func (s *Sender) queue(ctx context.Context, items []storage.FederationQueueItem, dests []string, ev *storage.Event, now int64, except string,
	refused refusals, res *pageResidency) []storage.FederationQueueItem {
	for _, d := range dests {
		if d == s.opts.ServerName || d == except {
			continue
		}
		if !s.opts.Policy.AllowServer(ctx, d, federation.PurposeSend) {
			refused.add(d, ev.RoomID)
			continue
		}
		if !res.admits(ctx, ev.RoomID, d) {
			continue
		}
		items = append(items, storage.FederationQueueItem{Destination: d, StreamPos: ev.StreamPos, RoomID: ev.RoomID,
			EventID: ev.EventID, QueuedTS: now})
	}
	return items
}

// joinedThroughResident reports whether our user's join came through
// send_join (a remote join or rejoin): built on the resident server's
// template, its prev_events are not in our timeline, while a join our
// roomserver built sits on our forward extremities. The resident server
// that took it sends it to the room's servers; sending it again would make
// it the first thing they hear from us, before anything we send.
func (s *Sender) joinedThroughResident(ctx context.Context, ev *storage.Event) (bool, error) {
	var prevs []string
	for _, p := range gjson.GetBytes(ev.JSON, "prev_events").Array() {
		if p.Type == gjson.String {
			prevs = append(prevs, p.Str)
		} else if p.IsArray() { // room versions 1 and 2: [id, hashes]
			prevs = append(prevs, p.Get("0").Str)
		}
	}
	if len(prevs) == 0 {
		return false, nil
	}
	known, err := s.opts.Store.KnownEvents(ctx, prevs)
	if err != nil {
		return false, err
	}
	for _, p := range prevs {
		if known[p] {
			return false, nil
		}
	}
	return true, nil
}

func (s *Sender) localJoin(ev *storage.Event) bool {
	return ev.Membership == "join" && ev.StateKey != nil && storage.ServerOfUser(*ev.StateKey) == s.opts.ServerName
}

// trimIfFailing bounds the queue of a destination that is not answering, as
// events are queued for it (its worker sleeps through the backoff).
func (s *Sender) trimIfFailing(ctx context.Context, dest string) {
	s.mu.Lock()
	w := s.workers[dest]
	failing := w != nil && w.failing
	s.mu.Unlock()
	if failing {
		s.trim(ctx, dest)
	}
}

func (s *Sender) trim(ctx context.Context, dest string) {
	st, err := s.opts.Store.FederationDestinationState(ctx, dest)
	if err != nil {
		slog.Warn("federation sender: trimming a queue", "destination", dest, "err", err)
		return
	}
	after := st.AckedUpto
	if st.TxnID != "" {
		after = st.TxnUpto // the transaction in flight is retried whole
	}
	n, err := s.opts.Store.TrimFederationQueue(ctx, dest, after, s.opts.MaxQueuedPerRoom, s.opts.KeepPerRoom)
	if err != nil {
		slog.Warn("federation sender: trimming a queue", "destination", dest, "err", err)
	}
	if n > 0 {
		s.metrics.dropped.Add(float64(n))
		slog.Info("federation sender: destination behind, dropped the middle of its queue", "destination", dest, "dropped", n)
	}
}

// wake makes sure dest's worker looks at its queue: starts it, or tells the
// running one to look again. A destination waiting out a backoff stays
// asleep until its timer.
func (s *Sender) wake(dest string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	w := s.workers[dest]
	if w == nil {
		w = &worker{}
		s.workers[dest] = w
	}
	if w.timer != nil {
		return
	}
	if w.running {
		w.again = true
		return
	}
	w.running = true
	s.wg.Add(1)
	go s.run(dest, w)
}

// run delivers dest's queue until it is empty, the destination fails (a
// retry is scheduled) or the sender closes.
func (s *Sender) run(dest string, w *worker) {
	defer s.wg.Done()
	for {
		retryIn, err := s.deliver(dest)
		s.mu.Lock()
		switch {
		case s.closed:
			w.running = false
			s.mu.Unlock()
			return
		case err != nil || retryIn > 0:
			if err != nil { // the store failed: try again shortly
				slog.Warn("federation sender", "destination", dest, "err", err)
				retryIn = s.opts.MinBackoff
			}
			w.running, w.again = false, false
			w.timer = time.AfterFunc(retryIn, func() {
				s.mu.Lock()
				w.timer = nil
				s.mu.Unlock()
				s.wake(dest)
			})
			s.mu.Unlock()
			return
		case w.again:
			w.again = false
			s.mu.Unlock()
			continue
		default:
			// Empty: the worker ends (the next enqueue starts another).
			delete(s.workers, dest)
			s.mu.Unlock()
			return
		}
	}
}

// deliver sends dest's queue, a transaction at a time, until it is empty
// (0, nil) or an attempt failed (the backoff to wait, nil); a panic is an
// error (logged and counted), retried like a store failure.
func (s *Sender) deliver(dest string) (retry time.Duration, err error) {
	if perr := recovery.Call("federation_sender", func() error {
		retry, err = s.deliverLoop(dest)
		return nil
	}, "destination", dest); perr != nil {
		return 0, perr
	}
	return retry, err
}

func (s *Sender) deliverLoop(dest string) (time.Duration, error) {
	ctx := s.ctx
	if dest == s.opts.ServerName || !s.opts.Policy.AllowServer(ctx, dest, federation.PurposeSend) {
		n, err := s.opts.Store.DropFederationQueue(ctx, dest)
		if n > 0 {
			slog.Warn("federation sender: the policy refuses the destination; dropped its queue", "destination", dest, "dropped", n)
			if s.opts.Audit != nil && dest != s.opts.ServerName {
				s.opts.Audit.Refusal(s.opts.ServerName, audit.Refusal{Server: dest, Purpose: string(federation.PurposeSend),
					Rule: audit.RuleFederationPolicy, DroppedPDUs: n})
			}
		}
		return 0, err
	}
	for ctx.Err() == nil {
		st, err := s.opts.Store.FederationDestinationState(ctx, dest)
		if err != nil {
			return 0, err
		}
		if wait := time.UnixMilli(st.BackoffUntil).Sub(s.opts.Now()); wait > 0 {
			s.setFailing(dest, true)
			return wait, nil
		}
		inFlight := st.TxnID != ""
		if !inFlight && st.Failures > 0 {
			s.trim(ctx, dest) // back after an outage: catch up with the latest
		}
		batch, edus, err := s.nextTxn(ctx, st)
		if err != nil {
			return 0, err
		}
		// The residency policy decides again: what it no longer admits is
		// not sent, and is dropped with the rest of the transaction when
		// it is acknowledged (startTxn covers the whole batch).
		pdus := s.admitted(ctx, dest, batch)
		sendEDUs := s.admittedEDUs(ctx, dest, edus)
		if len(pdus) == 0 && len(edus) == 0 && len(batch) > 0 {
			upTo := batch[len(batch)-1].StreamPos
			if inFlight {
				upTo = st.TxnUpto
			}
			if err := s.opts.Store.AckFederationTxn(ctx, dest, upTo, s.opts.Now().UnixMilli()); err != nil {
				return 0, err
			}
			continue
		}
		if len(batch) == 0 && len(edus) == 0 {
			if inFlight { // everything it carried is gone (policy drop): forget it
				if err := s.opts.Store.AckFederationTxn(ctx, dest, st.TxnUpto, s.opts.Now().UnixMilli()); err != nil {
					return 0, err
				}
				continue
			}
			return 0, nil
		}
		txnID, last := st.TxnID, st.TxnUpto
		if !inFlight {
			if txnID, last, err = s.startTxn(ctx, st, batch, edus); err != nil {
				return 0, err
			}
		}
		if err := s.send(ctx, dest, txnID, pdus, sendEDUs); err != nil {
			if ctx.Err() != nil {
				return 0, nil
			}
			failures := st.Failures + 1
			if refused(err) && failures >= int64(s.opts.RefusalsBeforeDrop) {
				// Refused as a whole again: drop it (the destination can
				// still fetch these events through get_missing_events).
				s.metrics.txns.WithLabelValues("dropped").Inc()
				slog.Warn("federation sender: the destination keeps refusing a transaction; dropped it", "destination", dest,
					"txn", txnID, "pdus", len(batch), "edus", len(edus), "attempts", failures, "err", err)
				if err := s.opts.Store.AckFederationTxn(ctx, dest, last, s.opts.Now().UnixMilli()); err != nil {
					return 0, err
				}
				s.setFailing(dest, false)
				continue
			}
			wait := Backoff(failures, s.opts.MinBackoff, s.opts.MaxBackoff)
			s.metrics.txns.WithLabelValues("failed").Inc()
			slog.Info("federation sender: transaction failed; backing off", "destination", dest, "txn", txnID,
				"failures", failures, "retry_in", wait, "err", err)
			if err := s.opts.Store.FederationTxnFailed(ctx, dest, failures, s.opts.Now().Add(wait).UnixMilli()); err != nil {
				return 0, err
			}
			s.setFailing(dest, true)
			s.dropEphemeral(ctx, dest)
			return wait, nil
		}
		s.metrics.txns.WithLabelValues("sent").Inc()
		if err := s.opts.Store.AckFederationTxn(ctx, dest, last, s.opts.Now().UnixMilli()); err != nil {
			return 0, err
		}
		s.setFailing(dest, false)
	}
	return 0, nil
}

// nextTxn reads what the next transaction to st's destination carries: that
// of the transaction in flight, exactly (PDUs up to txn_upto, none when that
// is the acknowledged position; the EDUs marked in_txn), or the next PDUs
// (≤ MaxPDUsPerTxn) and EDUs (≤ MaxEDUsPerTxn, MaxEDUBytesPerTxn).
func (s *Sender) nextTxn(ctx context.Context, st *storage.FederationDestination) ([]storage.FederationQueueItem, []storage.FederationEDU, error) {
	inFlight := st.TxnID != ""
	var batch []storage.FederationQueueItem
	if !inFlight || st.TxnUpto > st.AckedUpto {
		upTo := int64(0)
		if inFlight {
			upTo = st.TxnUpto
		}
		var err error
		if batch, err = s.opts.Store.FederationBatch(ctx, st.Name, upTo, MaxPDUsPerTxn); err != nil {
			return nil, nil, err
		}
	}
	edus, err := s.opts.Store.FederationEDUBatch(ctx, st.Name, inFlight, MaxEDUsPerTxn)
	if err != nil {
		return nil, nil, err
	}
	if !inFlight {
		size := 0
		for i, e := range edus {
			if size += len(e.Content); size > MaxEDUBytesPerTxn && i > 0 {
				edus = edus[:i]
				break
			}
		}
	}
	return batch, edus, nil
}

// startTxn records a new transaction to st's destination before it is sent
// (so a retry, after a restart too, sends the same): its ID, and the last
// position of the PDU queue it covers (the acknowledged one without PDUs).
func (s *Sender) startTxn(ctx context.Context, st *storage.FederationDestination, batch []storage.FederationQueueItem,
	edus []storage.FederationEDU) (string, int64, error) {
	last := st.AckedUpto
	if len(batch) > 0 {
		last = batch[len(batch)-1].StreamPos
	}
	if len(edus) == 0 {
		txnID := TxnID(last)
		return txnID, last, s.opts.Store.StartFederationTxn(ctx, st.Name, txnID, last)
	}
	ids := make([]int64, len(edus))
	for i, e := range edus {
		ids[i] = e.ID
	}
	txnID, err := s.opts.Store.StartFederationEDUTxn(ctx, st.Name, last, ids)
	return txnID, last, err
}

// dropEphemeral drops the ephemeral EDUs queued for a destination that just
// failed (but those of the transaction in flight); new ones are not queued
// while it fails (Queue.QueueEDU).
func (s *Sender) dropEphemeral(ctx context.Context, dest string) {
	n, err := s.opts.Store.DropEphemeralFederationEDUs(ctx, dest)
	if err != nil {
		slog.Warn("federation sender: dropping ephemeral EDUs", "destination", dest, "err", err)
	}
	if n > 0 && s.opts.EDUs != nil {
		s.opts.EDUs.dropped.WithLabelValues("failing").Add(float64(n))
	}
}

// refused reports whether a transaction failed because the destination
// refused it as a whole with an answer that will not change on a retry. A
// 401 (it could not check our key yet), 404 (a proxy not routing
// federation yet), 429 and 5xx may, and timeouts and connection errors are
// outages: those are retried.
func refused(err error) bool {
	var httpErr mautrix.HTTPError
	if !errors.As(err, &httpErr) || httpErr.Response == nil {
		return false
	}
	switch httpErr.Response.StatusCode {
	case http.StatusBadRequest, http.StatusForbidden, http.StatusRequestEntityTooLarge:
		return true
	}
	return false
}

func (s *Sender) setFailing(dest string, failing bool) {
	s.mu.Lock()
	if w := s.workers[dest]; w != nil {
		w.failing = failing
	}
	s.mu.Unlock()
	if s.opts.EDUs != nil {
		s.opts.EDUs.setFailing(dest, failing)
	}
}

// send sends one transaction: a slot of MaxConcurrent, the PDUs as stored.
// A 200 is success whatever it says of single PDUs (the spec: their errors
// are not retried); they are logged.
func (s *Sender) send(ctx context.Context, dest, txnID string, batch []storage.FederationQueueItem, edus []storage.FederationEDU) error {
	ids := make([]string, len(batch))
	for i, it := range batch {
		ids[i] = it.EventID
	}
	evs, err := s.opts.Store.GetEvents(ctx, ids)
	if err != nil {
		return err
	}
	req := &mfed.ReqSendTransaction{Destination: dest, TxnID: txnID, Origin: s.opts.ServerName, PDUs: make([]mfed.PDU, 0, len(batch))}
	req.OriginServerTS.Time = s.opts.Now()
	for _, it := range batch {
		if ev := evs[it.EventID]; ev != nil {
			req.PDUs = append(req.PDUs, mfed.PDU(ev.JSON))
		}
	}
	for _, e := range edus {
		raw, err := json.Marshal(struct {
			Type    string          `json:"edu_type"`
			Content json.RawMessage `json:"content"`
		}{e.Type, json.RawMessage(e.Content)})
		if err != nil {
			return fmt.Errorf("encoding a %s EDU for %s: %w", e.Type, dest, err)
		}
		req.EDUs = append(req.EDUs, raw)
	}
	select {
	case s.slots <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-s.slots }()
	rctx, cancel := context.WithTimeout(ctx, s.opts.RequestTimeout)
	defer cancel()
	resp, err := s.opts.Client.SendTransaction(rctx, req)
	if err != nil {
		return fmt.Errorf("sending transaction %s to %s: %w", txnID, dest, err)
	}
	s.recordFlow(dest, req, batch, evs)
	if resp != nil {
		for evID, r := range resp.PDUs {
			if r.Error != "" {
				s.metrics.pduErrors.Inc()
				slog.Info("federation sender: the destination refused a PDU", "destination", dest, "event_id", evID, "error", r.Error)
			}
		}
	}
	return nil
}

// refusals counts, per destination, the PDUs of each room the policy kept
// from it in one page of the stream: one refusal record per destination
// and page, not per event.
type refusals map[string]map[string]int

func (r refusals) add(dest, roomID string) {
	if r[dest] == nil {
		r[dest] = map[string]int{}
	}
	r[dest][roomID]++
}

func (s *Sender) recordRefusals(r refusals) {
	if s.opts.Audit == nil {
		return
	}
	for dest, rooms := range r {
		s.opts.Audit.Refusal(s.opts.ServerName, audit.Refusal{Server: dest, Purpose: string(federation.PurposeSend),
			Rule: audit.RuleFederationPolicy, Rooms: rooms})
	}
}

// recordFlow records a transaction dest acknowledged: its PDUs per room,
// EDUs per type and their bytes.
func (s *Sender) recordFlow(dest string, req *mfed.ReqSendTransaction, batch []storage.FederationQueueItem, evs map[string]*storage.Event) {
	if s.opts.Audit == nil {
		return
	}
	f := audit.Flow{Direction: audit.Outbound, Server: dest, TxnID: req.TxnID, PDUs: len(req.PDUs)}
	for _, it := range batch {
		if ev := evs[it.EventID]; ev != nil {
			if f.Rooms == nil {
				f.Rooms = map[string]int{}
			}
			f.Rooms[it.RoomID]++
			f.Bytes += len(ev.JSON)
		}
	}
	for _, raw := range req.EDUs {
		if f.EDUs == nil {
			f.EDUs = map[string]int{}
		}
		f.EDUs[gjson.GetBytes(raw, "edu_type").Str]++
		f.Bytes += len(raw)
	}
	s.opts.Audit.Flow(s.opts.ServerName, f)
}
