package federationsender

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/myelin-chat/myelin/audit"
	"github.com/myelin-chat/myelin/federation"
	"github.com/myelin-chat/myelin/residency"
	"github.com/myelin-chat/myelin/storage"
)

// EDU limits.
const (
	// MaxEDUsPerTxn is the spec's limit of EDUs in one transaction.
	MaxEDUsPerTxn = 100
	// MaxEDUBytes bounds one EDU's content (receivers refuse more: ingest does).
	MaxEDUBytes = 64 * 1024
	// MaxEDUBytesPerTxn bounds the EDU contents of one transaction (at least
	// one EDU goes), so that a transaction stays within what receivers take.
	MaxEDUBytesPerTxn = 1 << 20
	// DefaultMaxQueuedEDUs is how many EDUs a destination's queue holds: a
	// server down for good costs bounded store. Beyond it new EDUs for that
	// destination are dropped (counted, logged).
	DefaultMaxQueuedEDUs = 10000
)

// QueueStore is what the EDU queue writes (implemented by *storage.DB).
type QueueStore interface {
	EnqueueFederationEDUs(ctx context.Context, edus []storage.FederationEDU, maxPerDestination int) ([]string, error)
}

// QueueOptions configure the EDU queue. ServerName, Store and Policy are required.
type QueueOptions struct {
	ServerName string
	Store      QueueStore
	Policy     Policy
	Metrics    Registerer // nil: no metrics
	Audit      Audit      // records the EDUs the policy keeps from a server; nil: nothing recorded
	// Residency is the data-localization policy: an EDU of a room (m.typing,
	// m.receipt) goes to a destination the room admits for its kind, any
	// other to one whose zone shares its kind (presence, to-device, device
	// lists). nil: not asked.
	Residency Residency
	// MaxQueuedPerDestination bounds a destination's queued EDUs (default
	// DefaultMaxQueuedEDUs).
	MaxQueuedPerDestination int
	Now                     func() time.Time // for tests; default time.Now
}

// Queue is the durable outbound EDU queue: modules queue EDUs for other
// servers (QueueEDU), the Sender's per-destination workers send them with
// the PDUs. It is built before the modules that queue (with the transport),
// the Sender later, taking it in its Options: the Sender attaches itself to
// be woken.
type Queue struct {
	opts    QueueOptions
	dropped *prometheus.CounterVec // reason: cap, failing

	mu      sync.Mutex
	wake    func(dest string) // the Sender's; nil before it starts (it reads the store when it does)
	failing map[string]bool   // destinations whose last attempt failed: ephemeral EDUs are dropped
}

// NewQueue builds the EDU queue.
func NewQueue(o QueueOptions) (*Queue, error) {
	if o.MaxQueuedPerDestination <= 0 {
		o.MaxQueuedPerDestination = DefaultMaxQueuedEDUs
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	q := &Queue{opts: o, failing: map[string]bool{}, dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "myelin_federation_edus_dropped_total",
		Help: "Outbound EDUs dropped, by reason (cap: the destination's queue is full; failing: ephemeral, for a destination that is down; residency: the data-localization policy keeps it from the destination).",
	}, []string{"reason"})}
	if o.Metrics != nil {
		if err := o.Metrics.Register(q.dropped); err != nil {
			return nil, err
		}
	}
	return q, nil
}

// QueueEDU queues an EDU for each destination but ours and those the policy
// refuses, durably (one store transaction) before returning, then wakes the
// destinations' workers. An ephemeral EDU (typing, presence) is dropped for
// a destination that is failing; a destination whose queue is full
// (MaxQueuedPerDestination) drops what comes (counted, logged).
func (q *Queue) QueueEDU(ctx context.Context, destinations []string, eduType string, content json.RawMessage, ephemeral bool) error {
	if eduType == "" {
		return errors.New("queueing an EDU: no type")
	}
	if len(content) > MaxEDUBytes {
		return fmt.Errorf("queueing a %s EDU: content of %d bytes exceeds %d", eduType, len(content), MaxEDUBytes)
	}
	if !json.Valid(content) {
		return fmt.Errorf("queueing a %s EDU: content is not JSON", eduType)
	}
	now := q.opts.Now().UnixMilli()
	var rooms []string
	var roomEDU bool
	res := residencyRefusals{}
	if q.opts.Residency != nil {
		rooms, roomEDU, _ = eduRooms(eduType, content)
	}
	seen := map[string]bool{}
	var edus []storage.FederationEDU
	skippedFailing := 0
	for _, d := range destinations {
		if d == "" || seen[d] || d == q.opts.ServerName {
			continue
		}
		seen[d] = true
		if !q.opts.Policy.AllowServer(ctx, d, federation.PurposeSend) {
			if q.opts.Audit != nil {
				q.opts.Audit.Refusal(q.opts.ServerName, audit.Refusal{Server: d, Purpose: string(federation.PurposeSend),
					Rule: audit.RuleFederationPolicy, EDUs: map[string]int{eduType: 1}})
			}
			continue
		}
		if q.opts.Residency != nil {
			if dec := eduDecision(ctx, q.opts.Residency, d, eduType, rooms, roomEDU); !dec.Allowed {
				kind := eduKind(eduType)
				if kind == "" {
					kind = residency.Events
				}
				rr := res.add(d, "", dec, kind)
				rr.edus = map[string]int{eduType: 1}
				if len(rooms) == 1 {
					rr.room = rooms[0]
				}
				continue
			}
		}
		if ephemeral && q.isFailing(d) {
			skippedFailing++
			continue
		}
		edus = append(edus, storage.FederationEDU{Destination: d, Type: eduType, Content: content, Ephemeral: ephemeral, QueuedTS: now})
	}
	if skippedFailing > 0 {
		q.dropped.WithLabelValues("failing").Add(float64(skippedFailing))
	}
	if len(res) > 0 {
		q.dropped.WithLabelValues("residency").Add(float64(len(res)))
		res.record(q.opts.Audit, q.opts.ServerName, false)
	}
	if len(edus) == 0 {
		return nil
	}
	atCap, err := q.opts.Store.EnqueueFederationEDUs(context.WithoutCancel(ctx), edus, q.opts.MaxQueuedPerDestination)
	if err != nil {
		return err
	}
	full := map[string]bool{}
	for _, d := range atCap {
		full[d] = true
	}
	if len(atCap) > 0 {
		q.dropped.WithLabelValues("cap").Add(float64(len(atCap)))
		slog.Warn("federation sender: EDU queue full; dropped an EDU", "type", eduType, "destinations", atCap,
			"max_queued", q.opts.MaxQueuedPerDestination)
	}
	q.mu.Lock()
	wake := q.wake
	q.mu.Unlock()
	if wake != nil {
		for _, e := range edus {
			if !full[e.Destination] {
				wake(e.Destination)
			}
		}
	}
	return nil
}

// attach makes the Sender's wake the queue's.
func (q *Queue) attach(wake func(dest string)) {
	q.mu.Lock()
	q.wake = wake
	q.mu.Unlock()
}

func (q *Queue) setFailing(dest string, failing bool) {
	q.mu.Lock()
	if failing {
		q.failing[dest] = true
	} else {
		delete(q.failing, dest)
	}
	q.mu.Unlock()
}

func (q *Queue) isFailing(dest string) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.failing[dest]
}
