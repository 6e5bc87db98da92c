package roomserver

import (
	"context"
	"encoding/json"
	jsonv2 "encoding/json/v2"
	"errors"
	"fmt"
	"slices"
	"time"

	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/storage"
)

// The writer's side of remote joins (server-server API, "Joining Rooms"):
// the template make_join answers and the signed join send_join brings back.
// Network-free: federationapi decides who asks, these decide what the room
// allows.

// JoinTemplate is make_join's answer: the room version and an unsigned,
// unhashed member event for the remote user to complete and sign.
type JoinTemplate struct {
	RoomVersion id.RoomVersion
	Event       json.RawMessage
}

// MakeJoin builds the join template for user, a user of another server, on
// top of roomID's current state. The join rules must let the user in:
// already joined or invited, a public room, or a restricted room whose allow
// list names a room the user is joined to (as this server knows it), with a
// local member who may invite named in join_authorised_via_users_server.
// A banned user is refused (ErrForbidden); a restricted join no local member
// can authorise is ErrUnableToAuthoriseJoin.
func (s *Server) MakeJoin(ctx context.Context, roomID id.RoomID, user id.UserID) (*JoinTemplate, error) {
	if s.isLocal(user) {
		return nil, Forbidden("User %s is local", user)
	}
	rs, err := s.snapshotState(ctx, roomID)
	if err != nil {
		return nil, err
	}
	current := rs.membership(user)
	if current == "ban" {
		return nil, Forbidden("User %s is banned from the room", user)
	}
	content := MustJSON(map[string]string{"membership": "join"})
	rule := "invite"
	if jr := rs.get("m.room.join_rules", ""); jr != nil {
		rule = jr.ContentString("join_rule")
	}
	if current != "join" && current != "invite" {
		switch {
		case rule == "public":
		case (rule == "restricted" || rule == "knock_restricted") && rs.version.RestrictedJoins():
			joined, err := s.db.RoomsOfUser(ctx, string(user), "join")
			if err != nil {
				return nil, err
			}
			userRooms := map[string]bool{}
			for _, m := range joined {
				userRooms[m.RoomID] = true
			}
			via, err := s.authoriseRestrictedJoin(rs, userRooms)
			if err != nil {
				return nil, err
			}
			if content, err = withContentKey(content, "join_authorised_via_users_server", via); err != nil {
				return nil, err
			}
		default:
			return nil, Forbidden("You are not invited to this room")
		}
	}
	tmpl, err := s.template(rs, &proto{Type: "m.room.member", StateKey: stateKeyPtr(string(user)), Sender: user, Content: content})
	if err != nil {
		return nil, err
	}
	return &JoinTemplate{RoomVersion: rs.version, Event: tmpl}, nil
}

// template is a proto as an event template: prev_events, auth_events and
// depth from the room's current state, without hashes, signatures or (room
// versions 1 and 2) event_id, which the remote server adds.
func (s *Server) template(rs *roomState, p *proto) (json.RawMessage, error) {
	var prev []ref
	for i, x := range rs.extremities {
		if i == maxPrevEvents {
			break
		}
		prev = append(prev, ref{x.ID, x.PDU.Hashes})
	}
	var auth []ref
	for _, k := range (&pdu.PDU{Type: p.Type, StateKey: p.StateKey, Sender: p.Sender, Content: jsonValue(p.Content)}).AuthEventSelection(rs.version) {
		if e := rs.state[k]; e != nil {
			auth = append(auth, ref{e.ID, e.PDU.Hashes})
		}
	}
	ev, err := s.buildEvent(rs.version, rs.id, p, prev, auth, rs.depth+1, time.Now().UnixMilli())
	if err != nil {
		return nil, err
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(ev.JSON, &m); err != nil {
		return nil, fmt.Errorf("template: %w", err)
	}
	delete(m, "hashes")
	delete(m, "signatures")
	delete(m, "event_id")
	delete(m, "unsigned")
	return MustJSON(m), nil
}

// JoinResult is what send_join answers: the accepted join as stored (with
// our signature when we authorised it) and the room state before it with
// the auth chain of that state and of the join.
type JoinResult struct {
	Event     *storage.Event
	State     []*storage.Event
	AuthChain []*storage.Event
	Servers   []string
}

// SendJoin accepts a join event built by origin from a make_join template:
// it must be a join of one of origin's users for roomID, with eventID its
// ID. When it names a local user in join_authorised_via_users_server (a
// restricted join), the sender's signature and the content hash are checked
// first and our signature is added, as the auth rules require. The event
// then goes through Input (signatures, auth against its auth events and the
// state before it); one rejected or soft-failed is ErrForbidden.
func (s *Server) SendJoin(ctx context.Context, roomID id.RoomID, eventID id.EventID, raw []byte, origin string) (*JoinResult, error) {
	if len(raw) > MaxPDUBytes {
		return nil, TooLarge("PDU exceeds %d bytes", MaxPDUBytes)
	}
	version, err := RoomVersion(ctx, s.db, roomID)
	if err != nil {
		return nil, err
	}
	ev, err := parseEvent(version, "", raw)
	if err != nil {
		return nil, BadJSON("Invalid event: %v", err)
	}
	switch {
	case ev.ID != eventID:
		return nil, BadJSON("The event's ID is %s, not %s", ev.ID, eventID)
	case ev.RoomID != roomID:
		return nil, BadJSON("The event is not for room %s", roomID)
	case ev.PDU.Type != "m.room.member" || ev.PDU.StateKey == nil || *ev.PDU.StateKey != string(ev.PDU.Sender):
		return nil, BadJSON("Not a member event of its sender")
	case ev.Membership() != "join":
		return nil, BadJSON("Membership is not join")
	case ev.PDU.Sender.Homeserver() != origin:
		return nil, Forbidden("The joining user does not belong to %s", origin)
	}
	// The joining server just built this event: a content hash mismatch is a
	// forgery here, not an event to keep redacted as Input would.
	if !verifyContentHash(ev) {
		return nil, Forbidden("Content hash mismatch")
	}
	if via := id.UserID(ev.ContentString("join_authorised_via_users_server")); via != "" && s.isLocal(via) && version.EventIDFormat() != id.EventIDFormatCustom {
		if err := s.verifySignature(ev); err != nil {
			return nil, Forbidden("Bad signature: %v", err)
		}
		if _, ours := ev.PDU.Signatures[s.serverName]; !ours {
			signed := ev.PDU.Clone()
			if err := signed.Sign(version, s.serverName, s.key.ID, s.key.Priv); err != nil {
				return nil, fmt.Errorf("signing join: %w", err)
			}
			if raw, err = jsonv2.Marshal(signed); err != nil {
				return nil, err
			}
		}
	}
	stored, err := s.Input(ctx, roomID, raw, origin)
	if errors.Is(err, ErrRejected) {
		return nil, Forbidden("%v", err)
	}
	if err != nil {
		return nil, err
	}
	if stored.SoftFailed {
		return nil, Forbidden("The join is not allowed by the room's current state")
	}
	se, err := s.db.GetEvent(ctx, string(stored.ID))
	if err != nil {
		return nil, fmt.Errorf("reading the join back: %w", err)
	}
	stateIDs, err := s.StateIDsAt(ctx, roomID, string(stored.ID))
	if err != nil {
		return nil, err
	}
	state, err := s.Events(ctx, stateIDs)
	if err != nil {
		return nil, err
	}
	chain, err := s.AuthChain(ctx, append(slices.Clone(stateIDs), string(stored.ID)))
	if err != nil {
		return nil, err
	}
	servers, err := s.db.JoinedServers(ctx, string(roomID))
	if err != nil {
		return nil, err
	}
	return &JoinResult{Event: se, State: state, AuthChain: chain, Servers: servers}, nil
}
