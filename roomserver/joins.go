package roomserver

import (
	"context"
	"encoding/json"
	jsonv2 "encoding/json/v2"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/roomserver/stateres"
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
			if err := s.dropStaleAllowRooms(ctx, rs, userRooms); err != nil {
				return nil, err
			}
			via, err := s.authoriseRestrictedJoin(rs, userRooms)
			if err != nil {
				return nil, s.restrictedRefusal(ctx, rs, err)
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
	ev, err := s.buildOnState(rs, p)
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

// buildOnState builds and signs p on top of the room's current state:
// prev_events the forward extremities (at most maxPrevEvents), auth_events by
// the version's selection from the current state, depth one past the room's.
func (s *Server) buildOnState(rs *roomState, p *proto) (*Event, error) {
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
	return s.buildEvent(rs.version, rs.id, p, prev, auth, rs.depth+1, time.Now().UnixMilli())
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
	ev, err := s.checkSentMember(ctx, roomID, eventID, raw, origin, "join")
	if err != nil {
		return nil, err
	}
	version := ev.Version
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
			if ev, err = parseEvent(version, "", raw); err != nil {
				return nil, err
			}
		}
	}
	se, err := s.inputSentMember(ctx, roomID, ev, raw, origin)
	if err != nil {
		return nil, err
	}
	stored := se
	stateIDs, err := s.StateIDsAt(ctx, roomID, stored.EventID)
	if err != nil {
		return nil, err
	}
	state, err := s.Events(ctx, stateIDs)
	if err != nil {
		return nil, err
	}
	chain, err := s.AuthChain(ctx, append(slices.Clone(stateIDs), stored.EventID))
	if err != nil {
		return nil, err
	}
	return &JoinResult{Event: se, State: state, AuthChain: chain, Servers: serversBefore(state)}, nil
}

// serversBefore lists the servers with joined members in state, the room
// state before a join: send_join's servers_in_room is the servers in the
// room before the join (spec, MSC3706; Synapse takes the hosts at the
// join's prev events), so a first joiner's own server is not among them.
func serversBefore(state []*storage.Event) []string {
	var out []string
	for _, e := range state {
		if e.Type != "m.room.member" || e.StateKey == nil || e.Membership != "join" {
			continue
		}
		if server := id.UserID(*e.StateKey).Homeserver(); server != "" && !slices.Contains(out, server) {
			out = append(out, server)
		}
	}
	slices.Sort(out)
	return out
}

// SignJoin completes a make_join template for user, a local user: the
// template must be user's join of roomID; our timestamp, content hash and
// signature are added. It returns the PDU and its event ID.
func (s *Server) SignJoin(roomID id.RoomID, version id.RoomVersion, template []byte, user id.UserID) ([]byte, id.EventID, error) {
	if !s.isLocal(user) {
		return nil, "", Forbidden("User %s is not local", user)
	}
	if !SupportedRoomVersion(string(version)) {
		return nil, "", NewError(ErrUnsupportedRoomVersion, "Room version %q is not supported", version)
	}
	if len(template) > MaxPDUBytes {
		return nil, "", TooLarge("Template exceeds %d bytes", MaxPDUBytes)
	}
	var p pdu.PDU
	if version.EventIDFormat() == id.EventIDFormatCustom {
		return s.signJoinV1(roomID, version, template, user)
	}
	if err := jsonv2.Unmarshal(template, &p); err != nil {
		return nil, "", BadJSON("Invalid join template: %v", err)
	}
	if p.Type != "m.room.member" || p.StateKey == nil || *p.StateKey != string(user) || p.Sender != user || p.RoomID != roomID ||
		gjson.GetBytes(p.Content, "membership").Str != "join" {
		return nil, "", BadJSON("The join template is not %s's join of %s", user, roomID)
	}
	if len(p.PrevEvents) == 0 || len(p.PrevEvents) > 20 || len(p.AuthEvents) > 10 {
		return nil, "", BadJSON("The join template's prev_events or auth_events are out of bounds")
	}
	p.Hashes, p.Signatures, p.Unsigned = nil, nil, nil
	p.OriginServerTS = time.Now().UnixMilli()
	if err := p.Sign(version, s.serverName, s.key.ID, s.key.Priv); err != nil {
		return nil, "", fmt.Errorf("signing join: %w", err)
	}
	eventID, err := p.GetEventID(version)
	if err != nil {
		return nil, "", fmt.Errorf("computing event ID: %w", err)
	}
	raw, err := jsonv2.Marshal(&p)
	if err != nil {
		return nil, "", err
	}
	p.InternalMeta.EventID = eventID
	if err := checkSize(&Event{ID: eventID, RoomID: roomID, Version: version, PDU: &p, JSON: raw}); err != nil {
		return nil, "", err
	}
	return raw, eventID, nil
}

// MaxImportEvents bounds the state and auth chain a joined room is imported from.
const MaxImportEvents = 2 * MaxAuthChain

// importInput is a room joined over federation, verified, to create locally.
type importInput struct {
	version id.RoomVersion
	events  []*Event                // the auth chain and state, authorized, by depth
	state   map[pdu.StateKey]*Event // the state before the join
	join    *Event
	creator id.UserID
	rejoin  bool // the room is known: ImportRejoin
}

// ImportJoin creates roomID locally from a send_join answer: the room state
// before our join, its auth chain, and our join (as the resident server
// returned it, which may carry its signature of a restricted join). Nothing
// is taken on trust: every event must be of the room, signed by its sender's
// server (content hash mismatches are redacted, as for any received event),
// and authorized by its own auth events, which must be in the answer;
// unauthorized events are dropped from the state; the state must hold the
// room's create event, matching the room ID and version; the join must be
// one of ours, allowed by that state. The state and auth chain are stored as
// outliers (outside every timeline), the join with a stream position and
// that state before it; the current state becomes the state plus the join, the
// join the one forward extremity. ErrConflict if the room is already known.
func (s *Server) ImportJoin(ctx context.Context, roomID id.RoomID, version id.RoomVersion, state, authChain []json.RawMessage, join []byte) error {
	return s.importJoin(ctx, roomID, version, state, authChain, join, false)
}

func (s *Server) importJoin(ctx context.Context, roomID id.RoomID, version id.RoomVersion, state, authChain []json.RawMessage, join []byte, rejoin bool) error {
	if !SupportedRoomVersion(string(version)) {
		return NewError(ErrUnsupportedRoomVersion, "Room version %q is not supported", version)
	}
	if len(state)+len(authChain) > MaxImportEvents {
		return TooLarge("The room's state and auth chain exceed %d events", MaxImportEvents)
	}
	if rejoin {
		if err := s.checkRejoinVersion(ctx, roomID, version); err != nil {
			return err
		}
	} else if _, err := RoomVersion(ctx, s.db, roomID); err == nil {
		return NewError(ErrConflict, "Room %s is already known", roomID)
	} else if !errors.Is(err, ErrUnknownRoom) {
		return err
	}
	byID := map[id.EventID]*Event{}
	var stateIDs []id.EventID
	keys := s.importKeys(ctx, state, authChain)
	parse := func(raw []byte) (*Event, error) { return s.parseReceivedWith(version, roomID, raw, keys) }
	var unverified unverifiedEvents // left out, as unauthorized events are (eventset.go)
	for i, list := range [][]json.RawMessage{state, authChain} {
		for _, raw := range list {
			ev, err := parse(raw)
			if unverified.skip(err) {
				continue
			}
			if err != nil {
				return err
			}
			if i == 0 {
				if !ev.IsState() {
					return BadJSON("Event %s of the state is not a state event", ev.ID)
				}
				stateIDs = append(stateIDs, ev.ID)
			}
			byID[ev.ID] = ev
		}
	}
	if err := ctx.Err(); err != nil {
		return err // keys not asked are no evidence against the events left out
	}
	// The create event: in the state, of this room and version.
	var create *Event
	for _, x := range stateIDs {
		if e := byID[x]; e.PDU.Type == "m.room.create" && *e.PDU.StateKey == "" {
			create = e
		}
	}
	if create == nil {
		return unverified.noCreate()
	}
	unverified.log(roomID)
	if version.RoomIDIsCreateEventID() {
		if id.RoomID("!"+string(create.ID)[1:]) != roomID {
			return Forbidden("The create event is not room %s's", roomID)
		}
	}
	cv := gjson.GetBytes(create.PDU.Content, "room_version").Str
	if cv == "" {
		cv = "1"
	}
	if id.RoomVersion(cv) != version {
		return Forbidden("The create event is of version %s, not %s", cv, version)
	}
	// Authorize every event against its own auth events, auth events first.
	es := s.newEventSet(version)
	es.byID = byID
	visit := es.visit
	if !visit(create, 0) {
		return Forbidden("The create event is not valid")
	}
	stateMap := map[pdu.StateKey]*Event{}
	for _, x := range stateIDs {
		if e := byID[x]; visit(e, 0) {
			if old := stateMap[e.Key()]; old == nil || old.ID != e.ID {
				if old != nil {
					return BadJSON("The state holds two events for %v", e.Key())
				}
				stateMap[e.Key()] = e
			}
		}
	}
	for _, e := range byID {
		visit(e, 0) // the rest of the auth chain
	}
	slices.SortStableFunc(es.ordered, func(a, b *Event) int { return int(min(max(a.PDU.Depth-b.PDU.Depth, -1), 1)) })
	// Our join, allowed by the state.
	je, err := parse(join)
	if err != nil {
		return err
	}
	if je.PDU.Type != "m.room.member" || je.PDU.StateKey == nil || *je.PDU.StateKey != string(je.PDU.Sender) ||
		!s.isLocal(je.PDU.Sender) || je.Membership() != "join" {
		return BadJSON("The join is not a local user's join")
	}
	if !visit(je, 0) {
		return Forbidden("The join is not allowed by its auth events")
	}
	ordered := slices.DeleteFunc(es.ordered, func(e *Event) bool { return e.ID == je.ID })
	sm := make(stateres.StateMap, len(stateMap))
	for k, e := range stateMap {
		sm[k] = e.ID
	}
	prov := &dbProvider{s: s, version: version, extra: byID}
	if err := s.authAgainst(ctx, prov, je, sm); err != nil {
		return Forbidden("The join is not allowed by the room's state: %v", err)
	}
	_, err = s.submit(ctx, roomID, &request{imported: &importInput{version: version, events: ordered, state: stateMap, join: je, creator: create.PDU.Sender, rejoin: rejoin}})
	return err
}

// applyImport stages an imported room (ImportJoin, verified) as a new room.
func (s *Server) applyImport(ctx context.Context, w *worker, b *batchWrite, in *importInput) ([]*Event, error) {
	if in.rejoin {
		return s.applyRejoin(ctx, w, b, in)
	}
	if _, err := s.db.GetRoom(ctx, string(w.roomID)); err == nil {
		return nil, NewError(ErrConflict, "Room %s is already known", w.roomID)
	} else if !errors.Is(err, storage.ErrNotFound) {
		return nil, err
	}
	before := make(stateres.StateMap, len(in.state))
	for k, e := range in.state {
		before[k] = e.ID
	}
	beforeSnap := b.keyframe(w.roomID, before)
	after := maps.Clone(before)
	after[in.join.Key()] = in.join.ID
	afterSnap := b.keyframe(w.roomID, after)
	rs := &roomState{id: w.roomID, version: in.version, state: maps.Clone(in.state), snapshot: afterSnap, creator: in.creator}
	rs.state[in.join.Key()] = in.join
	if b.notify == nil {
		b.notify = map[string]bool{}
	}
	for _, e := range in.events {
		// Outliers: stored for their auth and state role, outside every
		// timeline (the joiner's first /sync shows them in its state). No state
		// of their own is known: they show the state before the join.
		e.Outlier = !s.isLocalMember(e)
		e.StateBefore, e.StateAfter = beforeSnap, beforeSnap
		rs.depth = max(rs.depth, e.PDU.Depth)
		b.events = append(b.events, e)
	}
	j := in.join
	j.StateBefore, j.StateAfter = beforeSnap, afterSnap
	j.ReplacesState = before[j.Key()]
	j.AfterGap = true // the room's history lives on other servers (backfill)
	rs.depth = max(rs.depth, j.PDU.Depth)
	b.events = append(b.events, j)
	rs.extremities = []*Event{j}
	for k, e := range rs.state {
		b.write.StateChanges[storage.StateKey(k)] = string(e.ID)
		if k.Type == "m.room.member" {
			b.memberEvents = append(b.memberEvents, e)
			if s.isLocal(id.UserID(k.StateKey)) {
				b.notify[k.StateKey] = true
			}
		}
	}
	w.state = rs
	return b.events, nil
}

// isLocalMember reports whether e is the member event of one of our users.
// Imported state and auth events are outliers, but not these: our users'
// memberships (an invite, a join made through another local user's answer)
// are changes their /sync must report, and the memberships table orders
// changes by stream position.
func (s *Server) isLocalMember(e *Event) bool {
	return e.PDU.Type == "m.room.member" && e.PDU.StateKey != nil && s.isLocal(id.UserID(*e.PDU.StateKey))
}
