package stateres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/roomserver/authrules"
)

// stateView is a state map being built on top of a read-only base, so the
// (possibly huge) base never has to be copied.
type stateView struct {
	base StateMap
	over StateMap
}

func newStateView(base StateMap) *stateView {
	return &stateView{base: base, over: make(StateMap)}
}

func (s *stateView) get(key pdu.StateKey) (id.EventID, bool) {
	if evtID, ok := s.over[key]; ok {
		return evtID, true
	}
	evtID, ok := s.base[key]
	return evtID, ok
}

func (s *stateView) set(key pdu.StateKey, evtID id.EventID) { s.over[key] = evtID }

// fork returns a view whose changes do not affect s.
func (s *stateView) fork() *stateView {
	merged := make(StateMap, len(s.over))
	for k, v := range s.over {
		merged[k] = v
	}
	return &stateView{base: s.base, over: merged}
}

// resolver holds everything one Resolve call shares between its steps.
type resolver struct {
	ctx     context.Context
	version id.RoomVersion
	g       *eventGraph
	plCache map[nodeID]*powerLevels
	create  *pdu.PDU // the room's create event, for versions that derive it from the room ID
	getKey  pdu.GetKeyFunc
	// fetchErr records a provider failure inside an eventauth callback, which
	// eventauth would otherwise report as an ordinary auth failure.
	fetchErr error
}

var errNoKeyProvider = errors.New("no signing keys available during state resolution")

func newResolver(ctx context.Context, version id.RoomVersion, provider EventProvider) *resolver {
	r := &resolver{
		ctx:     ctx,
		version: version,
		g:       newEventGraph(provider),
		plCache: make(map[nodeID]*powerLevels),
		getKey: func(string, id.KeyID, time.Time) (id.SigningKey, time.Time, error) {
			return "", time.Time{}, errNoKeyProvider
		},
	}
	if kp, ok := provider.(KeyProvider); ok {
		r.getKey = kp.GetKey
	}
	return r
}

// loadCreateEvent finds the create event through the room ID, as eventauth
// does, for room versions where it is not among the auth events. Any loaded
// event other than the create event itself carries the room ID.
func (r *resolver) loadCreateEvent() error {
	if !r.version.RoomIDIsCreateEventID() {
		return nil
	}
	var roomID id.RoomID
	for _, node := range r.g.nodes {
		if node.pdu != nil && len(node.pdu.RoomID) > 1 {
			roomID = node.pdu.RoomID
			break
		}
	}
	if roomID == "" {
		return nil // only the create event is involved; nothing needs it
	}
	createID := id.EventID("$" + roomID[1:])
	create, err := r.g.event(r.ctx, createID)
	if err != nil {
		return fmt.Errorf("loading create event of %s: %w", roomID, err)
	} else if create == nil {
		// Every auth check would fail; that is a broken store, not a result.
		return fmt.Errorf("create event %s of %s is unknown", createID, roomID)
	}
	r.create = create
	return nil
}

// getEvents serves eventauth's lookups (the create event in room v12) from
// the graph cache.
func (r *resolver) getEvents(ids []id.EventID) ([]*pdu.PDU, error) {
	out := make([]*pdu.PDU, 0, len(ids))
	for _, evtID := range ids {
		evt, err := r.g.event(r.ctx, evtID)
		if err != nil {
			r.fetchErr = err
			return nil, err
		}
		if evt != nil {
			out = append(out, evt)
		}
	}
	return out, nil
}

// usableEvent returns the event if it is known and was not rejected.
func (r *resolver) usableEvent(evtID id.EventID) (*pdu.PDU, error) {
	evt, err := r.g.event(r.ctx, evtID)
	if err != nil || evt == nil || evt.InternalMeta.Rejected {
		return nil, err
	}
	return evt, nil
}

// allowed checks an event against the auth rules using the given state. Auth
// events come from the state; a key missing there falls back to the event's
// own auth event for it, if that was not rejected.
func (r *resolver) allowed(n nodeID, state *stateView) (bool, error) {
	evt := r.g.nodes[n].pdu
	selection := evt.AuthEventSelection(r.version)
	// Non-nil even when empty: nil makes eventauth use evt.AuthEvents instead.
	authEvents := make([]*pdu.PDU, 0, len(selection))
	for _, key := range selection {
		var chosen *pdu.PDU
		if evtID, ok := state.get(key); ok {
			var err error
			if chosen, err = r.usableEvent(evtID); err != nil {
				return false, err
			}
			if !isStateKey(chosen, key.Type, key.StateKey) {
				// A state set from elsewhere may name an event that is not
				// the state event for its key; it cannot stand for that key.
				chosen = nil
			}
		}
		if chosen == nil {
			for _, a := range r.g.nodes[n].auth {
				ae := r.g.nodes[a].pdu
				if isStateKey(ae, key.Type, key.StateKey) && !ae.InternalMeta.Rejected {
					chosen = ae
					break
				}
			}
		}
		if chosen != nil {
			authEvents = append(authEvents, chosen)
		}
	}
	// A panic inside the rules is recovered by authrules and is a rejection.
	err := authrules.Authorize(r.version, evt, authEvents, r.getEvents, r.getKey)
	if r.fetchErr != nil {
		return false, r.fetchErr
	}
	return err == nil, nil
}

// iterativeAuthChecks applies each event, in order, to the state if it passes
// the auth rules against that state. Rejected events are never applied.
func (r *resolver) iterativeAuthChecks(events []nodeID, state *stateView) error {
	for _, n := range events {
		evt := r.g.nodes[n].pdu
		if evt.InternalMeta.Rejected || evt.StateKey == nil {
			continue
		}
		ok, err := r.allowed(n, state)
		if err != nil {
			return fmt.Errorf("auth check of %s: %w", r.g.nodes[n].id, err)
		}
		if ok {
			state.set(pdu.StateKey{Type: evt.Type, StateKey: *evt.StateKey}, r.g.nodes[n].id)
		}
	}
	return nil
}
