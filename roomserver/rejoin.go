package roomserver

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"slices"

	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/roomserver/stateres"
	"github.com/myelin-chat/myelin/storage"
)

// Rejoining a room over federation after the last local member left: this
// server's copy stopped following the room then (events since were never
// sent here), so a local join would build on stale state and the resident
// servers may refuse it. The join goes through make_join/send_join again and
// the answer replaces the stale current state.

// maxRejoinServers bounds the servers RejoinServers names.
const maxRejoinServers = 20

// RejoinServers tells whether a join of roomID must go over federation
// though the room is known: no local user is joined to it and other
// servers' users were joined when our last one left (it lives on there). It returns
// the servers to ask: those still joined as this server last knew, then
// the other servers of its member events, at most maxRejoinServers. An
// unknown room, a room with a local joined member or one only ever of this
// server, or empty when we left, is (nil, false): a local join (or, unknown,
// a first remote join).
func (s *Server) RejoinServers(ctx context.Context, roomID id.RoomID) ([]string, bool, error) {
	if _, err := RoomVersion(ctx, s.db, roomID); err != nil {
		if errors.Is(err, ErrUnknownRoom) {
			return nil, false, nil
		}
		return nil, false, err
	}
	joined, err := s.db.JoinedServers(ctx, string(roomID))
	if err != nil {
		return nil, false, err
	}
	if slices.Contains(joined, s.serverName) || len(joined) == 0 {
		// A member of ours is in it, or nobody was when our last one left:
		// no server can have moved the room on since.
		return nil, false, nil
	}
	var out []string
	add := func(server string) {
		if server != "" && server != s.serverName && !slices.Contains(out, server) && len(out) < maxRejoinServers {
			out = append(out, server)
		}
	}
	for _, x := range joined {
		add(x)
	}
	state, err := s.db.CurrentStateEvents(ctx, string(roomID))
	if err != nil {
		return nil, false, err
	}
	for _, e := range state {
		if e.Type == "m.room.member" && e.StateKey != nil {
			add(id.UserID(*e.StateKey).Homeserver())
		}
	}
	return out, len(out) > 0, nil
}

// ImportRejoin is ImportJoin for a room this server already knows
// (RejoinServers): the same verification of the send_join answer; then the
// events not yet stored are stored, the answer's state (plus the join)
// replaces the room's current state, memberships and servers follow it,
// and the join becomes the one forward extremity. ErrConflict if the join is
// stored already (a concurrent rejoin won).
func (s *Server) ImportRejoin(ctx context.Context, roomID id.RoomID, version id.RoomVersion, state, authChain []json.RawMessage, join []byte) error {
	return s.importJoin(ctx, roomID, version, state, authChain, join, true)
}

// checkRejoinVersion: the room must be known, of the version make_join named.
func (s *Server) checkRejoinVersion(ctx context.Context, roomID id.RoomID, version id.RoomVersion) error {
	known, err := RoomVersion(ctx, s.db, roomID)
	if err != nil {
		return err
	}
	if known != version {
		return Forbidden("Room %s is of version %s, not %s", roomID, known, version)
	}
	return nil
}

// applyRejoin stages a verified rejoin (ImportRejoin) on the known room.
func (s *Server) applyRejoin(ctx context.Context, w *worker, b *batchWrite, in *importInput) ([]*Event, error) {
	rs := w.state
	if rs == nil {
		var err error
		if rs, err = s.loadRoom(ctx, w.roomID); err != nil {
			return nil, err
		}
		w.state = rs
	}
	if rs.version != in.version {
		return nil, Forbidden("Room %s is of version %s, not %s", w.roomID, rs.version, in.version)
	}
	ids := []string{string(in.join.ID)}
	for _, e := range in.events {
		ids = append(ids, string(e.ID))
	}
	for _, e := range in.state {
		ids = append(ids, string(e.ID))
	}
	have, err := s.db.GetEvents(ctx, ids)
	if err != nil {
		return nil, err
	}
	if _, ok := have[string(in.join.ID)]; ok {
		return nil, NewError(ErrConflict, "The join %s is stored already", in.join.ID)
	}
	// An invite held out of band while we were out of the room (ReceiveInvite)
	// is replaced by the room's own copy: the rows are deleted in the write.
	oob, err := s.db.OutOfBandEventIDs(ctx, string(w.roomID))
	if err != nil {
		return nil, err
	}
	for _, x := range oob {
		delete(have, x)
	}
	b.write.DropOutOfBand = true
	before := make(stateres.StateMap, len(in.state))
	for k, e := range in.state {
		before[k] = e.ID
	}
	beforeSnap := b.keyframe(w.roomID, before)
	after := maps.Clone(before)
	after[in.join.Key()] = in.join.ID
	afterSnap := b.keyframe(w.roomID, after)
	if b.notify == nil {
		b.notify = map[string]bool{}
	}
	fresh := map[id.EventID]bool{}
	for _, e := range in.events {
		if _, ok := have[string(e.ID)]; ok {
			continue
		}
		// Outliers, as a first join's (applyImport): the rejoining user's
		// /sync shows them in the state, /messages backfills the history.
		e.Outlier = !s.isLocalMember(e)
		e.StateBefore, e.StateAfter = beforeSnap, beforeSnap
		rs.depth = max(rs.depth, e.PDU.Depth)
		b.events = append(b.events, e)
		fresh[e.ID] = true
	}
	j := in.join
	j.StateBefore, j.StateAfter = beforeSnap, afterSnap
	j.ReplacesState = before[j.Key()]
	j.AfterGap = true // what happened since we left was never sent here
	rs.depth = max(rs.depth, j.PDU.Depth)
	b.events = append(b.events, j)
	fresh[j.ID] = true

	// The answer's state replaces the stale current state, but for a local
	// user's join made meanwhile (a concurrent rejoin whose join this
	// answer predates): kept when deeper than the answer's event of the slot.
	newState := maps.Clone(in.state)
	newState[j.Key()] = j
	kept := map[id.EventID]bool{}
	for k, cur := range rs.state {
		if k.Type != "m.room.member" || k == j.Key() || !s.isLocal(id.UserID(k.StateKey)) || cur.Membership() != "join" {
			continue
		}
		if ans := newState[k]; ans == nil || ans.PDU.Depth < cur.PDU.Depth {
			newState[k] = cur
			kept[cur.ID] = true
		}
	}
	for k := range rs.state {
		if _, ok := newState[k]; !ok {
			if k.Type == "m.room.member" {
				b.notePrevMembership(rs, k.StateKey)
			}
			b.write.StateChanges[storage.StateKey(k)] = "" // removed
		}
	}
	for k, e := range newState {
		if old := rs.state[k]; old != nil && old.ID == e.ID {
			continue
		}
		b.write.StateChanges[storage.StateKey(k)] = string(e.ID)
		if k.Type != "m.room.member" {
			continue
		}
		b.notePrevMembership(rs, k.StateKey)
		if fresh[e.ID] {
			b.memberEvents = append(b.memberEvents, e)
		} else if se := have[string(e.ID)]; se != nil {
			b.write.Memberships = append(b.write.Memberships, storage.MembershipChange{
				UserID: k.StateKey, Membership: e.Membership(), EventID: string(e.ID), StreamPos: se.StreamPos})
		}
		if s.isLocal(id.UserID(k.StateKey)) {
			b.notify[k.StateKey] = true
		}
	}
	rs.state = map[pdu.StateKey]*Event(newState)
	rs.locals = nil
	current := make(stateres.StateMap, len(newState))
	for k, e := range newState {
		current[k] = e.ID
	}
	if maps.Equal(current, after) {
		rs.snapshot, rs.chainLen = afterSnap, 0
	} else {
		rs.snapshot, rs.chainLen = b.keyframe(w.roomID, current), 0
	}
	extremities := []*Event{j}
	for _, x := range rs.extremities {
		if kept[x.ID] {
			extremities = append(extremities, x)
		}
	}
	rs.extremities = extremities
	return b.events, nil
}
