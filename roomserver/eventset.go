package roomserver

import (
	"fmt"

	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/roomserver/authrules"
)

// Events received together whose place in the DAG is not (fully) known: a
// send_join answer (ImportJoin) or the state fetched for a gap
// (InputWithState). Nothing is taken on trust: each event is parsed in the
// room's version, must be of the room, within the size limits and signed by
// its sender's server (a content hash mismatch keeps the redacted form), and
// is accepted only when authorized by its own auth events, which must be
// accepted themselves (depth-first, cycles refused).

// parseReceived parses and checks one received event of roomID.
func (s *Server) parseReceived(version id.RoomVersion, roomID id.RoomID, raw []byte) (*Event, error) {
	ev, err := parseEvent(version, "", raw)
	if err != nil {
		return nil, BadJSON("Invalid event: %v", err)
	}
	if ev.RoomID != roomID {
		return nil, BadJSON("Event %s is not of room %s", ev.ID, roomID)
	}
	if err := checkSize(ev); err != nil {
		return nil, err
	}
	if err := s.verifySignature(ev); err != nil {
		return nil, Forbidden("Event %s: %v", ev.ID, err)
	}
	if !verifyContentHash(ev) {
		if ev, err = redactedEvent(ev); err != nil {
			return nil, err
		}
	}
	return ev, nil
}

// eventSet authorizes received events against their own auth events.
type eventSet struct {
	s       *Server
	version id.RoomVersion
	byID    map[id.EventID]*Event // received, parsed
	// stored: events already stored (accepted when they were), usable as
	// auth events; nil for a room not known yet.
	stored   map[id.EventID]*Event
	ok       map[id.EventID]bool
	visiting map[id.EventID]bool
	ordered  []*Event // accepted, each after its auth events
}

func (s *Server) newEventSet(version id.RoomVersion) *eventSet {
	return &eventSet{s: s, version: version, byID: map[id.EventID]*Event{}, ok: map[id.EventID]bool{}, visiting: map[id.EventID]bool{}}
}

// authEvent is an accepted (or stored) auth event by ID.
func (es *eventSet) authEvent(x id.EventID) *pdu.PDU {
	if es.ok[x] {
		return es.byID[x].PDU
	}
	if e := es.stored[x]; e != nil {
		return e.PDU
	}
	return nil
}

func (es *eventSet) getEvents(ids []id.EventID) ([]*pdu.PDU, error) {
	out := make([]*pdu.PDU, 0, len(ids))
	for _, x := range ids {
		p := es.authEvent(x)
		if p == nil {
			if len(ids) == 1 {
				continue
			}
			return nil, fmt.Errorf("auth event %s is missing or rejected", x)
		}
		out = append(out, p)
	}
	return out, nil
}

// visit accepts e when its auth events (visited first) allow it.
func (es *eventSet) visit(e *Event, depth int) bool {
	if es.ok[e.ID] {
		return true
	}
	if es.visiting[e.ID] || depth > MaxImportEvents {
		return false // a cycle, or rejected already
	}
	es.visiting[e.ID] = true
	for _, a := range e.PDU.AuthEvents {
		if ae := es.byID[a]; ae != nil {
			es.visit(ae, depth+1)
		}
	}
	if authrules.Authorize(es.version, e.PDU, nil, es.getEvents, es.s.getKey) != nil {
		return false
	}
	es.ok[e.ID] = true
	es.ordered = append(es.ordered, e)
	return true
}

// missingAuth lists the auth events the received events name that are
// neither received nor in stored: the store is asked for them.
func (es *eventSet) missingAuth() []string {
	seen := map[id.EventID]bool{}
	var out []string
	for _, e := range es.byID {
		for _, a := range e.PDU.AuthEvents {
			if es.byID[a] == nil && es.stored[a] == nil && !seen[a] {
				seen[a] = true
				out = append(out, string(a))
			}
		}
	}
	return out
}
