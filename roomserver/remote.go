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
	gap    *gapState // InputWithState: the state of prev events the store does not know
}

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
	if len(raw) > MaxPDUBytes {
		return nil, fmt.Errorf("%w: PDU exceeds %d bytes", ErrRejected, MaxPDUBytes)
	}
	evs, err := s.submit(ctx, roomID, &request{remote: &remoteInput{raw: raw, origin: origin}})
	if err != nil {
		return nil, err
	}
	return evs[0], nil
}

// dbProvider serves events to state resolution and the auth rules from the store.
type dbProvider struct {
	s       *Server
	version id.RoomVersion
	extra   map[id.EventID]*Event
}

func (p *dbProvider) Events(ctx context.Context, ids []id.EventID) (map[id.EventID]*pdu.PDU, error) {
	out := make(map[id.EventID]*pdu.PDU, len(ids))
	var want []string
	for _, i := range ids {
		if e, ok := p.extra[i]; ok {
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
	ev, err := parseEvent(rs.version, "", in.raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrRejected, err)
	}
	if ev.RoomID != rs.id {
		return nil, fmt.Errorf("%w: event is for room %s", ErrRejected, ev.RoomID)
	}
	if fieldsTooLong(rs.version, ev.PDU.Type, string(ev.PDU.Sender), ev.PDU.StateKey) {
		return nil, fmt.Errorf("%w: field exceeds %d bytes", ErrRejected, MaxFieldBytes)
	}
	wasOutlier := false
	if se, err := s.db.GetEvent(ctx, string(ev.ID)); err == nil && !se.Outlier {
		return eventFromStored(rs.version, se) // already have it
	} else if err == nil {
		wasOutlier = true
	}
	// An outlier arriving with its place in the DAG known is accepted as any
	// event: the store turns its row into a timeline event (de-outliered).
	// Signatures: the sender's server must have signed (the redacted form).
	if err := s.verifySignature(ev); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrRejected, err)
	}
	// A content hash mismatch means the event was tampered with: keep only the redacted form.
	if !verifyContentHash(ev) {
		if ev, err = redactedEvent(ev); err != nil {
			return nil, err
		}
	}
	prov := &dbProvider{s: s, version: rs.version, extra: map[id.EventID]*Event{}}
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
	// 2. The state before the event, from its prev_events.
	prevs, err := s.db.GetEvents(ctx, idStrings(ev.PDU.PrevEvents))
	if err != nil {
		return nil, err
	}
	var sets []stateres.StateMap
	var prevSnaps []int64
	for _, p := range ev.PDU.PrevEvents {
		se, ok := prevs[string(p)]
		if gs, given := in.gap.prevState(p); given {
			sets, prevSnaps = append(sets, gs), append(prevSnaps, 0)
			continue
		}
		// An outlier's state is not known: as a prev it is unknown.
		if !ok || se.RoomID != string(rs.id) || se.Outlier {
			return nil, fmt.Errorf("%w: prev event %s is unknown", ErrRejected, p)
		}
		m, err := s.stateMapOf(ctx, se.StateAfter)
		if err != nil {
			return nil, err
		}
		sets, prevSnaps = append(sets, m), append(prevSnaps, se.StateAfter)
	}
	before, err := stateres.Resolve(ctx, rs.version, sets, prov)
	if err != nil {
		return nil, fmt.Errorf("resolving state before %s: %w", ev.ID, err)
	}
	if err := s.authAgainst(ctx, prov, ev, before); err != nil {
		return nil, fmt.Errorf("%w: state before event: %v", ErrRejected, err)
	}
	// 3. Soft-fail against the current state.
	current := make(stateres.StateMap, len(rs.state))
	for k, e := range rs.state {
		current[k] = e.ID
	}
	softFailed := s.authAgainst(ctx, prov, ev, current) != nil

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
	if in.gap != nil {
		if err := s.stageOutliers(ctx, b, in.gap, ev.ID); err != nil {
			return nil, err
		}
	}
	b.events = append(b.events, ev)
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
	loaded, err := s.db.GetEvents(ctx, changedIDs)
	if err != nil {
		return nil, err
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
			if err := v1.VerifySignature(ev.Version, srv, s.getKey); err != nil {
				return err
			}
		}
		return nil
	}
	for _, srv := range servers {
		if err := ev.PDU.VerifySignature(ev.Version, srv, s.getKey); err != nil {
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
