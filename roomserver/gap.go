package roomserver

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"

	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/roomserver/stateres"
)

// MaxGapEvents bounds the events received with one PDU whose prev events are
// unknown (InputWithState): the state before each missing prev and its auth
// chain, as far as the store lacks them.
const MaxGapEvents = 1000

// PrevState is the state before a prev event this server does not know, as
// a remote server reported it (/state_ids?event_id=EventID).
type PrevState struct {
	EventID id.EventID
	State   []id.EventID
	// RejectedPrevs, for a prev event this server rejected (remembered,
	// never stored), are that event's own prev_events: the state after it
	// is the state before it, their resolved states (State is unused).
	RejectedPrevs []id.EventID
}

// gapState is what InputWithState verified for the writer: the received
// events to store as outliers and the state after each missing prev.
type gapState struct {
	outliers   []*Event // accepted, each after its auth events
	byID       map[id.EventID]*Event
	prevStates map[id.EventID]stateres.StateMap
}

// InputWithState accepts a PDU some of whose prev events this server does
// not know (the gap get_missing_events could not close), given the state
// before each such prev (prevs) and the events received for it (received:
// the missing prevs themselves, the state events and auth chains the store
// lacks; the transport fetched them). Every received event is verified as
// ImportJoin verifies a send_join answer (room, size, signature, content
// hash, authorized by its own auth events; cycles refused); unauthorized or
// missing ones are left out of the states. A received event that does not
// parse or whose signature does not verify, a state naming a non-state
// event or two events for one slot, or a missing prev not received refuses
// the PDU (ErrRejected) and nothing is stored. The state after each missing
// prev is its state before plus itself (when a state event it accepted; a
// rejected prev changes no state; for a prev rejected earlier, see
// PrevState.RejectedPrevs); the state
// before the PDU is the resolution of its prevs' states. Then the PDU is
// authorized and soft-failed as Input does; it becomes a forward extremity
// alongside the existing ones, and the accepted received events are stored
// as outliers with it, in one commit. Network-free but for the key getter.
func (s *Server) InputWithState(ctx context.Context, roomID id.RoomID, raw []byte, origin string, prevs []PrevState, received []json.RawMessage) (*Event, error) {
	if len(raw) > MaxPDUBytes {
		return nil, fmt.Errorf("%w: PDU exceeds %d bytes", ErrRejected, MaxPDUBytes)
	}
	if len(received) > MaxGapEvents {
		return nil, fmt.Errorf("%w: the state of its prev events exceeds %d events", ErrRejected, MaxGapEvents)
	}
	if len(prevs) > 2*maxPrevEvents { // ingest takes at most 20 prev_events
		return nil, fmt.Errorf("%w: too many prev events", ErrRejected)
	}
	version, err := RoomVersion(ctx, s.db, roomID)
	if err != nil {
		return nil, err
	}
	reject := func(format string, args ...any) error {
		return fmt.Errorf("%w: state of missing prev events: %s", ErrRejected, fmt.Sprintf(format, args...))
	}
	es := s.newEventSet(version)
	for _, r := range received {
		ev, err := s.parseReceived(version, roomID, r)
		if err != nil {
			return nil, reject("%v", err)
		}
		es.byID[ev.ID] = ev
	}
	// Stored events serve as auth and state events: load those named.
	want := es.missingAuth()
	for _, p := range prevs {
		if es.byID[p.EventID] == nil {
			want = append(want, string(p.EventID)) // stored already, as an outlier
		}
		if len(p.State) > MaxImportEvents {
			return nil, reject("the state before %s exceeds %d events", p.EventID, MaxImportEvents)
		}
		for _, x := range p.State {
			if es.byID[x] == nil {
				want = append(want, string(x))
			}
		}
	}
	es.stored = map[id.EventID]*Event{}
	got, err := s.db.GetEvents(ctx, want)
	if err != nil {
		return nil, err
	}
	for _, se := range got {
		if se.RoomID != string(roomID) {
			continue
		}
		e, err := eventFromStored(version, se)
		if err != nil {
			return nil, err
		}
		es.stored[e.ID] = e
	}
	all := make([]*Event, 0, len(es.byID))
	for _, e := range es.byID {
		all = append(all, e)
	}
	slices.SortFunc(all, func(a, b *Event) int {
		if a.PDU.Depth != b.PDU.Depth {
			return int(min(max(a.PDU.Depth-b.PDU.Depth, -1), 1))
		}
		return compareIDs(a.ID, b.ID)
	})
	for _, e := range all {
		es.visit(e, 0)
	}
	gap := &gapState{outliers: es.ordered, byID: map[id.EventID]*Event{}, prevStates: map[id.EventID]stateres.StateMap{}}
	for _, e := range es.ordered {
		gap.byID[e.ID] = e
	}
	accepted := func(x id.EventID) *Event {
		if e := gap.byID[x]; e != nil {
			return e
		}
		return es.stored[x]
	}
	for _, p := range prevs {
		if p.RejectedPrevs != nil {
			state, err := s.stateAfterRejected(ctx, version, roomID, p)
			if err != nil {
				return nil, err
			}
			gap.prevStates[p.EventID] = state
			continue
		}
		prev := accepted(p.EventID)
		if prev == nil && es.byID[p.EventID] == nil {
			return nil, reject("prev event %s was not received", p.EventID)
		}
		// A prev received but not accepted (unauthorized) is rejected: the
		// state after it is the state before it.
		state := stateres.StateMap{}
		for _, x := range p.State {
			e := es.byID[x]
			if e == nil {
				e = es.stored[x]
			}
			if e == nil {
				continue // not received: left out, as an unauthorized one
			}
			if !e.IsState() {
				return nil, reject("the state before %s names %s, not a state event", p.EventID, x)
			}
			if old, dup := state[e.Key()]; dup && old != e.ID {
				return nil, reject("the state before %s holds two events for %v", p.EventID, e.Key())
			}
			if accepted(x) != nil {
				state[e.Key()] = e.ID
			}
		}
		if prev != nil && prev.IsState() {
			state[prev.Key()] = prev.ID
		}
		gap.prevStates[p.EventID] = state
	}
	evs, err := s.submit(ctx, roomID, &request{remote: &remoteInput{raw: raw, origin: origin, gap: gap}})
	if err != nil {
		return nil, err
	}
	return evs[0], nil
}

func compareIDs(a, b id.EventID) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// stageOutliers adds the gap's accepted events the store does not hold yet
// to the batch as outliers (stored for their content and auth/state role).
func (s *Server) stageOutliers(ctx context.Context, b *batchWrite, gap *gapState, skip id.EventID) error {
	ids := make([]string, 0, len(gap.outliers))
	for _, e := range gap.outliers {
		ids = append(ids, string(e.ID))
	}
	stored, err := s.db.GetEvents(ctx, ids)
	if err != nil {
		return err
	}
	for _, e := range gap.outliers {
		if _, ok := stored[string(e.ID)]; ok || e.ID == skip {
			continue
		}
		e.Outlier, e.StateBefore, e.StateAfter = true, 0, 0
		b.events = append(b.events, e)
	}
	return nil
}
