package roomserver

import (
	"context"
	"fmt"

	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/roomserver/stateres"
)

// stateAfterRejected is the state after p, a prev event this server rejected
// (and so never stored): the state before it, which is the resolution of the
// states after its own prev events (p.RejectedPrevs), all stored in roomID's
// timeline. Rejected events change no state (as Synapse: their state groups
// are their prevs').
func (s *Server) stateAfterRejected(ctx context.Context, version id.RoomVersion, roomID id.RoomID, p PrevState) (stateres.StateMap, error) {
	if len(p.RejectedPrevs) == 0 || len(p.RejectedPrevs) > 2*maxPrevEvents {
		return nil, fmt.Errorf("%w: rejected prev event %s has %d prev events", ErrRejected, p.EventID, len(p.RejectedPrevs))
	}
	got, err := s.db.GetEvents(ctx, idStrings(p.RejectedPrevs))
	if err != nil {
		return nil, err
	}
	var sets []stateres.StateMap
	for _, x := range p.RejectedPrevs {
		se, ok := got[string(x)]
		if !ok || se.Outlier || se.RoomID != string(roomID) {
			return nil, fmt.Errorf("%w: prev event %s of rejected prev event %s is unknown", ErrRejected, x, p.EventID)
		}
		m, err := s.stateMapOf(ctx, se.StateAfter)
		if err != nil {
			return nil, err
		}
		sets = append(sets, m)
	}
	if len(sets) == 1 {
		return sets[0], nil
	}
	state, err := stateres.Resolve(ctx, version, sets, &dbProvider{s: s, version: version, extra: map[id.EventID]*Event{}})
	if err != nil {
		return nil, fmt.Errorf("resolving the state before rejected event %s: %w", p.EventID, err)
	}
	return state, nil
}
