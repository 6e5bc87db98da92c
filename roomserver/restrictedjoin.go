package roomserver

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/id"
)

// maxAllowRooms bounds the allow-list rooms one refusal looks up.
const maxAllowRooms = 50

// ErrUnableToGrantJoin: the user may join a restricted room, but no local
// member can authorise it (server-server M_UNABLE_TO_GRANT_JOIN: the joining
// server should try another resident).
var ErrUnableToGrantJoin = fmt.Errorf("unable to grant join: %w", ErrForbidden)

// restrictedRefusal is make_join's answer to authoriseRestrictedJoin's
// refusal: no local member to authorise the join is ErrUnableToGrantJoin;
// and it turns authoriseRestrictedJoin's refusal of a user who is
// in none of the allow list's rooms into ErrUnableToAuthoriseJoin when this
// server is itself in none of them: it cannot tell whether the user is (the
// spec's M_UNABLE_TO_AUTHORISE_JOIN, so the joining server tries another
// resident). Other errors are returned as they are.
func (s *Server) restrictedRefusal(ctx context.Context, rs *roomState, refusal error) error {
	if errors.Is(refusal, ErrUnableToAuthoriseJoin) {
		return NewError(ErrUnableToGrantJoin, "No member of this server can authorise this join")
	}
	if !errors.Is(refusal, ErrForbidden) {
		return refusal
	}
	jr := rs.get("m.room.join_rules", "")
	if jr == nil {
		return refusal
	}
	for i, a := range gjson.GetBytes(jr.PDU.Content, "allow").Array() {
		if i == maxAllowRooms {
			break
		}
		if a.Get("type").Str != "m.room_membership" || a.Get("room_id").Str == "" {
			continue
		}
		servers, err := s.db.JoinedServers(ctx, a.Get("room_id").Str)
		if err != nil {
			return err
		}
		if slices.Contains(servers, s.serverName) {
			return refusal // we know the room: the user is not in it
		}
	}
	return NewError(ErrUnableToAuthoriseJoin, "This server is in none of the rooms this room is restricted to")
}

// dropStaleAllowRooms removes from userRooms (the rooms a remote user is
// joined to, as this server knows) the allow-list rooms this server is no
// longer in: our copy of such a room stopped following it when our last
// member left, so the user's membership there is unknown, not known
// (Synapse checks the same; Complement's TestRestrictedRoomsRemoteJoinFailOver:
// a resident that left the allowed room must answer
// M_UNABLE_TO_AUTHORISE_JOIN so the joining server tries another).
func (s *Server) dropStaleAllowRooms(ctx context.Context, rs *roomState, userRooms map[string]bool) error {
	jr := rs.get("m.room.join_rules", "")
	if jr == nil {
		return nil
	}
	for i, a := range gjson.GetBytes(jr.PDU.Content, "allow").Array() {
		if i == maxAllowRooms {
			break
		}
		room := a.Get("room_id").Str
		if !userRooms[room] {
			continue
		}
		servers, err := s.db.JoinedServers(ctx, room)
		if err != nil {
			return err
		}
		if !slices.Contains(servers, s.serverName) {
			delete(userRooms, room)
		}
	}
	return nil
}

// ResidentServers are the other servers joined to roomID (room_servers,
// ours left out, at most maxRejoinServers): those that may authorise a
// restricted join no local member can.
func (s *Server) ResidentServers(ctx context.Context, roomID id.RoomID) ([]string, error) {
	joined, err := s.db.JoinedServers(ctx, string(roomID))
	if err != nil {
		return nil, err
	}
	var out []string
	for _, srv := range joined {
		if srv != s.serverName && len(out) < maxRejoinServers {
			out = append(out, srv)
		}
	}
	return out, nil
}
