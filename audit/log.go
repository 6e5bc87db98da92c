package audit

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/myelin-chat/myelin/storage"
)

// Store is the audit log's table (implemented by *storage.DB).
type Store interface {
	LastAudit(ctx context.Context) (seq int64, hash string, err error)
	InsertAudit(ctx context.Context, rows []storage.AuditRow) error
	AuditRecords(ctx context.Context, from int64, limit int) ([]storage.AuditRow, error)
	AuditRecordsBetween(ctx context.Context, sinceMS, untilMS, after int64, limit int) ([]storage.AuditRow, error)
}

// Registerer is where the log registers its metrics (*metrics.Registry).
type Registerer = prometheus.Registerer

// Options build a Log. Store is required.
type Options struct {
	Store   Store
	Metrics Registerer       // nil: no metrics
	Now     func() time.Time // for tests; default time.Now
	// Zones places the other server of a flow in the residency policy's
	// zones, for the zone label of myelin_audit_flows_total (nil: "disabled").
	Zones Zones
	// QueueSize bounds the records Record holds before they are written
	// (default 4096); beyond it Record waits.
	QueueSize int
}

// Zones is the residency policy's placement of a server: its zone, "none"
// when it is in none, "disabled" when the policy is off.
type Zones interface {
	ServerZone(server string) string
}

// Entry is a record to append: the log adds the sequence number, the time
// (when not set) and the hashes.
type Entry struct {
	Time  time.Time
	Kind  Kind
	Actor string
	Body  any // encoded as canonical JSON
	// flow is set on flow records: their direction and data kinds, counted
	// by myelin_audit_flows_total once written.
	flow *Flow
}

// Log appends to the audit trail. Append writes at once; Record queues for
// a background writer that appends what has queued in one transaction, so
// a hot path (the federation sender) pays a channel send, not a commit.
type Log struct {
	o       Options
	records *prometheus.CounterVec
	flows   *prometheus.CounterVec

	// head is the last record this process knows stored: appends build on
	// it and, when another appender got there first (a unique violation),
	// read it again. mu serializes this process's appends.
	mu         sync.Mutex
	head       string
	headSeq    int64
	headLoaded bool

	queue   chan Entry
	closeMu sync.RWMutex // held for reading while sending to queue; Close takes it to close queue
	closed  bool
	done    chan struct{}
}

// New builds the log and starts its writer.
func New(o Options) (*Log, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.QueueSize <= 0 {
		o.QueueSize = 4096
	}
	l := &Log{o: o, queue: make(chan Entry, o.QueueSize), done: make(chan struct{}),
		records: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "myelin_audit_records_total", Help: "Audit records written, by kind (flow, refusal, policy_change, admin_action).",
		}, []string{"kind"}),
		flows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "myelin_audit_flows_total",
			Help: "Federation transactions recorded in the audit trail, by direction (inbound, outbound), data kind carried (one per transaction and kind) and the other server's residency zone (none: in no zone; disabled: the policy is off).",
		}, []string{"direction", "kind", "zone"}),
	}
	if o.Metrics != nil {
		for _, c := range []prometheus.Collector{l.records, l.flows} {
			if err := o.Metrics.Register(c); err != nil {
				return nil, fmt.Errorf("audit metrics: %w", err)
			}
		}
	}
	go l.writer()
	return l, nil
}

// Append writes entries at once, in order, after the last stored record,
// and returns them as stored.
func (l *Log) Append(ctx context.Context, entries ...Entry) ([]Record, error) {
	if len(entries) == 0 {
		return nil, nil
	}
	now := l.o.Now()
	bodies := make([]json.RawMessage, len(entries))
	for i, e := range entries {
		raw, err := json.Marshal(e.Body)
		if err != nil {
			return nil, fmt.Errorf("encoding an audit %s body: %w", e.Kind, err)
		}
		if bodies[i], err = CanonicalBody(raw); err != nil {
			return nil, err
		}
	}
	out, err := l.insert(ctx, entries, bodies, now)
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		l.records.WithLabelValues(string(e.Kind)).Inc()
		if e.flow != nil {
			zone := "disabled"
			if l.o.Zones != nil {
				zone = l.o.Zones.ServerZone(e.flow.Server)
			}
			for _, k := range e.flow.dataKinds() {
				l.flows.WithLabelValues(e.flow.Direction, k, zone).Inc()
			}
		}
	}
	return out, nil
}

// insert builds the records on the head and inserts them; when another
// appender (another process on the same database) took those sequence
// numbers, it reads the head again and rebuilds.
func (l *Log) insert(ctx context.Context, entries []Entry, bodies []json.RawMessage, now time.Time) ([]Record, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for attempt := 0; ; attempt++ {
		if !l.headLoaded {
			seq, hash, err := l.o.Store.LastAudit(ctx)
			if err != nil {
				return nil, fmt.Errorf("appending to the audit log: %w", err)
			}
			if hash == "" {
				hash = GenesisHash
			}
			l.headSeq, l.head, l.headLoaded = seq, hash, true
		}
		out := make([]Record, len(entries))
		rows := make([]storage.AuditRow, len(entries))
		prev := l.head
		for i, e := range entries {
			t := e.Time
			if t.IsZero() {
				t = now
			}
			r := Record{Seq: l.headSeq + 1 + int64(i), TS: t.UnixMilli(), Kind: e.Kind, Actor: e.Actor, Body: bodies[i], Prev: prev}
			r.Hash = r.ComputeHash()
			prev = r.Hash
			out[i] = r
			rows[i] = storage.AuditRow{Seq: r.Seq, TS: r.TS, Kind: string(r.Kind), Actor: r.Actor, Body: string(r.Body),
				PrevHash: r.Prev, Hash: r.Hash}
		}
		err := l.o.Store.InsertAudit(ctx, rows)
		if err == nil {
			l.headSeq, l.head = out[len(out)-1].Seq, out[len(out)-1].Hash
			return out, nil
		}
		// Not knowing whether the head moved, read it again next time.
		l.headLoaded = false
		if !storage.IsUniqueViolation(err) || attempt >= 100 {
			return nil, fmt.Errorf("appending to the audit log: %w", err)
		}
	}
}

// Record queues e for the background writer (its time is taken now). It
// waits while the queue is full rather than lose a record; after Close it
// appends at once.
func (l *Log) Record(e Entry) {
	if e.Time.IsZero() {
		e.Time = l.o.Now()
	}
	l.closeMu.RLock()
	if !l.closed {
		l.queue <- e
		l.closeMu.RUnlock()
		return
	}
	l.closeMu.RUnlock()
	if _, err := l.Append(context.Background(), e); err != nil {
		slog.Error("audit: a record was not written", "kind", e.Kind, "err", err)
	}
}

// Close writes what is queued and stops the writer.
func (l *Log) Close() {
	l.closeMu.Lock()
	if l.closed {
		l.closeMu.Unlock()
		return
	}
	l.closed = true
	close(l.queue)
	l.closeMu.Unlock()
	<-l.done
}

// maxBatch bounds the records the writer appends in one transaction;
// linger is how long it waits for more after the first (a message to five
// servers makes five records within milliseconds: one commit, not five).
const (
	maxBatch = 256
	linger   = 10 * time.Millisecond
)

// writer appends queued records in batches: one transaction for what
// queues within linger of the first (or while the previous one committed). A failed append (the store
// unreachable) is retried, in order, until it succeeds or the log closes
// (then it is logged as lost).
func (l *Log) writer() {
	defer close(l.done)
	var batch []Entry
	timer := time.NewTimer(linger)
	timer.Stop()
	for first := range l.queue {
		batch = append(batch, first)
		timer.Reset(linger)
	more:
		for len(batch) < maxBatch {
			select {
			case e, ok := <-l.queue:
				if !ok {
					break more
				}
				batch = append(batch, e)
			case <-timer.C:
				break more
			}
		}
		timer.Stop()
		for attempt := 0; len(batch) > 0; attempt++ {
			_, err := l.Append(context.Background(), batch...)
			if err == nil {
				break
			}
			if attempt >= 50 {
				slog.Error("audit: records lost after repeated store failures", "records", len(batch), "err", err)
				break
			}
			slog.Warn("audit: appending queued records; retrying", "records", len(batch), "err", err)
			time.Sleep(200 * time.Millisecond)
		}
		batch = batch[:0]
	}
}

// Records returns up to limit records from seq from on, in order.
func (l *Log) Records(ctx context.Context, from int64, limit int) ([]Record, error) {
	rows, err := l.o.Store.AuditRecords(ctx, from, limit)
	if err != nil {
		return nil, err
	}
	return toRecords(rows), nil
}

func toRecords(rows []storage.AuditRow) []Record {
	out := make([]Record, len(rows))
	for i, r := range rows {
		out[i] = Record{Seq: r.Seq, TS: r.TS, Kind: Kind(r.Kind), Actor: r.Actor, Body: json.RawMessage(r.Body), Prev: r.PrevHash, Hash: r.Hash}
	}
	return out
}

// Export calls fn with each record whose time is in [since, until), in
// sequence order, reading a page at a time.
func Export(ctx context.Context, store Store, since, until time.Time, fn func(Record) error) error {
	after := int64(0)
	for {
		rows, err := store.AuditRecordsBetween(ctx, since.UnixMilli(), until.UnixMilli(), after, 1000)
		if err != nil {
			return err
		}
		for _, r := range toRecords(rows) {
			if err := fn(r); err != nil {
				return err
			}
			after = r.Seq
		}
		if len(rows) < 1000 {
			return nil
		}
	}
}
