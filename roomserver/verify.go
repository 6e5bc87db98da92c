package roomserver

import (
	"fmt"

	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/roomserver/authrules"
)

// Verification of events another server handed us in bulk (a send_join
// answer, a backfill answer): network-free but for the key getter, shared by
// ImportJoin and ImportBackfill.

// parseRemoteEvent parses one event received from another server as an
// event of roomID in its version, within the size limits, signed by its
// sender's server; a content hash mismatch keeps the redacted form (as for
// any received event).
func (s *Server) parseRemoteEvent(version id.RoomVersion, roomID id.RoomID, raw []byte) (*Event, error) {
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

// ownAuth authorizes events against their own auth events, which must be
// among byID and accepted themselves (depth-first, auth events first;
// cycles refused). Events marked trusted (stored ones, verified when they
// were stored) count as accepted without a check.
type ownAuth struct {
	s        *Server
	version  id.RoomVersion
	byID     map[id.EventID]*Event
	ok       map[id.EventID]bool
	visiting map[id.EventID]bool
	// ordered are the events accepted by visit, auth events first.
	ordered []*Event
}

func newOwnAuth(s *Server, version id.RoomVersion, byID map[id.EventID]*Event) *ownAuth {
	return &ownAuth{s: s, version: version, byID: byID, ok: map[id.EventID]bool{}, visiting: map[id.EventID]bool{}}
}

// trust accepts e as an auth event without checking it.
func (a *ownAuth) trust(e *Event) {
	a.byID[e.ID] = e
	a.ok[e.ID] = true
}

func (a *ownAuth) getEvents(ids []id.EventID) ([]*pdu.PDU, error) {
	out := make([]*pdu.PDU, 0, len(ids))
	for _, x := range ids {
		if !a.ok[x] {
			if len(ids) == 1 {
				continue
			}
			return nil, fmt.Errorf("auth event %s is missing or rejected", x)
		}
		out = append(out, a.byID[x].PDU)
	}
	return out, nil
}

// visit reports whether e is authorized by its own auth events (visiting
// them first).
func (a *ownAuth) visit(e *Event, depth int) bool {
	if a.ok[e.ID] {
		return true
	}
	if a.visiting[e.ID] || depth > MaxImportEvents {
		return false // a cycle, or rejected already
	}
	a.visiting[e.ID] = true
	for _, x := range e.PDU.AuthEvents {
		if ae := a.byID[x]; ae != nil {
			a.visit(ae, depth+1)
		}
	}
	if authrules.Authorize(a.version, e.PDU, nil, a.getEvents, a.s.getKey) != nil {
		return false
	}
	a.ok[e.ID] = true
	a.ordered = append(a.ordered, e)
	return true
}
