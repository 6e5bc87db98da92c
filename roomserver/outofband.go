package roomserver

import (
	"context"
	"encoding/json"
	jsonv2 "encoding/json/v2"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/storage"
)

// Out-of-band memberships: a local user's invite, knock or leave of a room
// hosted elsewhere that this server is not in (server-server API, "Inviting
// to a room", "Leaving Rooms (Rejecting Invites)", "Knocking upon a room").
// The writer checks and signs them and records them with a stream position
// (storage.WriteOutOfBand) without making the room known: no state, no
// worker, no rooms row. Network-free: remotejoin does the asking.

// Bounds on the stripped state an invite or a knock answer carries.
const (
	MaxStrippedEvents = 64
	MaxStrippedBytes  = 64 << 10
)

// InviteRequest is an invite received over federation (PUT /v1 or /v2 invite).
type InviteRequest struct {
	Origin      string
	RoomID      id.RoomID
	EventID     id.EventID
	RoomVersion id.RoomVersion
	Event       []byte
	// InviteRoomState is the stripped state (v2's invite_room_state; v1's
	// unsigned.invite_room_state of the event).
	InviteRoomState []json.RawMessage
}

// ReceiveInvite checks an invite of a local user sent by origin, adds our
// signature and answers the signed event. For a room this server is not in
// it records the invite out of band, so the invitee's /sync shows it;
// for a known room the event itself arrives by /send as any other. Sending
// the same invite again answers the same.
func (s *Server) ReceiveInvite(ctx context.Context, req InviteRequest) ([]byte, error) {
	version := req.RoomVersion
	if !SupportedRoomVersion(string(version)) {
		return nil, NewError(ErrUnsupportedRoomVersion, "Room version %q is not supported", version)
	}
	if len(req.Event) > MaxPDUBytes {
		return nil, TooLarge("PDU exceeds %d bytes", MaxPDUBytes)
	}
	ev, err := parseEvent(version, "", req.Event)
	if err != nil {
		return nil, BadJSON("Invalid event: %v", err)
	}
	switch {
	case ev.ID != req.EventID:
		return nil, BadJSON("The event's ID is %s, not %s", ev.ID, req.EventID)
	case ev.RoomID != req.RoomID:
		return nil, BadJSON("The event is not for room %s", req.RoomID)
	case ev.PDU.Type != "m.room.member" || ev.PDU.StateKey == nil:
		return nil, BadJSON("Not a member event")
	case ev.Membership() != "invite":
		return nil, BadJSON("Membership is not invite")
	case ev.PDU.Sender.Homeserver() != req.Origin:
		return nil, Forbidden("The inviter does not belong to %s", req.Origin)
	}
	if err := checkSize(ev); err != nil {
		return nil, err
	}
	invitee := id.UserID(*ev.PDU.StateKey)
	if !s.isLocal(invitee) {
		return nil, Forbidden("User %s is not a user of this server", invitee)
	}
	if u, err := s.db.GetUser(ctx, string(invitee)); errors.Is(err, storage.ErrNotFound) {
		return nil, NotFound("No such user %s", invitee)
	} else if err != nil {
		return nil, err
	} else if u.Deactivated {
		return nil, Forbidden("User %s is deactivated", invitee)
	}
	if !verifyContentHash(ev) {
		return nil, Forbidden("Content hash mismatch")
	}
	if err := s.verifySignature(ev); err != nil {
		return nil, Forbidden("Bad signature: %v", err)
	}
	stripped, err := checkStrippedState(req.InviteRoomState)
	if err != nil {
		return nil, err
	}
	if err := s.checkInviteFromRemote(ctx, ev.PDU.Sender, invitee); err != nil {
		return nil, err
	}
	signed, err := s.addSignature(ev)
	if err != nil {
		return nil, err
	}
	if _, err := RoomVersion(ctx, s.db, req.RoomID); err == nil {
		joined, err := s.db.JoinedServers(ctx, string(req.RoomID))
		if err != nil {
			return nil, err
		}
		if slices.Contains(joined, s.serverName) {
			return signed, nil // we are in the room: the invite comes by /send too
		}
		// Known but not followed since our last member left: the copy is
		// stale (the invitee may still be banned in it) and the invite will
		// not come by /send. Held out of band until the rejoin.
	} else if !errors.Is(err, ErrUnknownRoom) {
		return nil, err
	}
	if _, err := s.db.GetEvent(ctx, string(ev.ID)); err == nil {
		return signed, nil // sent again
	} else if !errors.Is(err, storage.ErrNotFound) {
		return nil, err
	}
	stored, err := withUnsigned(signed, map[string]any{"invite_room_state": stripped})
	if err != nil {
		return nil, err
	}
	if err := s.storeOutOfBand(ctx, ev, version, stored); err != nil {
		return nil, err
	}
	return signed, nil
}

// checkInviteFromRemote applies the invitee's refusals: the MSC4155 invite
// filter (blocked, or ignored: over federation both are refused, nothing is
// stored) and m.ignored_user_list.
func (s *Server) checkInviteFromRemote(ctx context.Context, inviter, invitee id.UserID) error {
	switch rule, err := s.inviteRuleFor(ctx, inviter, invitee); {
	case err != nil:
		return err
	case rule == inviteBlock:
		return errInviteBlocked
	case rule == inviteIgnore:
		return Forbidden("This user does not accept invites from you")
	}
	raw, err := s.db.GetAccountData(ctx, string(invitee), "", "m.ignored_user_list")
	if errors.Is(err, storage.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading the ignored users of %s: %w", invitee, err)
	}
	if gjson.GetBytes(raw, "ignored_users").Get(gjson.Escape(string(inviter))).Exists() {
		return Forbidden("This user does not accept invites from you")
	}
	return nil
}

// checkStrippedState bounds the stripped state of an invite or knock and
// requires each entry to be an object with type, state_key and sender
// strings and a content object. nil stays nil.
func checkStrippedState(in []json.RawMessage) ([]json.RawMessage, error) {
	if len(in) > MaxStrippedEvents {
		return nil, TooLarge("The stripped state exceeds %d events", MaxStrippedEvents)
	}
	total := 0
	out := make([]json.RawMessage, 0, len(in))
	for _, raw := range in {
		total += len(raw)
		if total > MaxStrippedBytes {
			return nil, TooLarge("The stripped state exceeds %d bytes", MaxStrippedBytes)
		}
		r := gjson.ParseBytes(raw)
		if !r.IsObject() || r.Get("type").Type != gjson.String || r.Get("state_key").Type != gjson.String ||
			r.Get("sender").Type != gjson.String || !r.Get("content").IsObject() {
			return nil, BadJSON("A stripped state event needs type, state_key, sender and content")
		}
		out = append(out, raw)
	}
	return out, nil
}

// addSignature is the event's JSON with our signature added.
func (s *Server) addSignature(ev *Event) ([]byte, error) {
	if ev.Version.EventIDFormat() == id.EventIDFormatCustom {
		var v1 pdu.RoomV1PDU
		if err := jsonv2.Unmarshal(ev.JSON, &v1); err != nil {
			return nil, BadJSON("Invalid event: %v", err)
		}
		if err := v1.Sign(ev.Version, s.serverName, s.key.ID, s.key.Priv); err != nil {
			return nil, fmt.Errorf("signing %s: %w", ev.ID, err)
		}
		return jsonv2.Marshal(&v1, jsonv2.Deterministic(true))
	}
	p := ev.PDU.Clone()
	if err := p.Sign(ev.Version, s.serverName, s.key.ID, s.key.Priv); err != nil {
		return nil, fmt.Errorf("signing %s: %w", ev.ID, err)
	}
	return jsonv2.Marshal(p, jsonv2.Deterministic(true)) // the same invite again answers the same bytes
}

// withUnsigned replaces a PDU's unsigned object.
func withUnsigned(raw []byte, unsigned map[string]any) ([]byte, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, BadJSON("Invalid event: %v", err)
	}
	m["unsigned"] = MustJSON(unsigned)
	return json.Marshal(m)
}

// storeOutOfBand records ev (whose JSON to store is raw) with a stream
// position and wakes its subject's /sync: for a room not known, or known but
// with none of our users joined (a stale copy: the leave that rejects an
// invite held out of band there). ErrConflict if one of our users is joined.
func (s *Server) storeOutOfBand(ctx context.Context, ev *Event, version id.RoomVersion, raw []byte) error {
	return s.writeOutOfBand(ctx, ev, raw, func(se *storage.Event) error {
		err := s.db.WriteOutOfBand(ctx, se, string(version))
		if errors.Is(err, storage.ErrRoomKnown) {
			err = s.db.WriteOutOfBandUnjoined(ctx, se, string(version), s.serverName)
		}
		if errors.Is(err, storage.ErrServerJoined) {
			return NewError(ErrConflict, "Room %s is known now", ev.RoomID)
		}
		return err
	})
}

func (s *Server) writeOutOfBand(ctx context.Context, ev *Event, raw []byte, write func(*storage.Event) error) error {
	pos, finish, err := s.stream.AllocateN(1)
	if err != nil {
		return err
	}
	defer finish()
	se := &storage.Event{EventID: string(ev.ID), RoomID: string(ev.RoomID), StreamPos: pos, Depth: ev.PDU.Depth, Type: ev.PDU.Type,
		StateKey: ev.PDU.StateKey, Sender: string(ev.PDU.Sender), OriginServerTS: ev.PDU.OriginServerTS, JSON: raw,
		Membership: ev.Membership()}
	if err := write(se); err != nil {
		return err
	}
	finish()
	if s.notifier != nil {
		s.notifier.Notify(pos, *ev.PDU.StateKey)
	}
	return nil
}

// OutOfBandMembership is a local user's latest out-of-band membership of a
// room this server is not in.
type OutOfBandMembership struct {
	Membership  string
	EventID     id.EventID
	Sender      id.UserID
	RoomVersion id.RoomVersion
	Depth       int64
	// Servers are the servers of the senders of the stripped state the
	// invite or knock carried (users in the room, as the resident said):
	// candidates to ask after the inviter's, for rooms whose ID names none.
	Servers []string
}

// OutOfBand returns user's latest out-of-band membership of roomID (a known
// room's only while no membership event of the room's own came after it);
// ErrNotFound when there is none.
func (s *Server) OutOfBand(ctx context.Context, user id.UserID, roomID id.RoomID) (*OutOfBandMembership, error) {
	o, err := s.db.LatestOutOfBand(ctx, string(roomID), string(user))
	if errors.Is(err, storage.ErrNotFound) {
		return nil, NotFound("No invite or knock of %s in %s", user, roomID)
	}
	if err != nil {
		return nil, err
	}
	return &OutOfBandMembership{Membership: o.Event.Membership, EventID: id.EventID(o.Event.EventID), Sender: id.UserID(o.Event.Sender),
		RoomVersion: id.RoomVersion(o.RoomVersion), Depth: o.Event.Depth, Servers: strippedServers(o.Event.JSON)}, nil
}

// strippedServers lists the servers of the stripped state's senders in a
// stored out-of-band event, first seen first, ours and duplicates left out
// (the stored state is bounded by MaxStrippedEvents).
func strippedServers(raw []byte) []string {
	var out []string
	u := gjson.GetBytes(raw, "unsigned")
	for _, list := range []string{"invite_room_state", "knock_room_state"} {
		for _, e := range u.Get(list).Array() {
			server := id.UserID(e.Get("sender").Str).Homeserver()
			if server != "" && !slices.Contains(out, server) {
				out = append(out, server)
			}
		}
	}
	return out
}

// SignLeave completes a make_leave template for user, a local user: it must
// be user's leave of roomID (bounded prev and auth events); our timestamp,
// hash and signature are added (as SignJoin), and reason when given.
func (s *Server) SignLeave(roomID id.RoomID, version id.RoomVersion, template []byte, user id.UserID, reason string) ([]byte, id.EventID, error) {
	return s.signMemberTemplate(roomID, version, template, user, "leave", reason)
}

// SignKnock completes a make_knock template for user (as SignLeave).
func (s *Server) SignKnock(roomID id.RoomID, version id.RoomVersion, template []byte, user id.UserID, reason string) ([]byte, id.EventID, error) {
	return s.signMemberTemplate(roomID, version, template, user, "knock", reason)
}

func (s *Server) signMemberTemplate(roomID id.RoomID, version id.RoomVersion, template []byte, user id.UserID, membership, reason string) ([]byte, id.EventID, error) {
	if !s.isLocal(user) {
		return nil, "", Forbidden("User %s is not local", user)
	}
	if !SupportedRoomVersion(string(version)) {
		return nil, "", NewError(ErrUnsupportedRoomVersion, "Room version %q is not supported", version)
	}
	if version.EventIDFormat() == id.EventIDFormatCustom {
		return nil, "", NewError(ErrUnsupportedRoomVersion, "Rooms of version %s are not supported over federation", version)
	}
	if len(template) > MaxPDUBytes {
		return nil, "", TooLarge("Template exceeds %d bytes", MaxPDUBytes)
	}
	var p pdu.PDU
	if err := jsonv2.Unmarshal(template, &p); err != nil {
		return nil, "", BadJSON("Invalid %s template: %v", membership, err)
	}
	if p.Type != "m.room.member" || p.StateKey == nil || *p.StateKey != string(user) || p.Sender != user || p.RoomID != roomID ||
		gjson.GetBytes(p.Content, "membership").Str != membership {
		return nil, "", BadJSON("The template is not %s's %s of %s", user, membership, roomID)
	}
	if len(p.PrevEvents) == 0 || len(p.PrevEvents) > 20 || len(p.AuthEvents) > 10 {
		return nil, "", BadJSON("The template's prev_events or auth_events are out of bounds")
	}
	if reason != "" {
		content, err := sjson.SetBytes(p.Content, "reason", reason)
		if err != nil {
			return nil, "", BadJSON("Invalid template content: %v", err)
		}
		p.Content = content
	}
	p.Hashes, p.Signatures, p.Unsigned = nil, nil, nil
	p.OriginServerTS = time.Now().UnixMilli()
	return s.finishOwnEvent(roomID, version, &p)
}

// finishOwnEvent signs an event of ours and checks its size.
func (s *Server) finishOwnEvent(roomID id.RoomID, version id.RoomVersion, p *pdu.PDU) ([]byte, id.EventID, error) {
	if err := p.Sign(version, s.serverName, s.key.ID, s.key.Priv); err != nil {
		return nil, "", fmt.Errorf("signing: %w", err)
	}
	eventID, err := p.GetEventID(version)
	if err != nil {
		return nil, "", fmt.Errorf("computing event ID: %w", err)
	}
	raw, err := jsonv2.Marshal(p)
	if err != nil {
		return nil, "", err
	}
	p.InternalMeta.EventID = eventID
	if err := checkSize(&Event{ID: eventID, RoomID: roomID, Version: version, PDU: p, JSON: raw}); err != nil {
		return nil, "", err
	}
	return raw, eventID, nil
}

// RecordOutOfBand stores a local user's leave or knock of a room this server
// is not in, signed by us and accepted by a resident server (send_leave,
// send_knock), with the stripped state a knock answer carried
// (unsigned.knock_room_state).
func (s *Server) RecordOutOfBand(ctx context.Context, roomID id.RoomID, version id.RoomVersion, raw []byte, knockState []json.RawMessage) error {
	ev, err := parseEvent(version, "", raw)
	if err != nil {
		return BadJSON("Invalid event: %v", err)
	}
	m := ev.Membership()
	if ev.RoomID != roomID || ev.PDU.Type != "m.room.member" || ev.PDU.StateKey == nil || *ev.PDU.StateKey != string(ev.PDU.Sender) ||
		!s.isLocal(ev.PDU.Sender) || (m != "leave" && m != "knock") {
		return BadJSON("Not a local user's leave or knock of %s", roomID)
	}
	stripped, err := checkStrippedState(knockState)
	if err != nil {
		return err
	}
	if m == "knock" && len(stripped) > 0 {
		if raw, err = withUnsigned(raw, map[string]any{"knock_room_state": stripped}); err != nil {
			return err
		}
	}
	return s.storeOutOfBand(ctx, ev, version, raw)
}

// RejectLocally records user's leave of a room they hold an out-of-band
// invite or knock of, without telling any server (none could be reached):
// a leave of ours on top of the invite, as Synapse's local rejection.
func (s *Server) RejectLocally(ctx context.Context, user id.UserID, roomID id.RoomID) error {
	o, err := s.OutOfBand(ctx, user, roomID)
	if err != nil {
		return err
	}
	if o.Membership != "invite" && o.Membership != "knock" {
		return NotFound("No invite or knock of %s in %s", user, roomID)
	}
	if !SupportedRoomVersion(string(o.RoomVersion)) {
		return NewError(ErrUnsupportedRoomVersion, "Room version %q is not supported", o.RoomVersion)
	}
	sk := string(user)
	p := &pdu.PDU{RoomID: roomID, Sender: user, Type: "m.room.member", StateKey: &sk, Content: MustJSON(map[string]string{"membership": "leave"}),
		Depth: o.Depth + 1, OriginServerTS: time.Now().UnixMilli(), PrevEvents: []id.EventID{o.EventID}, AuthEvents: []id.EventID{o.EventID}}
	var raw []byte
	var eventID id.EventID
	if o.RoomVersion.EventIDFormat() == id.EventIDFormatCustom {
		// Rooms v1 and v2: the event ID is ours to choose, references carry hashes.
		eventID = id.EventID(fmt.Sprintf("$%d-reject:%s", time.Now().UnixNano(), s.serverName))
		v1 := &pdu.RoomV1PDU{EventID: eventID, RoomID: roomID, Sender: user, Type: p.Type, StateKey: &sk, Content: p.Content,
			Depth: p.Depth, OriginServerTS: p.OriginServerTS,
			PrevEvents: []pdu.V1EventReference{{ID: o.EventID}}, AuthEvents: []pdu.V1EventReference{{ID: o.EventID}}}
		if err := v1.Sign(o.RoomVersion, s.serverName, s.key.ID, s.key.Priv); err != nil {
			return fmt.Errorf("signing the rejection: %w", err)
		}
		if raw, err = jsonv2.Marshal(v1); err != nil {
			return err
		}
	} else if raw, eventID, err = s.finishOwnEvent(roomID, o.RoomVersion, p); err != nil {
		return err
	}
	ev, err := parseEvent(o.RoomVersion, eventID, raw)
	if err != nil {
		return err
	}
	slog.Info("roomserver: rejected an invite locally", "room", roomID, "user", user, "event", eventID)
	return s.storeOutOfBand(ctx, ev, o.RoomVersion, raw)
}

// forgetOutOfBand answers /forget of a room the user has no membership row
// in: a rejected or withdrawn out-of-band invite or knock is forgotten
// already (a left room shows in no room list but an initial sync asking for
// left rooms); anything else the user was never in.
func (s *Server) forgetOutOfBand(ctx context.Context, user id.UserID, roomID id.RoomID) error {
	if o, err := s.OutOfBand(ctx, user, roomID); err == nil && o.Membership == "leave" {
		return nil
	}
	return NotFound("You have never been in this room")
}
