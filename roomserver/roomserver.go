// Package roomserver is the one writer of room events. Every event, built
// locally for a client or (later) received over federation, enters through
// one input path that is serialized per room: a worker per room takes queued
// requests in batches, builds and authorizes each event against the room's
// cached current state, stores its state as a delta snapshot, and commits the
// whole batch in one transaction (group commit) before notifying /sync.
// Nothing else runs in the commit: work that follows new events (the push
// rules of upgraded rooms; later the federation sender) tails the stream
// from its own cursor (internal/follower).
package roomserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"maunium.net/go/mautrix/event"
	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/internal/config"
	"github.com/myelin-chat/myelin/internal/recovery"
	"github.com/myelin-chat/myelin/roomserver/stateres"
	"github.com/myelin-chat/myelin/storage"
)

// KeyGetter fetches server signing keys for verifying remote events
// (implemented by the federation key fetcher).
type KeyGetter interface {
	GetKey(serverName string, keyID id.KeyID, minValidUntil time.Time) (key id.SigningKey, validUntil time.Time, err error)
}

// Notifier wakes the /sync long-polls of the users a new position concerns
// (internal/notifier).
type Notifier interface {
	Notify(pos int64, users ...string)
}

// Server is the roomserver.
type Server struct {
	db         Store
	stream     Stream
	cfg        *config.Config
	key        *mfed.SigningKey
	serverName string
	notifier   Notifier

	keys        KeyGetter
	noticeRooms NoticeRooms

	workersMu sync.Mutex
	workers   map[id.RoomID]*worker

	snapMu     sync.Mutex
	lastSnapID int64

	batchSize int // Options.BatchSize
}

// keyframeInterval is the shortest snapshot chain after which a snapshot
// holds the whole state again (a keyframe).
const keyframeInterval = 100

// needKeyframe decides whether the next state snapshot, after chainLen
// one-entry deltas since the last keyframe, is a keyframe of the room's
// stateSize entries. Only once the deltas add up to half the state: then
// reading a state costs at most 1.5 times its size, and writing costs at most
// 3 rows per state change amortised. (A keyframe every keyframeInterval
// changes alone would write O(n²) rows as a room's state grows to n entries:
// a room created with thousands of state events, or a large room's joins.)
func needKeyframe(chainLen, stateSize int) bool {
	n := chainLen + 1
	return n >= keyframeInterval && 2*n >= stateSize
}

// Options are what the roomserver is built from.
type Options struct {
	Store      Store
	Stream     Stream // the store's (*storage.DB).Stream
	Config     *config.Config
	SigningKey *mfed.SigningKey
	Notifier   Notifier // nil: nobody is woken (tests)
	// Keys verifies remote signatures (federation's key fetcher); nil:
	// events signed by other servers are refused.
	Keys KeyGetter
	// NoticeRooms knows each user's server notices room (the store's), whose
	// invite cannot be rejected; nil: there are none.
	NoticeRooms NoticeRooms
	// BatchSize caps how many queued requests of a room commit together
	// (group commit); 0: defaultBatchSize.
	BatchSize int
}

// defaultBatchSize is Options.BatchSize when unset.
const defaultBatchSize = 256

// New builds the roomserver.
func New(ctx context.Context, o Options) (*Server, error) {
	last, err := o.Store.MaxSnapshotID(ctx)
	if err != nil {
		return nil, fmt.Errorf("roomserver: %w", err)
	}
	batchSize := o.BatchSize
	if batchSize <= 0 {
		batchSize = defaultBatchSize
	}
	return &Server{
		db: o.Store, stream: o.Stream, cfg: o.Config, key: o.SigningKey, serverName: o.Config.ServerName, notifier: o.Notifier,
		keys: o.Keys, noticeRooms: o.NoticeRooms,
		workers: map[id.RoomID]*worker{}, lastSnapID: last, batchSize: batchSize,
	}, nil
}

func (s *Server) nextSnapshotID() int64 {
	s.snapMu.Lock()
	defer s.snapMu.Unlock()
	s.lastSnapID++
	return s.lastSnapID
}

func (s *Server) isLocal(u id.UserID) bool { return u.Homeserver() == s.serverName }

// ---- per-room workers ----

// maker produces the event to build from the room's current state (nil
// state for a room being created).
type maker func(rs *roomState) (*proto, error)

type request struct {
	ctx    context.Context
	create *Event       // the create event of a room being created
	makers []maker      // local events, all-or-nothing
	remote *remoteInput // or one remote event
	// or a room joined over federation, to create (ImportJoin)
	imported *importInput
	txn      *storage.TxnRecord
	done     chan result
	// more: requests queued with this one and processed right after it, in
	// one batch (InputGroup).
	more []*request
}

type result struct {
	events []*Event
	err    error
}

type worker struct {
	roomID  id.RoomID
	queue   chan *request
	pending int // requests handed to the worker and not finished; guarded by Server.workersMu
	state   *roomState
	// applying is the index in the current batch of the request being
	// applied, -1 outside that step: what a panic is blamed on.
	applying int
}

// submit queues a request for the room and waits for its result.
func (s *Server) submit(ctx context.Context, roomID id.RoomID, req *request) ([]*Event, error) {
	req.ctx = context.WithoutCancel(ctx) // once queued, the event is processed even if the client goes away
	req.done = make(chan result, 1)
	s.workersMu.Lock()
	w := s.workers[roomID]
	if w == nil {
		w = &worker{roomID: roomID, queue: make(chan *request, 4096)}
		s.workers[roomID] = w
		go s.run(w)
	}
	w.pending++
	s.workersMu.Unlock()
	w.queue <- req
	select {
	case r := <-req.done:
		return r.events, r.err
	case <-ctx.Done():
		// The request still completes; the caller no longer waits.
		return nil, ctx.Err()
	}
}

// submitGroup queues requests for the room as one unit, so the worker takes
// them into one batch in this order, and waits for all their results.
func (s *Server) submitGroup(ctx context.Context, roomID id.RoomID, reqs []*request) []result {
	for _, req := range reqs {
		req.ctx = context.WithoutCancel(ctx)
		req.done = make(chan result, 1)
	}
	head := reqs[0]
	head.more = reqs[1:]
	s.workersMu.Lock()
	w := s.workers[roomID]
	if w == nil {
		w = &worker{roomID: roomID, queue: make(chan *request, 4096)}
		s.workers[roomID] = w
		go s.run(w)
	}
	w.pending += len(reqs)
	s.workersMu.Unlock()
	w.queue <- head
	out := make([]result, len(reqs))
	for i, req := range reqs {
		select {
		case out[i] = <-req.done:
		case <-ctx.Done():
			for j := i; j < len(reqs); j++ {
				out[j] = result{nil, ctx.Err()}
			}
			return out
		}
	}
	return out
}

func (s *Server) run(w *worker) {
	idle := time.NewTimer(time.Minute)
	defer idle.Stop()
	for {
		select {
		case req := <-w.queue:
			batch := append([]*request{req}, req.more...)
			// Group commit: take whatever else is already queued. Requests
			// that create a room or carry several events run alone.
			if !req.alone() {
			drain:
				for len(batch) < s.batchSize {
					select {
					case r := <-w.queue:
						if r.alone() {
							s.processAndRelease(w, batch)
							batch = []*request{r}
							break drain
						}
						batch = append(batch, r)
						batch = append(batch, r.more...)
					default:
						break drain
					}
				}
			}
			s.processAndRelease(w, batch)
			idle.Reset(time.Minute)
		case <-idle.C:
			s.workersMu.Lock()
			if w.pending == 0 {
				delete(s.workers, w.roomID)
				s.workersMu.Unlock()
				return
			}
			s.workersMu.Unlock()
			idle.Reset(time.Minute)
		}
	}
}

// alone: room creation, multi-event requests, remote events with the state
// of their gap (InputWithState, which stages outliers) and imports are not
// grouped with others. Remote events are: their prev and auth events are
// looked up in the batch before the store.
func (r *request) alone() bool {
	return r.create != nil || len(r.makers) > 1 || (r.remote != nil && r.remote.gap != nil) || r.imported != nil
}

// processAndRelease processes a batch, surviving panics: a panic while one
// request's events are applied fails that request alone, and the rest of the
// batch is processed again from the stored state (nothing was committed); a
// panic anywhere else fails every request not yet answered. Either way the
// worker goes on to the next requests.
func (s *Server) processAndRelease(w *worker, batch []*request) {
	n := len(batch)
	for len(batch) > 0 {
		failed := s.processRecovering(w, batch)
		if failed < 0 {
			break
		}
		batch = slices.Delete(slices.Clone(batch), failed, failed+1)
	}
	s.workersMu.Lock()
	w.pending -= n
	s.workersMu.Unlock()
}

// processRecovering runs process. After a panic it answers the failed
// requests and returns the index of the request to drop before processing
// the rest again, or -1 when the batch is done with.
func (s *Server) processRecovering(w *worker, batch []*request) (retryWithout int) {
	w.applying = -1
	defer func() {
		v := recover()
		if v == nil {
			return
		}
		err := recovery.Recovered(recovery.RoomWorker, v, "room", w.roomID)
		w.state = nil // the cache may hold half-applied changes; reload it
		if i := w.applying; i >= 0 {
			answer(batch[i], result{nil, err})
			retryWithout = i
			return
		}
		for _, req := range batch {
			answer(req, result{nil, err})
		}
		retryWithout = -1
	}()
	return s.process(w, batch)
}

// answer gives a request its result unless it already has one (done holds
// one result, read once).
func answer(req *request, r result) {
	select {
	case req.done <- r:
	default:
	}
}

// process applies a batch of requests to the room and commits them together.
// A remote event that fails after staging part of itself fails alone: it is
// answered and its index returned, for the rest to be processed again
// (nothing was committed); otherwise it returns -1.
func (s *Server) process(w *worker, batch []*request) (retryWithout int) {
	for _, req := range batch {
		if req.remote != nil && req.remote.group != nil {
			req.remote.group.reset() // processed again from the start
		}
	}
	ctx := context.Background()
	b := &batchWrite{s: s, write: &storage.RoomWrite{RoomID: string(w.roomID), StateChanges: storage.StateMap{}}, txns: map[string]id.EventID{}}
	type outcome struct {
		events []*Event
		err    error
	}
	outcomes := make([]outcome, len(batch))
	for i, req := range batch {
		if w.state == nil && req.create == nil && req.imported == nil {
			rs, err := s.loadRoom(ctx, w.roomID)
			if err != nil {
				for j := i; j < len(batch); j++ {
					outcomes[j].err = err
				}
				break
			}
			w.state = rs
		}
		var evs []*Event
		var err error
		w.applying = i
		if req.imported != nil {
			evs, err = s.applyImport(ctx, w, b, req.imported)
		} else if req.remote != nil {
			nEvents, nSnaps := len(b.events), len(b.write.Snapshots)
			var ev *Event
			ev, err = s.applyRemote(ctx, w, b, req.remote)
			if ev != nil {
				evs = []*Event{ev}
			}
			if err != nil && !req.alone() && (len(b.events) != nEvents || len(b.write.Snapshots) != nSnaps) {
				// Failed half-staged: the batch and cache hold part of it.
				w.applying = -1
				w.state = nil
				answer(req, result{nil, err})
				return i
			}
		} else {
			evs, err = s.applyLocal(ctx, w, b, req)
		}
		w.applying = -1
		if err != nil && req.alone() {
			// A multi-event request runs alone: drop whatever it changed.
			w.state = nil
			s.reply(batch, func(int) ([]*Event, error) { return nil, err })
			return -1
		}
		outcomes[i] = outcome{evs, err}
	}
	if len(b.events) > 0 {
		if err := b.commit(ctx, w); err != nil {
			slog.Error("roomserver: commit failed", "room", w.roomID, "err", err)
			w.state = nil // the cache may hold uncommitted changes
			for i := range outcomes {
				if outcomes[i].err == nil {
					outcomes[i] = outcome{nil, fmt.Errorf("storing events: %w", err)}
				}
			}
		}
	}
	s.reply(batch, func(i int) ([]*Event, error) { return outcomes[i].events, outcomes[i].err })
	return -1
}

func (s *Server) reply(batch []*request, get func(int) ([]*Event, error)) {
	for i, req := range batch {
		evs, err := get(i)
		req.done <- result{evs, err}
	}
}

// ---- room state cache ----

// roomState is a room's current state as the worker keeps it in memory.
type roomState struct {
	id          id.RoomID
	version     id.RoomVersion
	state       map[pdu.StateKey]*Event
	snapshot    int64
	chainLen    int
	extremities []*Event
	depth       int64
	creator     id.UserID
	created     bool     // the rooms row exists
	locals      []string // cached localMembers; nil after a membership change
}

func (rs *roomState) get(evType, stateKey string) *Event {
	if rs == nil {
		return nil
	}
	return rs.state[pdu.StateKey{Type: evType, StateKey: stateKey}]
}

func (rs *roomState) membership(u id.UserID) string {
	if e := rs.get("m.room.member", string(u)); e != nil {
		return e.Membership()
	}
	return "leave"
}

// localMembers lists local users that are joined or invited.
func (s *Server) localMembers(rs *roomState) []string {
	if rs.locals != nil {
		return rs.locals
	}
	out := []string{}
	for k, e := range rs.state {
		if k.Type != "m.room.member" {
			continue
		}
		m := e.Membership()
		if (m == "join" || m == "invite") && s.isLocal(id.UserID(k.StateKey)) {
			out = append(out, k.StateKey)
		}
	}
	rs.locals = out
	return out
}

func (s *Server) loadRoom(ctx context.Context, roomID id.RoomID) (*roomState, error) {
	row, err := s.db.GetRoom(ctx, string(roomID))
	if errors.Is(err, storage.ErrNotFound) {
		return nil, unknownRoom()
	}
	if err != nil {
		return nil, fmt.Errorf("loading room %s: %w", roomID, err)
	}
	version := id.RoomVersion(row.RoomVersion)
	stored, err := s.db.CurrentStateEvents(ctx, string(roomID))
	if err != nil {
		return nil, fmt.Errorf("loading state of %s: %w", roomID, err)
	}
	rs := &roomState{id: roomID, version: version, state: make(map[pdu.StateKey]*Event, len(stored)),
		snapshot: row.StateSnapshot, chainLen: row.ChainLen, depth: row.MaxDepth, creator: id.UserID(row.Creator), created: true}
	for _, se := range stored {
		e, err := eventFromStored(version, se)
		if err != nil {
			return nil, err
		}
		rs.state[e.Key()] = e
	}
	extrem, err := s.db.GetEvents(ctx, row.Extremities)
	if err != nil {
		return nil, err
	}
	for _, x := range row.Extremities {
		if se, ok := extrem[x]; ok {
			e, err := eventFromStored(version, se)
			if err != nil {
				return nil, err
			}
			rs.extremities = append(rs.extremities, e)
		}
	}
	return rs, nil
}

// RoomGetter reads a room's row (*storage.DB, or a module's Store).
type RoomGetter interface {
	GetRoom(ctx context.Context, roomID string) (*storage.RoomRow, error)
}

// RoomVersion returns a known room's version, without going through its
// worker; ErrUnknownRoom for a room the server has no state for. The writer
// and roomview ask it alike; each endpoint maps an unknown room to its answer.
func RoomVersion(ctx context.Context, rooms RoomGetter, roomID id.RoomID) (id.RoomVersion, error) {
	row, err := rooms.GetRoom(ctx, string(roomID))
	if errors.Is(err, storage.ErrNotFound) {
		return "", unknownRoom()
	}
	if err != nil {
		return "", fmt.Errorf("reading room %s: %w", roomID, err)
	}
	return id.RoomVersion(row.RoomVersion), nil
}

// unknownRoom is the ErrUnknownRoom answered where nothing more specific is:
// a not-found error with the message clients read.
func unknownRoom() error { return NewError(ErrUnknownRoom, "Unknown room") }

// ---- batch building ----

type batchWrite struct {
	s      *Server
	write  *storage.RoomWrite
	events []*Event
	notify map[string]bool
	txns   map[string]id.EventID // txn key → event, within this batch
	// remote: remote events accepted (or soft-failed) in this batch, by ID,
	// for the events after them to use as prev and auth events.
	remote map[id.EventID]*Event
	// snapStates: the full state of each keyframe staged in this batch.
	snapStates map[int64]stateres.StateMap
	keys       map[string]keyMemo // batchWrite.getKey
	// per-event bookkeeping filled in at commit
	memberEvents []*Event
	stateEvents  []*Event
	txnFor       map[id.EventID]*storage.TxnRecord
	// prevMembership: each user whose membership the batch changes, with
	// their membership before it ("" for none), from the cached state; the
	// store moves the room's joined-server counts by the difference.
	prevMembership map[string]string
}

// notePrevMembership remembers userID's membership before the batch, the first
// time the batch changes it (call it before changing rs.state).
func (b *batchWrite) notePrevMembership(rs *roomState, userID string) {
	if b.prevMembership == nil {
		b.prevMembership = map[string]string{}
	}
	if _, ok := b.prevMembership[userID]; ok {
		return
	}
	prev := ""
	if e := rs.get("m.room.member", userID); e != nil {
		prev = e.Membership()
	}
	b.prevMembership[userID] = prev
}

func txnKey(t *storage.TxnRecord) string { return t.UserID + "\x00" + t.DeviceID + "\x00" + t.TxnID }

// addEvent appends an accepted event to the batch and applies it to the cached state.
func (b *batchWrite) addEvent(rs *roomState, e *Event, stateBefore int64, softFailed bool) {
	e.StateBefore, e.StateAfter, e.SoftFailed = stateBefore, stateBefore, softFailed
	if b.notify == nil {
		b.notify = map[string]bool{}
	}
	if e.IsState() && !softFailed {
		snapID := b.s.nextSnapshotID()
		snap := storage.Snapshot{ID: snapID, RoomID: string(rs.id)}
		if old := rs.state[e.Key()]; old != nil {
			e.ReplacesState = old.ID
		}
		if e.PDU.Type == "m.room.member" {
			b.notePrevMembership(rs, *e.PDU.StateKey)
		}
		rs.state[e.Key()] = e
		key := storage.StateKey(e.Key())
		if rs.snapshot == 0 || needKeyframe(rs.chainLen, len(rs.state)) {
			snap.Entries = make(storage.StateMap, len(rs.state))
			for k, se := range rs.state {
				snap.Entries[storage.StateKey(k)] = string(se.ID)
			}
			snap.ChainLen = 0
		} else {
			snap.Parent = rs.snapshot
			snap.ChainLen = rs.chainLen + 1
			snap.Entries = storage.StateMap{key: string(e.ID)}
		}
		b.write.Snapshots = append(b.write.Snapshots, snap)
		rs.snapshot, rs.chainLen = snapID, snap.ChainLen
		e.StateAfter = snapID
		b.write.StateChanges[key] = string(e.ID)
		b.stateEvents = append(b.stateEvents, e)
		if e.PDU.Type == "m.room.member" {
			rs.locals = nil
			b.memberEvents = append(b.memberEvents, e)
			if b.s.isLocal(id.UserID(*e.PDU.StateKey)) {
				b.notify[*e.PDU.StateKey] = true
			}
		}
	}
	if !softFailed {
		rs.extremities = []*Event{e}
		if e.PDU.Depth > rs.depth {
			rs.depth = e.PDU.Depth
		}
	}
	b.events = append(b.events, e)
}

func (b *batchWrite) commit(ctx context.Context, w *worker) error {
	rs := w.state
	first, finish, err := b.s.stream.AllocateN(len(b.events))
	if err != nil {
		return err
	}
	defer finish()
	notifyPos := int64(0) // the last position of the batch outside outliers
	for i, e := range b.events {
		e.StreamPos = first + int64(i)
		if e.Outlier {
			e.StreamPos = storage.OutlierPos(e.StreamPos)
		} else {
			notifyPos = e.StreamPos
		}
	}
	wr := b.write
	if !rs.created {
		wr.NewRoom = &storage.RoomRow{RoomID: string(rs.id), RoomVersion: string(rs.version), Creator: string(rs.creator), CreatedTS: time.Now().UnixMilli()}
	}
	for _, e := range b.events {
		relatesTo, relType := relation(e)
		se := storage.Event{
			EventID: string(e.ID), RoomID: string(rs.id), StreamPos: e.StreamPos, Depth: e.PDU.Depth, Type: e.PDU.Type,
			StateKey: e.PDU.StateKey, Sender: string(e.PDU.Sender), OriginServerTS: e.PDU.OriginServerTS, JSON: e.JSON,
			StateBefore: e.StateBefore, StateAfter: e.StateAfter, SoftFailed: e.SoftFailed, RelatesTo: relatesTo, RelType: relType,
			ReplacesState: string(e.ReplacesState), Outlier: e.Outlier, AfterGap: e.AfterGap, Relay: e.Relay,
		}
		if e.PDU.Type == "m.room.member" && e.PDU.StateKey != nil {
			se.Membership = e.Membership()
		}
		if t := b.txnFor[e.ID]; t != nil {
			wr.Txns = append(wr.Txns, *t)
			se.TxnDevice, se.TxnID = t.DeviceID, t.TxnID
			if t.ClientTxnID != "" {
				se.TxnID = t.ClientTxnID
			}
		}
		wr.Events = append(wr.Events, se)
	}
	for _, e := range b.memberEvents {
		wr.Memberships = append(wr.Memberships, storage.MembershipChange{
			UserID: *e.PDU.StateKey, Membership: e.Membership(), EventID: string(e.ID), StreamPos: e.StreamPos})
	}
	// Only the last change per user matters for memberships (StateChanges,
	// a map, holds only the last change per slot already).
	wr.Memberships = dedupeMemberships(wr.Memberships)
	for i := range wr.Memberships {
		wr.Memberships[i].Prev = b.prevMembership[wr.Memberships[i].UserID]
	}
	wr.Snapshot = rs.snapshot
	wr.MaxDepth = rs.depth
	wr.Encrypted = rs.get("m.room.encryption", "") != nil // not indexed for search
	for _, x := range rs.extremities {
		wr.Extremities = append(wr.Extremities, string(x.ID))
	}
	if err := b.s.db.WriteRoomEvents(ctx, wr); err != nil {
		return err
	}
	rs.created = true
	finish()
	// The positions are finished: wake the /sync of the room's local joined
	// and invited members, and of the local users whose membership the batch
	// changed (who may no longer be either).
	users := b.s.localMembers(rs)
	if len(b.notify) > 0 {
		users = append([]string(nil), users...)
	}
	for u := range b.notify {
		users = append(users, u)
	}
	if b.s.notifier != nil && notifyPos > 0 {
		b.s.notifier.Notify(notifyPos, users...)
	}
	return nil
}

func dedupeMemberships(in []storage.MembershipChange) []storage.MembershipChange {
	last := map[string]int{}
	for i, m := range in {
		last[m.UserID] = i
	}
	out := in[:0:0]
	for i, m := range in {
		if last[m.UserID] == i {
			out = append(out, m)
		}
	}
	return out
}

// snapshotState loads a room's current state from the store, outside its
// worker, for permission checks of requests that write no event.
func (s *Server) snapshotState(ctx context.Context, roomID id.RoomID) (*roomState, error) {
	return s.loadRoom(ctx, roomID)
}

func eventType(t string, state bool) event.Type {
	if state {
		return event.Type{Type: t, Class: event.StateEventType}
	}
	return event.Type{Type: t, Class: event.MessageEventType}
}
