// Package ingest is the engine behind PUT /_matrix/federation/v1/send/{txnId}:
// it takes a transaction of PDUs from a remote server and runs each PDU
// through three stages, each a function of its own:
//
//  1. parse and check (parse.go): bounds, the room's version, the event's
//     format and ID, the origin's right to send it;
//  2. fetch missing (missing.go): unknown prev_events are asked of the origin
//     with /get_missing_events and fed through the same pipeline, oldest first;
//     a gap that remains is closed with the state at the missing prevs
//     (/state_ids and /event, state.go) when the writer accepts it;
//  3. authorize and persist: roomserver.Input (hashes, signatures, auth,
//     state resolution, soft-fail).
//
// A transaction is idempotent per (origin, transaction ID): its results are
// stored and a retry is answered from the store. Rooms are processed in
// parallel (bounded), the PDUs of one room in depth order, and one origin has
// at most MaxTxnsPerOrigin transactions in progress: more are refused with
// 429 M_LIMIT_EXCEEDED (servers send one transaction at a time per
// destination; a third concurrent one is not a well-behaved server).
//
// The transport reaches ingest only through the small interfaces below; the
// federation handlers call Engine.Transaction.
package ingest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/audit"
	"github.com/myelin-chat/myelin/internal/mxhttp"
	"github.com/myelin-chat/myelin/roomserver"
	"github.com/myelin-chat/myelin/storage"
)

// Limits of a transaction (server-server API, PUT /send).
const (
	MaxPDUs = 50
	MaxEDUs = 100
	// MaxEDUBytes bounds one EDU's content.
	MaxEDUBytes = 64 * 1024
	// MaxTxnsPerOrigin is how many transactions of one origin are processed at once.
	MaxTxnsPerOrigin = 2
	// RoomWorkers bounds the rooms processed in parallel across all transactions.
	RoomWorkers = 8
	// MaxBodyBytes bounds a transaction body (50 PDUs of 64 KiB, EDUs and
	// slack: our sender puts at most 1 MiB of EDU content in a transaction).
	MaxBodyBytes = MaxPDUs*roomserver.MaxPDUBytes + 2<<20
	// The window of stored transaction results.
	txnWindow     = 24 * time.Hour
	txnsPerOrigin = 1000
)

// Rooms is the writer: roomserver.Server.
type Rooms interface {
	Input(ctx context.Context, roomID id.RoomID, raw []byte, origin string) (*roomserver.Event, error)
	InputWithState(ctx context.Context, roomID id.RoomID, raw []byte, origin string, prevs []roomserver.PrevState, received []json.RawMessage) (*roomserver.Event, error)
	// InputGroup is Input for PDUs of one room that commit together, in
	// order; from the first whose prev event is unknown, ErrNotAttempted.
	InputGroup(ctx context.Context, roomID id.RoomID, raws [][]byte, origin string) []roomserver.GroupResult
}

// OutOfBand records membership changes of rooms we only hold a local user's
// out-of-band invite or knock of: *roomserver.Server.
type OutOfBand interface {
	ReceiveOutOfBandMember(ctx context.Context, origin string, raw []byte) (id.EventID, error)
}

// Store is what ingest reads and writes: *storage.DB.
type Store interface {
	GetRoom(ctx context.Context, roomID string) (*storage.RoomRow, error)
	GetEvents(ctx context.Context, ids []string) (map[string]*storage.Event, error)
	CurrentStateEvent(ctx context.Context, roomID, evType, stateKey string) (*storage.Event, error)
	GetFederationTxn(ctx context.Context, origin, txnID string) (map[string]string, error)
	PutFederationTxn(ctx context.Context, origin, txnID string, results map[string]string, nowMS, minTS int64, keep int) error
	RecordRejected(ctx context.Context, r storage.RejectedEvent, nowMS int64, keep int) error
	RejectedEvents(ctx context.Context, ids []string) (map[string]storage.RejectedEvent, error)
}

// Remote asks other servers for events (backed by the transport's client).
type Remote interface {
	// GetMissingEvents is POST /_matrix/federation/v1/get_missing_events/{roomID} to server.
	GetMissingEvents(ctx context.Context, server string, roomID id.RoomID, earliest, latest []id.EventID, limit int) ([]json.RawMessage, error)
}

// Options builds an Engine.
type Options struct {
	Rooms  Rooms
	Store  Store
	Remote Remote               // nil: missing prev events are never fetched
	State  StateRemote          // nil: no /state_ids fallback for a gap get_missing_events leaves
	Keys   roomserver.KeyGetter // verifies an origin's signature on an event it did not send
	// ServerACL applies a room's m.room.server_acl event to an origin
	// (federationapi.ACLAllows); nil: ACLs are not checked.
	ServerACL func(aclPDU []byte, server string) bool
	// OutOfBand takes a PDU of a room we do not know that ends a local
	// user's out-of-band invite or knock (roomserver.ReceiveOutOfBandMember;
	// roomserver.ErrUnknownRoom for any other). nil: every such PDU is
	// "room not found".
	OutOfBand OutOfBand
	// EDUs handles inbound EDUs by type (m.typing, m.receipt, m.presence,
	// m.direct_to_device, m.device_list_update, m.signing_key_update); a type
	// without a handler is counted and ignored. nil: every EDU is ignored.
	EDUs map[string]EDUHandler
	// Metrics registers the engine's metrics (nil: none).
	Metrics Registerer
	// Audit records each transaction processed (not a retry answered from
	// the store) as an inbound flow: *audit.Log, which queues the record
	// (nil: nothing recorded).
	Audit  Audit
	Logger *slog.Logger
	// Residency, when set, is asked about each PDU's room and each EDU
	// (residency.go): what it refuses is not processed, and each
	// transaction's refusals make one audit refusal record (actor ServerName).
	Residency  Residency
	ServerName string
}

// Audit records inbound flows and the residency policy's refusals (audit.Log).
type Audit interface {
	Flow(actor string, f audit.Flow)
	Refusal(actor string, r audit.Refusal)
}

// EDUHandler takes one inbound EDU's content from origin (already
// authenticated as the transaction's sender). It checks that origin may speak
// for the users and rooms the content names; an error is logged and counted,
// never fails the transaction (the spec gives EDUs no per-item answer).
type EDUHandler func(ctx context.Context, origin string, content json.RawMessage) error

// Engine processes inbound transactions.
type Engine struct {
	o       Options
	m       *metrics
	rooms   chan struct{} // room worker slots
	mu      sync.Mutex
	origins map[string]int       // transactions in progress per origin
	flight  map[txnKey]*inflight // transactions in progress, for a concurrent retry to wait on
}

type txnKey struct{ origin, txnID string }

type inflight struct {
	done    chan struct{}
	results map[string]string
	err     error
}

// serverName is our server, the actor of refusal records.
func (e *Engine) serverName() string { return e.o.ServerName }

// New returns an engine.
func New(o Options) (*Engine, error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	m, err := newMetrics(o.Metrics)
	if err != nil {
		return nil, fmt.Errorf("ingest metrics: %w", err)
	}
	return &Engine{o: o, m: m, rooms: make(chan struct{}, RoomWorkers), origins: map[string]int{}, flight: map[txnKey]*inflight{}}, nil
}

// Transaction processes a transaction body from origin (already authenticated
// by the X-Matrix middleware) and returns the per-PDU results: event ID to
// error ("" when accepted). An error is a *mxhttp.Error for the whole request.
func (e *Engine) Transaction(ctx context.Context, origin, txnID string, body []byte) (map[string]string, error) {
	txn, err := ParseTransaction(body)
	if err != nil {
		return nil, err
	}
	if prior, err := e.o.Store.GetFederationTxn(ctx, origin, txnID); err == nil {
		return prior, nil
	} else if !errors.Is(err, storage.ErrNotFound) {
		return nil, fmt.Errorf("reading transaction %s from %s: %w", txnID, origin, err)
	}
	key := txnKey{origin, txnID}
	e.mu.Lock()
	if f, ok := e.flight[key]; ok { // a retry while the first is in progress: wait for it
		e.mu.Unlock()
		select {
		case <-f.done:
			return f.results, f.err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if e.origins[origin] >= MaxTxnsPerOrigin {
		e.mu.Unlock()
		e.m.refused.Inc()
		return nil, mxhttp.LimitExceeded("Too many concurrent transactions from %s", origin).With("retry_after_ms", 1000)
	}
	e.origins[origin]++
	f := &inflight{done: make(chan struct{})}
	e.flight[key] = f
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		e.origins[origin]--
		if e.origins[origin] == 0 {
			delete(e.origins, origin)
		}
		delete(e.flight, key)
		e.mu.Unlock()
		close(f.done)
	}()

	// The same transaction may have finished between the lookup above and now.
	if prior, err := e.o.Store.GetFederationTxn(ctx, origin, txnID); err == nil {
		f.results = prior
		return prior, nil
	}
	start := time.Now()
	tp := e.newTxnPolicy(origin)
	f.results = e.process(ctx, origin, txn, tp)
	if ctx.Err() == nil {
		e.dispatchEDUs(ctx, origin, txn.EDUs, tp)
	}
	e.m.txnSeconds.Observe(time.Since(start).Seconds())
	if ctx.Err() != nil { // cut short: not recorded, the origin retries
		f.err = ctx.Err()
		return nil, f.err
	}
	e.recordFlow(origin, txnID, txn, len(body))
	e.recordRefusals(tp)
	now := time.Now()
	if err := e.o.Store.PutFederationTxn(ctx, origin, txnID, f.results, now.UnixMilli(), now.Add(-txnWindow).UnixMilli(), txnsPerOrigin); err != nil {
		e.o.Logger.Warn("recording an inbound transaction", "origin", origin, "txn", txnID, "err", err)
	}
	return f.results, nil
}

// process runs the stages over a parsed transaction's PDUs.
func (e *Engine) process(ctx context.Context, origin string, txn *Txn, tp *txnPolicy) map[string]string {
	results := map[string]string{}
	var mu sync.Mutex
	set := func(evID id.EventID, errStr string) {
		mu.Lock()
		results[string(evID)] = errStr
		mu.Unlock()
	}
	versions := map[id.RoomID]id.RoomVersion{}
	byRoom := map[id.RoomID][]*PDU{}
	var order []id.RoomID
	for _, raw := range txn.PDUs {
		p, err := e.Check(ctx, origin, raw, versions)
		if err != nil && reasonOf(err) == "unknown_room" && e.o.OutOfBand != nil {
			if evID, handled := e.outOfBand(ctx, origin, raw); handled != nil {
				set(evID, *handled)
				continue
			}
		}
		if err != nil && reasonOf(err) == "acl" && p != nil {
			// The room's ACL mirrors its zone (residency at creation): when
			// the policy refuses too, its reason and record say why.
			if reason, ok := tp.admitPDU(ctx, p); !ok {
				e.m.pdu(outcomeRejected, "residency")
				set(p.EventID, reason)
				continue
			}
		}
		if err != nil {
			e.m.pdu(outcomeRejected, reasonOf(err))
			if p != nil && p.EventID != "" {
				set(p.EventID, err.Error())
			}
			continue
		}
		if reason, ok := tp.admitPDU(ctx, p); !ok {
			e.m.pdu(outcomeRejected, "residency")
			set(p.EventID, reason)
			continue
		}
		if byRoom[p.RoomID] == nil {
			order = append(order, p.RoomID)
		}
		byRoom[p.RoomID] = append(byRoom[p.RoomID], p)
	}
	var wg sync.WaitGroup
	for _, roomID := range order {
		pdus := byRoom[roomID]
		sort.SliceStable(pdus, func(i, j int) bool { return pdus[i].Depth < pdus[j].Depth })
		select {
		case e.rooms <- struct{}{}:
		case <-ctx.Done():
			return results
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-e.rooms }()
			e.processRoom(ctx, origin, pdus, set)
		}()
	}
	wg.Wait()
	return results
}

// processRoom runs stages 2 and 3 on the checked PDUs of one room, in depth
// order. A run of PDUs whose prev events are all stored or earlier in the run
// (a chain, as a busy room sends) goes to the writer as one group, committed
// together; a PDU with a prev event unknown takes the single-event way
// (fetching what is missing first), as does the rest of a group from the
// first member whose prev event the group did not accept. Either way each
// PDU is processed after the ones before it, as one at a time would be.
func (e *Engine) processRoom(ctx context.Context, origin string, pdus []*PDU, set func(id.EventID, string)) {
	known, err := e.storedPrevs(ctx, pdus)
	if err != nil {
		e.o.Logger.Warn("reading prev events of an inbound transaction", "origin", origin, "err", err)
		known = map[id.EventID]bool{} // every PDU the single-event way
	}
	single := func(p *PDU) {
		res := e.processPDU(ctx, origin, p)
		set(p.EventID, res)
		if res == "" {
			known[p.EventID] = true
		}
	}
	for len(pdus) > 0 && ctx.Err() == nil {
		var group []*PDU
		inGroup := map[id.EventID]bool{}
	run:
		for _, p := range pdus {
			for _, x := range p.PrevEvents {
				if !known[x] && !inGroup[x] {
					break run
				}
			}
			group = append(group, p)
			inGroup[p.EventID] = true
		}
		if len(group) < 2 {
			single(pdus[0])
			pdus = pdus[1:]
			continue
		}
		raws := make([][]byte, len(group))
		for i, p := range group {
			raws[i] = p.Raw
		}
		n := 0
		for i, r := range e.o.Rooms.InputGroup(ctx, group[0].RoomID, raws, origin) {
			if errors.Is(r.Err, roomserver.ErrNotAttempted) {
				break
			}
			res := e.outcome(ctx, group[i], origin, r.Event, r.Err)
			set(group[i].EventID, res)
			if res == "" {
				known[group[i].EventID] = true
			}
			n++
		}
		pdus = pdus[n:]
		if n < len(group) { // group[n] has a prev the group did not accept
			single(pdus[0])
			pdus = pdus[1:]
		}
	}
}

// storedPrevs reads, in one query, which prev events of pdus are stored (not
// as outliers).
func (e *Engine) storedPrevs(ctx context.Context, pdus []*PDU) (map[id.EventID]bool, error) {
	var want []string
	seen := map[id.EventID]bool{}
	for _, p := range pdus {
		for _, x := range p.PrevEvents {
			if !seen[x] {
				seen[x] = true
				want = append(want, string(x))
			}
		}
	}
	known := map[id.EventID]bool{}
	if len(want) == 0 {
		return known, nil
	}
	got, err := e.o.Store.GetEvents(ctx, want)
	if err != nil {
		return nil, err
	}
	for _, se := range got {
		if !se.Outlier {
			known[id.EventID(se.EventID)] = true
		}
	}
	return known, nil
}

// processPDU runs stages 2 and 3 on one checked PDU; "" when accepted.
func (e *Engine) processPDU(ctx context.Context, origin string, p *PDU) (result string) {
	defer func() {
		if r := recover(); r != nil {
			e.o.Logger.Error("panic processing an inbound PDU", "event", p.EventID, "panic", r)
			e.m.pdu(outcomeRejected, "internal")
			result = "internal error"
		}
	}()
	if err := e.FetchMissing(ctx, origin, p); err != nil {
		e.m.pdu(outcomeRejected, reasonOf(err))
		return err.Error()
	}
	return e.Persist(ctx, origin, p)
}

// Persist is stage 3: the writer authorizes and stores the PDU. A soft-failed
// event is stored as such and accepted.
func (e *Engine) Persist(ctx context.Context, origin string, p *PDU) string {
	ev, err := e.o.Rooms.Input(ctx, p.RoomID, p.Raw, origin)
	return e.outcome(ctx, p, origin, ev, err)
}

// outcome is the writer's answer for p as its result, counted in the metrics.
func (e *Engine) outcome(ctx context.Context, p *PDU, origin string, ev *roomserver.Event, err error) string {
	if err != nil {
		if !errors.Is(err, roomserver.ErrRejected) {
			e.o.Logger.Warn("storing an inbound PDU", "event", p.EventID, "origin", origin, "err", err)
			e.m.pdu(outcomeRejected, "internal")
			return "internal error"
		}
		e.m.pdu(outcomeRejected, reasonOf(err))
		e.remember(ctx, p, err)
		return err.Error()
	}
	if ev.SoftFailed {
		e.m.pdu(outcomeSoftFailed, "auth_current_state")
	} else {
		e.m.pdu(outcomeAccepted, "")
	}
	return ""
}

// outOfBand offers a PDU of an unknown room to Options.OutOfBand: nil when it
// is not for it (the PDU stays "room not found"), else the PDU's result.
func (e *Engine) outOfBand(ctx context.Context, origin string, raw []byte) (id.EventID, *string) {
	evID, err := e.o.OutOfBand.ReceiveOutOfBandMember(ctx, origin, raw)
	result := ""
	switch {
	case errors.Is(err, roomserver.ErrUnknownRoom) || evID == "":
		return "", nil
	case err == nil:
		e.m.pdu(outcomeAccepted, "")
	case errors.Is(err, roomserver.ErrRejected):
		e.m.pdu(outcomeRejected, reasonOf(err))
		result = err.Error()
	default:
		e.o.Logger.Warn("recording an out-of-band membership", "event", evID, "origin", origin, "err", err)
		e.m.pdu(outcomeRejected, "internal")
		result = "internal error"
	}
	return evID, &result
}

// recordFlow records a processed transaction from origin: its PDUs per room
// (as the PDUs name them; an ID that is no room ID counts as "invalid") and
// EDUs per type (types no data kind names count as "other", so an origin
// cannot fill records with names of its own), and the body's bytes.
func (e *Engine) recordFlow(origin, txnID string, txn *Txn, bytes int) {
	if e.o.Audit == nil {
		return
	}
	f := audit.Flow{Direction: audit.Inbound, Server: origin, TxnID: txnID, PDUs: len(txn.PDUs), Bytes: bytes}
	if len(txnID) > 255 {
		f.TxnID = txnID[:255]
	}
	for _, raw := range txn.PDUs {
		room := gjson.GetBytes(raw, "room_id").Str
		if !roomserver.ValidRoomID(room) || len(room) > 255 {
			room = "invalid"
		}
		if f.Rooms == nil {
			f.Rooms = map[string]int{}
		}
		f.Rooms[room]++
	}
	for _, edu := range txn.EDUs {
		t := edu.Type
		if audit.DataKindOfEDU(t) == audit.DataOther {
			t = audit.DataOther
		}
		if f.EDUs == nil {
			f.EDUs = map[string]int{}
		}
		f.EDUs[t]++
	}
	e.o.Audit.Flow(origin, f)
}
