package roomserver

import (
	"context"
	"slices"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/storage"
)

// partialJoinHeroes is how many heroes' member events a reduced send_join
// answer keeps: the room summary's m.heroes (client-server /sync: the first
// five members).
const partialJoinHeroes = 5

// OmitMembers reduces a send_join answer for a caller that asked for
// omit_members (MSC3706, server-server API v1.6+): the state keeps no
// m.room.member events but the joiner's own earlier membership (an invite,
// a knock) and, when the room has neither a name nor a canonical alias, the
// member events of its heroes (as the room summary would name them, from the
// current memberships, as Synapse does); the auth chain becomes that of the
// returned state and the join, without the events already in the state (the
// spec lets them be left out). Without omit_members SendJoin's full answer is
// unchanged.
func (s *Server) OmitMembers(ctx context.Context, roomID id.RoomID, res *JoinResult) (*JoinResult, error) {
	joiner := ""
	if res.Event.StateKey != nil {
		joiner = *res.Event.StateKey
	}
	named := false
	for _, e := range res.State {
		if e.StateKey != nil && *e.StateKey == "" &&
			(e.Type == "m.room.name" && gjson.GetBytes(e.JSON, "content.name").Str != "" ||
				e.Type == "m.room.canonical_alias" && gjson.GetBytes(e.JSON, "content.alias").Str != "") {
			named = true
		}
	}
	keep := map[string]bool{joiner: true}
	if !named {
		heroes, err := s.db.Heroes(ctx, string(roomID), joiner, partialJoinHeroes)
		if err != nil {
			return nil, err
		}
		for _, h := range heroes {
			keep[h] = true
		}
	}
	out := &JoinResult{Event: res.Event, Servers: res.Servers}
	inState := map[string]bool{}
	ids := []string{res.Event.EventID}
	for _, e := range res.State {
		if e.Type == "m.room.member" && (e.StateKey == nil || !keep[*e.StateKey]) {
			continue
		}
		out.State = append(out.State, e)
		inState[e.EventID] = true
		ids = append(ids, e.EventID)
	}
	chain, err := s.AuthChain(ctx, ids)
	if err != nil {
		return nil, err
	}
	out.AuthChain = slices.DeleteFunc(chain, func(e *storage.Event) bool { return inState[e.EventID] })
	return out, nil
}
