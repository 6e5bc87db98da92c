package roomserver

import (
	"context"
	"encoding/json"
	jsonv2 "encoding/json/v2"
	"errors"
	"fmt"
	"maps"

	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/roomserver/stateres"
	"github.com/myelin-chat/myelin/storage"
)

// The resident side of remote memberships other than joins (server-server
// API, "Leaving Rooms", "Knocking upon a room", "Inviting to a room"): the
// templates make_leave and make_knock answer, the signed events send_leave
// and send_knock bring back, and our invites of remote users, built here and
// signed by the invitee's server (remotejoin carries them). Network-free.

// ErrIncompatibleRoomVersion: the room's version lacks what was asked (knocking before version 7).
var ErrIncompatibleRoomVersion = errors.New("incompatible room version")

// MakeMembership builds the template of user's leave or knock on top of
// roomID's current state (user is of another server). A leave needs the user
// joined, invited or knocking; a knock a room version with knocking, a knock
// or knock_restricted join rule and a user neither banned nor already joined
// or invited (the auth rules' conditions, checked early so the remote server
// gets a 403 instead of an event that would be rejected).
func (s *Server) MakeMembership(ctx context.Context, roomID id.RoomID, user id.UserID, membership string) (*JoinTemplate, error) {
	if s.isLocal(user) {
		return nil, Forbidden("User %s is local", user)
	}
	rs, err := s.snapshotState(ctx, roomID)
	if err != nil {
		return nil, err
	}
	current := rs.membership(user)
	switch membership {
	case "leave":
		if current != "join" && current != "invite" && current != "knock" {
			return nil, Forbidden("User %s is not in the room", user)
		}
	case "knock":
		if err := knockAllowed(rs, current); err != nil {
			return nil, err
		}
	default:
		return nil, InvalidParam("Unknown membership %q", membership)
	}
	tmpl, err := s.template(rs, &proto{Type: "m.room.member", StateKey: stateKeyPtr(string(user)), Sender: user,
		Content: MustJSON(map[string]string{"membership": membership})})
	if err != nil {
		return nil, err
	}
	return &JoinTemplate{RoomVersion: rs.version, Event: tmpl}, nil
}

// knockAllowed: the room's version and join rule allow knocking and the
// user's current membership does not forbid it.
func knockAllowed(rs *roomState, current string) error {
	if !rs.version.Knocks() {
		return NewError(ErrIncompatibleRoomVersion, "Room version %s does not support knocking", rs.version)
	}
	rule := "invite"
	if jr := rs.get("m.room.join_rules", ""); jr != nil {
		rule = jr.ContentString("join_rule")
	}
	if rule != "knock" && !(rule == "knock_restricted" && rs.version.KnockRestricted()) {
		return Forbidden("The room's join rule (%s) does not allow knocking", rule)
	}
	switch current {
	case "ban":
		return Forbidden("You are banned from this room")
	case "join":
		return Forbidden("You are already in the room")
	case "invite":
		return Forbidden("You are already invited to the room")
	}
	return nil
}

// SendLeave accepts the signed leave of a user of origin (send_leave): a
// leave of its sender for roomID whose ID is eventID, authorized by its auth
// events, the state before it and the current state; it returns the stored
// event.
func (s *Server) SendLeave(ctx context.Context, roomID id.RoomID, eventID id.EventID, raw []byte, origin string) (*storage.Event, error) {
	ev, err := s.checkSentMember(ctx, roomID, eventID, raw, origin, "leave")
	if err != nil {
		return nil, err
	}
	return s.inputSentMember(ctx, roomID, ev, raw, origin)
}

// SendKnock accepts the signed knock of a user of origin (send_knock) and
// returns the stripped state the knocker is shown (knock_room_state): the
// room's create event whole, then the stripped name, join rules and the
// like (as local knocks and invites get).
func (s *Server) SendKnock(ctx context.Context, roomID id.RoomID, eventID id.EventID, raw []byte, origin string) ([]json.RawMessage, error) {
	ev, err := s.checkSentMember(ctx, roomID, eventID, raw, origin, "knock")
	if err != nil {
		return nil, err
	}
	rs, err := s.snapshotState(ctx, roomID)
	if err != nil {
		return nil, err
	}
	if cur := rs.membership(ev.PDU.Sender); cur != "knock" {
		if err := knockAllowed(rs, cur); err != nil {
			return nil, err
		}
	}
	if _, err := s.inputSentMember(ctx, roomID, ev, raw, origin); err != nil {
		return nil, err
	}
	if rs, err = s.snapshotState(ctx, roomID); err != nil {
		return nil, err
	}
	return strippedState(rs, ev.PDU.Sender), nil
}

// checkSentMember checks what every send_join/send_leave/send_knock body must
// be: a PDU of the room's version whose ID is eventID, of roomID, the member
// event of its sender with the given membership, the sender a user of
// origin, its content hash intact.
func (s *Server) checkSentMember(ctx context.Context, roomID id.RoomID, eventID id.EventID, raw []byte, origin, membership string) (*Event, error) {
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
	case ev.Membership() != membership:
		return nil, BadJSON("Membership is not %s", membership)
	case ev.PDU.Sender.Homeserver() != origin:
		return nil, Forbidden("The user does not belong to %s", origin)
	}
	if err := checkSize(ev); err != nil {
		return nil, err
	}
	if err := checkV1EventOrigin(ev, origin); err != nil {
		return nil, err
	}
	// The sending server just built this event: a content hash mismatch is a
	// forgery here, not an event to keep redacted as Input would.
	if !verifyContentHash(ev) {
		return nil, Forbidden("Content hash mismatch")
	}
	return ev, nil
}

// inputSentMember persists a checked member event through Input and reads it
// back. One not yet stored must first pass the current state, so one the
// room refuses is answered 403 without being kept as soft-failed.
func (s *Server) inputSentMember(ctx context.Context, roomID id.RoomID, ev *Event, raw []byte, origin string) (*storage.Event, error) {
	if _, err := s.db.GetEvent(ctx, string(ev.ID)); errors.Is(err, storage.ErrNotFound) {
		rs, err := s.snapshotState(ctx, roomID)
		if err != nil {
			return nil, err
		}
		if err := s.checkCurrentState(ctx, rs, ev, nil); err != nil {
			return nil, Forbidden("The event is not allowed by the room's current state: %v", err)
		}
	} else if err != nil {
		return nil, err
	}
	// Only this server received it: the federation sender passes it on.
	stored, err := s.input(ctx, roomID, &remoteInput{raw: raw, origin: origin, relay: true})
	if errors.Is(err, ErrRejected) {
		return nil, Forbidden("%v", err)
	}
	if err != nil {
		return nil, err
	}
	if stored.SoftFailed {
		return nil, Forbidden("The event is not allowed by the room's current state")
	}
	se, err := s.db.GetEvent(ctx, string(stored.ID))
	if err != nil {
		return nil, fmt.Errorf("reading the event back: %w", err)
	}
	return se, nil
}

// checkCurrentState authorizes ev against the room's current state (the
// soft-fail check, run before persisting).
func (s *Server) checkCurrentState(ctx context.Context, rs *roomState, ev *Event, extra map[id.EventID]*Event) error {
	current := make(stateres.StateMap, len(rs.state))
	for k, e := range rs.state {
		current[k] = e.ID
	}
	return s.authAgainst(ctx, &dbProvider{s: s, version: rs.version, extra: extra}, ev, current)
}

// RemoteInvite is our invite of a user of another server, built and signed
// but not persisted: the invitee's server must sign it first.
type RemoteInvite struct {
	RoomID      id.RoomID
	RoomVersion id.RoomVersion
	EventID     id.EventID
	Invitee     id.UserID
	Event       json.RawMessage   // the signed PDU, without unsigned
	RoomState   []json.RawMessage // invite_room_state, as local invitees get it
}

// PrepareInvite builds a.Sender's invite of a.Target, a user of another
// server, on top of the room's current state, signed by us and authorized
// against that state (the inviter may invite; the target is not joined or
// banned). Nothing is stored: CompleteInvite persists it once the invitee's
// server has signed it. Room versions 1 and 2 are not supported.
func (s *Server) PrepareInvite(ctx context.Context, a MembershipAction) (*RemoteInvite, error) {
	if !ValidUserID(string(a.Target)) {
		return nil, InvalidParam("Invalid user ID")
	}
	if s.isLocal(a.Target) {
		return nil, InvalidParam("User %s is local", a.Target)
	}
	rs, err := s.snapshotState(ctx, a.RoomID)
	if errors.Is(err, ErrUnknownRoom) {
		return nil, Forbidden("You are not in this room")
	}
	if err != nil {
		return nil, err
	}
	if rs.version.EventIDFormat() == id.EventIDFormatCustom {
		return nil, NewError(ErrUnsupportedRoomVersion, "Inviting users of other servers to rooms of version %s is not supported", rs.version)
	}
	switch rs.membership(a.Target) {
	case "join":
		return nil, Forbidden("%s is already in the room", a.Target)
	case "ban":
		return nil, Forbidden("%s is banned from the room", a.Target)
	}
	extra := map[string]any{}
	if a.IsDirect {
		extra["is_direct"] = true
	}
	content, err := s.memberContent(ctx, a.Target, "invite", a.Reason, extra)
	if err != nil {
		return nil, err
	}
	ev, err := s.buildOnState(rs, &proto{Type: "m.room.member", StateKey: stateKeyPtr(string(a.Target)), Sender: a.Sender, Content: content})
	if err != nil {
		return nil, err
	}
	if err := checkSize(ev); err != nil {
		return nil, err
	}
	if err := s.checkCurrentState(ctx, rs, ev, nil); err != nil {
		return nil, Forbidden("You may not invite %s: %v", a.Target, err)
	}
	return &RemoteInvite{RoomID: a.RoomID, RoomVersion: rs.version, EventID: ev.ID, Invitee: a.Target, Event: ev.JSON,
		RoomState: strippedState(rs, a.Sender)}, nil
}

// CompleteInvite persists inv once the invitee's server has returned it
// signed: the returned event must be ours (same event ID, same content),
// still carry our valid signature and carry a valid one of the invitee's
// server (checked through the key getter). Our event with that signature
// added is then Input like any event (authorized against its auth events,
// the state before it and the current state; refused, nothing is stored).
func (s *Server) CompleteInvite(ctx context.Context, inv *RemoteInvite, returned []byte) (id.EventID, error) {
	if len(returned) > MaxPDUBytes {
		return "", Forbidden("The signed invite exceeds %d bytes", MaxPDUBytes)
	}
	ours, err := parseEvent(inv.RoomVersion, "", inv.Event)
	if err != nil {
		return "", fmt.Errorf("our invite: %w", err)
	}
	got, err := parseEvent(inv.RoomVersion, "", returned)
	if err != nil {
		return "", Forbidden("The invitee's server returned an invalid event: %v", err)
	}
	if got.ID != ours.ID || !verifyContentHash(got) || !jsonEqual(got.PDU.Content, ours.PDU.Content) {
		return "", Forbidden("The invitee's server returned another event than our invite")
	}
	server := inv.Invitee.Homeserver()
	sigs := got.PDU.Signatures[server]
	if len(sigs) == 0 {
		return "", Forbidden("The invitee's server did not sign the invite")
	}
	signed := ours.PDU.Clone()
	signed.Signatures = maps.Clone(ours.PDU.Signatures)
	signed.Signatures[server] = maps.Clone(sigs)
	if server == s.serverName || len(sigs) > 8 {
		return "", Forbidden("Unexpected signatures on the invite")
	}
	if err := signed.VerifySignature(inv.RoomVersion, server, s.getKey); err != nil {
		return "", Forbidden("The invitee's server's signature does not verify: %v", err)
	}
	if err := signed.VerifySignature(inv.RoomVersion, s.serverName, s.getKey); err != nil {
		return "", fmt.Errorf("our signature on the invite: %w", err)
	}
	raw, err := jsonv2.Marshal(signed)
	if err != nil {
		return "", err
	}
	ev, err := parseEvent(inv.RoomVersion, ours.ID, raw)
	if err != nil {
		return "", err
	}
	// The room may have moved on while the invitee's server was asked:
	// inputSentMember checks the current state again.
	se, err := s.inputSentMember(ctx, inv.RoomID, ev, raw, s.serverName)
	if err != nil {
		return "", err
	}
	return id.EventID(se.EventID), nil
}

// jsonEqual compares two JSON values by their canonical form.
func jsonEqual(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	return string(MustJSON(x)) == string(MustJSON(y))
}
