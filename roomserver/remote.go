package roomserver

import (
	"context"
	jsonv2 "encoding/json/v2"
	"errors"
	"fmt"
	"maps"
	"strings"
	"time"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/roomserver/authrules"
	"github.com/myelin-chat/myelin/roomserver/stateres"
	"github.com/myelin-chat/myelin/storage"
)

// remoteInput is an event received over federation.
type remoteInput struct {
	raw    []byte
	origin string
	gap    *gapState    // InputWithState: the state of prev events the store does not know
	group  *remoteGroup // InputGroup: submitted with others, in order
	parsed *Event       // a group member parsed ahead of its turn (remoteGroup.stored)
	relay  bool         // taken through send_join/leave/knock: the sender passes it on
}

// remoteGroup is the events of one InputGroup call. Once one of them finds
// a prev event unknown (a member of the group that was not accepted), it and
// the members after it are not attempted.
type remoteGroup struct {
	stopped bool
	members []*remoteInput
	// stored: the members the store holds already, read in one query when
	// the first member's turn comes (nil before); with each member's parsed
	// event (remoteInput.parsed). Both are reset when the batch is processed
	// again (process), for it to start from the store and the raw JSON.
	stored map[string]*storage.Event
}

// reset forgets what processing the group found, for processing it again.
func (g *remoteGroup) reset() {
	g.stopped, g.stored = false, nil
	for _, m := range g.members {
		m.parsed = nil
	}
}

// storedEvent reads a member from the store: for the first member asked, all
// members in one query.
func (s *Server) storedEvent(ctx context.Context, version id.RoomVersion, in *remoteInput, evID id.EventID) (*storage.Event, error) {
	g := in.group
	if g == nil {
		return s.db.GetEvent(ctx, string(evID))
	}
	if g.stored == nil {
		ids := []string{string(evID)}
		for _, m := range g.members {
			if m.parsed == nil {
				m.parsed, _ = parseEvent(version, "", m.raw) // a member that does not parse is rejected at its turn
			}
			if m.parsed != nil {
				ids = append(ids, string(m.parsed.ID))
			}
		}
		got, err := s.db.GetEvents(ctx, ids)
		if err != nil {
			return nil, err
		}
		g.stored = got
	}
	if se, ok := g.stored[string(evID)]; ok {
		return se, nil
	}
	return nil, storage.ErrNotFound
}

// ErrNotAttempted is InputGroup's answer for an event it did not process
// because a prev event was unknown when its turn came.
var ErrNotAttempted = errors.New("not attempted: a prev event is unknown")

// ErrRejected wraps the reason a remote event was rejected.
var ErrRejected = errors.New("event rejected")

// Input accepts a PDU received from origin for a room this server is in. It
// checks the content hash (redacting on mismatch, as the spec says) and the
// signatures, authorizes the event against its auth events and the state
// before it (resolving the states of its prev_events), soft-fails it when the
// current state does not allow it, and persists it like a local event.
// Prev and auth events must already be known (the federation module fetches
// missing ones first). It returns the stored event.
func (s *Server) Input(ctx context.Context, roomID id.RoomID, raw []byte, origin string) (*Event, error) {
	return s.input(ctx, roomID, &remoteInput{raw: raw, origin: origin})
}

func (s *Server) input(ctx context.Context, roomID id.RoomID, in *remoteInput) (*Event, error) {
	if len(in.raw) > MaxPDUBytes {
		return nil, fmt.Errorf("%w: PDU exceeds %d bytes", ErrRejected, MaxPDUBytes)
	}
	evs, err := s.submit(ctx, roomID, &request{remote: in})
	if err != nil {
		return nil, err
	}
	return evs[0], nil
}

// GroupResult is one event's outcome in InputGroup.
type GroupResult struct {
	Event *Event
	Err   error
}

// InputGroup is Input for several PDUs of one room from origin, processed in
// the order given and committed together (one write transaction, and one
// fsync, for the lot): each may have the events before it as prev and auth
// events. Each gets its own result, as Input would give it: a rejected event
// rejects itself alone. An event one of whose prev events is unknown when its
// turn comes (typically: an earlier member of the group was rejected) is not
// processed, nor are the members after it: they get ErrNotAttempted, and the
// caller gives them to Input (after fetching what is missing) in order. The
// commit covers the whole group: nothing is stored before it, so a crash
// loses all of it.
func (s *Server) InputGroup(ctx context.Context, roomID id.RoomID, raws [][]byte, origin string) []GroupResult {
	out := make([]GroupResult, len(raws))
	g := &remoteGroup{}
	var reqs []*request
	var idx []int
	for i, raw := range raws {
		if len(raw) > MaxPDUBytes {
			out[i].Err = fmt.Errorf("%w: PDU exceeds %d bytes", ErrRejected, MaxPDUBytes)
			continue
		}
		in := &remoteInput{raw: raw, origin: origin, group: g}
		g.members = append(g.members, in)
		reqs = append(reqs, &request{remote: in})
		idx = append(idx, i)
	}
	if len(reqs) == 0 {
		return out
	}
	res := s.submitGroup(ctx, roomID, reqs)
	for j, r := range res {
		out[idx[j]] = GroupResult{Err: r.err}
		if r.err == nil {
			out[idx[j]].Event = r.events[0]
		}
	}
	return out
}

// keyMemo is a signing key the batch fetched, valid until validUntil.
type keyMemo struct {
	key        id.SigningKey
	validUntil time.Time
}

// getKey is Server.getKey remembered for the batch: a chain from one server
// asks for the same key for every event (each a lookup in the key store).
// A remembered key serves only a request it is valid long enough for.
func (b *batchWrite) getKey(serverName string, keyID id.KeyID, minValidUntil time.Time) (id.SigningKey, time.Time, error) {
	k := serverName + "\x00" + string(keyID)
	if m, ok := b.keys[k]; ok && !m.validUntil.Before(minValidUntil) {
		return m.key, m.validUntil, nil
	}
	key, until, err := b.s.getKey(serverName, keyID, minValidUntil)
	if err != nil {
		return key, until, err
	}
	if b.keys == nil {
		b.keys = map[string]keyMemo{}
	}
	b.keys[k] = keyMemo{key, until}
	return key, until, nil
}

// find is an event of the batch (remote, local or outlier) by ID; nil when
// it holds none.
func (b *batchWrite) find(x id.EventID) *Event {
	if b == nil {
		return nil
	}
	if e := b.remote[x]; e != nil {
		return e
	}
	for _, e := range b.events {
		if e.ID == x {
			return e
		}
	}
	return nil
}

// prevRef is what the state before an event needs of a prev event.
type prevRef struct {
	roomID     string
	outlier    bool
	stateAfter int64
}

// prevEvents looks up prev events in the batch (remote events accepted
// earlier in it), then in the store.
func (s *Server) prevEvents(ctx context.Context, b *batchWrite, rs *roomState, ids []id.EventID) (map[id.EventID]prevRef, error) {
	out := make(map[id.EventID]prevRef, len(ids))
	var want []string
	for _, p := range ids {
		if e := b.remote[p]; e != nil {
			out[p] = prevRef{roomID: string(rs.id), stateAfter: e.StateAfter}
		} else {
			want = append(want, string(p))
		}
	}
	if len(want) == 0 {
		return out, nil
	}
	got, err := s.db.GetEvents(ctx, want)
	if err != nil {
		return nil, err
	}
	for _, se := range got {
		out[id.EventID(se.EventID)] = prevRef{roomID: se.RoomID, outlier: se.Outlier, stateAfter: se.StateAfter}
	}
	return out, nil
}

// stateAt is the state a snapshot holds: from the batch's staged keyframes,
// the worker's current state (current, when it is the room's snapshot), or
// the store.
func (s *Server) stateAt(ctx context.Context, b *batchWrite, rs *roomState, current stateres.StateMap, snap int64) (stateres.StateMap, error) {
	if m, ok := b.snapStates[snap]; ok {
		return m, nil
	}
	if snap != 0 && snap == rs.snapshot {
		return current, nil
	}
	for _, st := range b.write.Snapshots {
		if st.ID == snap { // staged as a delta: not in the store yet (never expected)
			return nil, fmt.Errorf("state of snapshot %d staged in this batch is not known", snap)
		}
	}
	return s.stateMapOf(ctx, snap)
}

// cachedAuthEvents are the events of the worker's current state that ev's
// auth rules may ask for (its auth event selection and the create event), by ID.
func cachedAuthEvents(rs *roomState, ev *Event) map[id.EventID]*Event {
	out := map[id.EventID]*Event{}
	for _, k := range ev.PDU.AuthEventSelection(rs.version) {
		if e := rs.state[k]; e != nil {
			out[e.ID] = e
		}
	}
	if c := rs.get("m.room.create", ""); c != nil {
		out[c.ID] = c
	}
	return out
}

// dbProvider serves events to state resolution and the auth rules from the store.
type dbProvider struct {
	s       *Server
	version id.RoomVersion
	extra   map[id.EventID]*Event
	// batch: the worker's batch, whose events are not stored yet; cached:
	// events of the worker's current state. Both are read before the store.
	batch  *batchWrite
	cached map[id.EventID]*Event
}

func (p *dbProvider) Events(ctx context.Context, ids []id.EventID) (map[id.EventID]*pdu.PDU, error) {
	out := make(map[id.EventID]*pdu.PDU, len(ids))
	var want []string
	for _, i := range ids {
		if e, ok := p.extra[i]; ok {
			out[i] = e.PDU
		} else if e := p.batch.find(i); e != nil {
			out[i] = e.PDU
		} else if e, ok := p.cached[i]; ok {
			out[i] = e.PDU
		} else {
			want = append(want, string(i))
		}
	}
	if len(want) == 0 {
		return out, nil
	}
	got, err := p.s.db.GetEvents(ctx, want)
	if err != nil {
		return nil, err
	}
	for _, se := range got {
		e, err := eventFromStored(p.version, se)
		if err != nil {
			return nil, err
		}
		out[e.ID] = e.PDU
	}
	return out, nil
}

func (p *dbProvider) GetKey(serverName string, keyID id.KeyID, minValidUntil time.Time) (id.SigningKey, time.Time, error) {
	return p.s.getKey(serverName, keyID, minValidUntil)
}

func (s *Server) stateMapOf(ctx context.Context, snapshot int64) (stateres.StateMap, error) {
	state, err := s.db.SnapshotState(ctx, snapshot)
	if err != nil {
		return nil, err
	}
	return toStateres(state), nil
}

// authAgainst authorizes ev against the auth events a state map selects for it.
func (s *Server) authAgainst(ctx context.Context, prov *dbProvider, ev *Event, state stateres.StateMap) error {
	var ids []id.EventID
	for _, k := range ev.PDU.AuthEventSelection(ev.Version) {
		if x, ok := state[k]; ok {
			ids = append(ids, x)
		}
	}
	if ev.Version.RoomIDIsCreateEventID() {
		ids = append(ids, id.EventID("$"+string(ev.RoomID)[1:]))
	}
	got, err := prov.Events(ctx, ids)
	if err != nil {
		return err
	}
	var authEvents []*pdu.PDU
	for _, x := range ids {
		if p, ok := got[x]; ok && !(ev.Version.RoomIDIsCreateEventID() && p.Type == "m.room.create") {
			authEvents = append(authEvents, p)
		}
	}
	if authEvents == nil {
		authEvents = []*pdu.PDU{}
	}
	getEvents := func(want []id.EventID) ([]*pdu.PDU, error) {
		m, err := prov.Events(ctx, want)
		if err != nil {
			return nil, err
		}
		var out []*pdu.PDU
		for _, w := range want {
			if p, ok := m[w]; ok {
				out = append(out, p)
			}
		}
		return out, nil
	}
	return authrules.Authorize(ev.Version, ev.PDU, authEvents, getEvents, s.getKey)
}

func (s *Server) applyRemote(ctx context.Context, w *worker, b *batchWrite, in *remoteInput) (*Event, error) {
	rs := w.state
	ev, err := in.parsed, error(nil)
	if ev == nil {
		ev, err = parseEvent(rs.version, "", in.raw)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrRejected, err)
	}
	if ev.RoomID != rs.id {
		return nil, fmt.Errorf("%w: event is for room %s", ErrRejected, ev.RoomID)
	}
	if fieldsTooLong(rs.version, ev.PDU.Type, string(ev.PDU.Sender), ev.PDU.StateKey) {
		return nil, fmt.Errorf("%w: field exceeds %d bytes", ErrRejected, MaxFieldBytes)
	}
	if e := b.remote[ev.ID]; e != nil {
		return e, nil // accepted earlier in this batch
	}
	wasOutlier := false
	if se, err := s.storedEvent(ctx, rs.version, in, ev.ID); err == nil && !se.Outlier {
		return eventFromStored(rs.version, se) // already have it
	} else if err == nil {
		wasOutlier = true
	}
	if in.group != nil {
		// A grouped event waits for a prev its group did not accept: the
		// caller takes it (and the rest of the group) the single-event way.
		if in.group.stopped {
			return nil, ErrNotAttempted
		}
		prevs, err := s.prevEvents(ctx, b, rs, ev.PDU.PrevEvents)
		if err != nil {
			return nil, err
		}
		for _, p := range ev.PDU.PrevEvents {
			if pr, ok := prevs[p]; !ok || pr.roomID != string(rs.id) || pr.outlier {
				in.group.stopped = true
				return nil, fmt.Errorf("%w: prev event %s is unknown", ErrNotAttempted, p)
			}
		}
	}
	// An outlier arriving with its place in the DAG known is accepted as any
	// event: the store turns its row into a timeline event (de-outliered).
	// Signatures: the sender's server must have signed (the redacted form).
	if err := s.verifySignatureWith(ev, b.getKey); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrRejected, err)
	}
	// A content hash mismatch means the event was tampered with: keep only the redacted form.
	if !verifyContentHash(ev) {
		if ev, err = redactedEvent(ev); err != nil {
			return nil, err
		}
	}
	prov := &dbProvider{s: s, version: rs.version, extra: map[id.EventID]*Event{}, batch: b, cached: cachedAuthEvents(rs, ev)}
	if in.gap != nil {
		maps.Copy(prov.extra, in.gap.byID)
	}
	// 1. Against its own auth events.
	getEvents := func(ids []id.EventID) ([]*pdu.PDU, error) {
		m, err := prov.Events(ctx, ids)
		if err != nil {
			return nil, err
		}
		out := make([]*pdu.PDU, 0, len(ids))
		for _, i := range ids {
			p, ok := m[i]
			if !ok {
				if len(ids) == 1 {
					continue
				}
				return nil, fmt.Errorf("auth event %s is unknown", i)
			}
			out = append(out, p)
		}
		return out, nil
	}
	if err := authrules.Authorize(rs.version, ev.PDU, nil, getEvents, s.getKey); err != nil {
		return nil, fmt.Errorf("%w: auth events: %v", ErrRejected, err)
	}
	// 2. The state before the event, from its prev_events: the state after
	// each, from this batch or the worker's cache when it is there.
	current := make(stateres.StateMap, len(rs.state))
	for k, e := range rs.state {
		current[k] = e.ID
	}
	prevs, err := s.prevEvents(ctx, b, rs, ev.PDU.PrevEvents)
	if err != nil {
		return nil, err
	}
	var sets []stateres.StateMap
	var prevSnaps []int64
	for _, p := range ev.PDU.PrevEvents {
		pr, ok := prevs[p]
		if gs, given := in.gap.prevState(p); given {
			sets, prevSnaps = append(sets, gs), append(prevSnaps, 0)
			continue
		}
		// An outlier's state is not known: as a prev it is unknown.
		if !ok || pr.roomID != string(rs.id) || pr.outlier {
			return nil, fmt.Errorf("%w: prev event %s is unknown", ErrRejected, p)
		}
		m, err := s.stateAt(ctx, b, rs, current, pr.stateAfter)
		if err != nil {
			return nil, err
		}
		sets, prevSnaps = append(sets, m), append(prevSnaps, pr.stateAfter)
	}
	var before stateres.StateMap
	if len(sets) == 1 {
		before = sets[0] // read only below (Resolve would copy it)
	} else if before, err = stateres.Resolve(ctx, rs.version, sets, prov); err != nil {
		return nil, fmt.Errorf("resolving state before %s: %w", ev.ID, err)
	}
	if err := s.authAgainst(ctx, prov, ev, before); err != nil {
		return nil, fmt.Errorf("%w: state before event: %v", ErrRejected, err)
	}
	// 3. Soft-fail against the current state: the check just made when the
	// state before is the current state (its only prev is the current
	// snapshot's event, as for the next event of a chain).
	softFailed := false
	if !(len(prevSnaps) == 1 && prevSnaps[0] != 0 && prevSnaps[0] == rs.snapshot) {
		softFailed = s.authAgainst(ctx, prov, ev, current) != nil
	}

	// Snapshots: reuse a prev's when the state before is exactly its state.
	beforeSnap := int64(0)
	for i, set := range sets {
		if prevSnaps[i] != 0 && maps.Equal(set, before) {
			beforeSnap = prevSnaps[i]
			break
		}
	}
	if beforeSnap == 0 && len(before) > 0 {
		beforeSnap = b.keyframe(rs.id, before)
	}
	ev.StateBefore, ev.StateAfter, ev.SoftFailed = beforeSnap, beforeSnap, softFailed
	after := before
	if ev.IsState() {
		ev.ReplacesState = before[ev.Key()]
		after = maps.Clone(before)
		after[ev.Key()] = ev.ID
		ev.StateAfter = b.keyframe(rs.id, after)
	}
	if b.notify == nil {
		b.notify = map[string]bool{}
	}
	ev.Relay = in.relay
	if in.gap != nil {
		ev.AfterGap = true // its prevs are outliers: history before it is missing
		if err := s.stageOutliers(ctx, b, in.gap, ev.ID); err != nil {
			return nil, err
		}
	}
	b.events = append(b.events, ev)
	if b.remote == nil {
		b.remote = map[id.EventID]*Event{}
	}
	b.remote[ev.ID] = ev
	if softFailed {
		return ev, nil
	}
	if err := s.applyRedaction(ctx, rs, b, ev); err != nil {
		return nil, err
	}
	// 4. New forward extremities and current state.
	prevSet := map[id.EventID]bool{}
	for _, p := range ev.PDU.PrevEvents {
		prevSet[p] = true
	}
	coversAll := true
	if wasOutlier {
		// The DAG may have gone on from it already (a gap's prev event is
		// stored as an outlier with its child): the extremities stay, and
		// its state is merged into the current state by resolution.
		coversAll = false
	} else {
		var extrem []*Event
		for _, x := range rs.extremities {
			if !prevSet[x.ID] {
				coversAll = false
				extrem = append(extrem, x)
			}
		}
		rs.extremities = append(extrem, ev)
	}
	if ev.PDU.Depth > rs.depth {
		rs.depth = ev.PDU.Depth
	}
	newState := after
	if !coversAll {
		prov.extra[ev.ID] = ev
		if newState, err = stateres.Resolve(ctx, rs.version, []stateres.StateMap{current, after}, prov); err != nil {
			return nil, fmt.Errorf("resolving current state: %w", err)
		}
	}
	if maps.Equal(newState, current) {
		return ev, nil
	}
	// Apply the difference to the cached and stored current state.
	var changedIDs []string
	for k, x := range newState {
		if current[k] != x && x != ev.ID {
			changedIDs = append(changedIDs, string(x))
		}
	}
	var loaded map[string]*storage.Event
	if len(changedIDs) > 0 {
		if loaded, err = s.db.GetEvents(ctx, changedIDs); err != nil {
			return nil, err
		}
	}
	for k := range current {
		if _, ok := newState[k]; !ok {
			if k.Type == "m.room.member" {
				b.notePrevMembership(rs, k.StateKey)
			}
			delete(rs.state, k)
			rs.locals = nil
			b.write.StateChanges[storage.StateKey(k)] = "" // removed
		}
	}
	for k, x := range newState {
		if current[k] == x {
			continue
		}
		var e *Event
		if x == ev.ID {
			e = ev
		} else if be := b.find(x); be != nil {
			e = be // an event of this batch
		} else if se, ok := loaded[string(x)]; ok {
			if e, err = eventFromStored(rs.version, se); err != nil {
				return nil, err
			}
		} else if o := prov.extra[x]; o != nil && in.gap != nil {
			e = o // an outlier of this batch
		} else {
			return nil, fmt.Errorf("resolved state names unknown event %s", x)
		}
		if k.Type == "m.room.member" {
			b.notePrevMembership(rs, k.StateKey)
		}
		rs.state[k] = e
		rs.locals = nil
		b.write.StateChanges[storage.StateKey(k)] = string(x)
		if k.Type == "m.room.member" {
			if e == ev || e.Outlier && e.StreamPos == 0 { // positioned at commit
				b.memberEvents = append(b.memberEvents, e)
			} else {
				b.write.Memberships = append(b.write.Memberships, storage.MembershipChange{
					UserID: k.StateKey, Membership: e.Membership(), EventID: string(e.ID), StreamPos: e.StreamPos})
			}
			if s.isLocal(id.UserID(k.StateKey)) {
				b.notify[k.StateKey] = true
			}
		}
	}
	if coversAll && ev.IsState() {
		rs.snapshot, rs.chainLen = ev.StateAfter, 0
	} else if coversAll {
		rs.snapshot, rs.chainLen = beforeSnap, 0
	} else {
		rs.snapshot, rs.chainLen = b.keyframe(rs.id, newState), 0
	}
	return ev, nil
}

// keyframe stages a full snapshot of a state map.
func (b *batchWrite) keyframe(roomID id.RoomID, state stateres.StateMap) int64 {
	snapID := b.s.nextSnapshotID()
	b.write.Snapshots = append(b.write.Snapshots, storage.Snapshot{ID: snapID, RoomID: string(roomID), Entries: fromStateres(state)})
	if b.snapStates == nil {
		b.snapStates = map[int64]stateres.StateMap{}
	}
	b.snapStates[snapID] = state // never changed after: later events build new maps
	return snapID
}

func idStrings(ids []id.EventID) []string {
	out := make([]string, len(ids))
	for i, x := range ids {
		out[i] = string(x)
	}
	return out
}

func (s *Server) verifySignature(ev *Event) error {
	return s.verifySignatureWith(ev, s.getKey)
}

// verifySignatureWith is verifySignature with the keys from getKey.
func (s *Server) verifySignatureWith(ev *Event, getKey pdu.GetKeyFunc) error {
	servers := []string{ev.PDU.Sender.Homeserver()}
	if ev.Version.EventIDFormat() == id.EventIDFormatCustom {
		var v1 pdu.RoomV1PDU
		if err := jsonv2.Unmarshal(ev.JSON, &v1); err != nil {
			return err
		}
		// Versions 1 and 2 also need the event ID's server's signature.
		if _, idServer, ok := strings.Cut(string(ev.ID), ":"); ok && idServer != servers[0] {
			servers = append(servers, idServer)
		}
		for _, srv := range servers {
			if err := v1.VerifySignature(ev.Version, srv, getKey); err != nil {
				return err
			}
		}
		return nil
	}
	for _, srv := range servers {
		if err := ev.PDU.VerifySignature(ev.Version, srv, getKey); err != nil {
			return err
		}
	}
	return nil
}

func verifyContentHash(ev *Event) bool {
	if ev.Version.EventIDFormat() == id.EventIDFormatCustom {
		var v1 pdu.RoomV1PDU
		if err := jsonv2.Unmarshal(ev.JSON, &v1); err != nil {
			return false
		}
		return v1.VerifyContentHash()
	}
	return ev.PDU.VerifyContentHash()
}

// relation extracts m.relates_to for the relations index.
func relation(e *Event) (relatesTo, relType string) {
	r := gjson.GetBytes(e.PDU.Content, "m\\.relates_to")
	if !r.IsObject() {
		return "", ""
	}
	relType = r.Get("rel_type").Str
	relatesTo = r.Get("event_id").Str
	if relType == "" && r.Get("m\\.in_reply_to.event_id").Exists() {
		return "", "" // plain replies are not relations
	}
	return relatesTo, relType
}

// prevState is the state after prev given with the PDU, if any.
func (g *gapState) prevState(prev id.EventID) (stateres.StateMap, bool) {
	if g == nil {
		return nil, false
	}
	st, ok := g.prevStates[prev]
	return st, ok
}
