package roomserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strings"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/internal/mxhttp"
	"github.com/myelin-chat/myelin/storage"
)

// memberContent is the content of a member event, with the user's profile
// for join/invite/knock of local users.
func (s *Server) memberContent(ctx context.Context, user id.UserID, membership, reason string, extra map[string]any) (json.RawMessage, error) {
	c := map[string]any{"membership": membership}
	if (membership == "join" || membership == "invite" || membership == "knock") && s.isLocal(user) {
		u, err := s.db.GetUser(ctx, string(user))
		if err != nil && !errors.Is(err, storage.ErrNotFound) {
			return nil, err
		}
		if u != nil {
			if u.DisplayName != "" {
				c["displayname"] = u.DisplayName
			}
			if u.AvatarURL != "" {
				c["avatar_url"] = u.AvatarURL
			}
		}
	}
	if reason != "" {
		c["reason"] = reason
	}
	maps.Copy(c, extra)
	raw, err := json.Marshal(c)
	if err != nil {
		return nil, BadJSON("Invalid member content: %w", err)
	}
	return raw, nil
}

// strippedState is the stripped state given to invitees and knockers. The
// create event goes whole, as its PDU (spec v1.16, MSC4311): with it an
// invitee can check the room ID of a v12 room and see its origin_server_ts.
func strippedState(rs *roomState, sender id.UserID) []json.RawMessage {
	var out []json.RawMessage
	if e := rs.get("m.room.create", ""); e != nil {
		out = append(out, json.RawMessage(e.JSON))
	}
	for _, t := range []string{"m.room.join_rules", "m.room.name", "m.room.avatar", "m.room.canonical_alias",
		"m.room.encryption", "m.room.topic", "m.room.guest_access", "m.room.history_visibility"} {
		if e := rs.get(t, ""); e != nil {
			out = append(out, MustJSON(e.Stripped()))
		}
	}
	if e := rs.get("m.room.member", string(sender)); e != nil {
		out = append(out, MustJSON(e.Stripped()))
	}
	return out
}

func (s *Server) inviteMaker(ctx context.Context, sender, target id.UserID, reason string, isDirect bool, extra map[string]any) maker {
	return func(rs *roomState) (*proto, error) {
		all := map[string]any{}
		if isDirect {
			all["is_direct"] = true
		}
		maps.Copy(all, extra)
		content, err := s.memberContent(ctx, target, "invite", reason, all)
		if err != nil {
			return nil, err
		}
		unsigned := MustJSON(map[string]any{"invite_room_state": strippedState(rs, sender)})
		return &proto{Type: "m.room.member", StateKey: stateKeyPtr(string(target)), Sender: sender, Content: content, Unsigned: unsigned}, nil
	}
}

// Aliases resolves local room aliases (*storage.DB, or a module's Store).
type Aliases interface {
	ResolveAlias(ctx context.Context, alias string) (roomID, creator string, err error)
}

// ResolveRoom turns a room ID or local alias into a room ID (the room need
// not be known): ErrInvalidParam for a malformed one, ErrNotFound for an
// alias no room has. The writer and roomview resolve with it alike.
func ResolveRoom(ctx context.Context, aliases Aliases, roomIDOrAlias string) (id.RoomID, error) {
	if strings.HasPrefix(roomIDOrAlias, "#") {
		if !ValidAlias(roomIDOrAlias) {
			return "", InvalidParam("Invalid room alias")
		}
		roomID, _, err := aliases.ResolveAlias(ctx, roomIDOrAlias)
		if errors.Is(err, storage.ErrNotFound) {
			return "", NotFound("Room alias not found")
		}
		if err != nil {
			return "", fmt.Errorf("resolving %s: %w", roomIDOrAlias, err)
		}
		return id.RoomID(roomID), nil
	}
	if !ValidRoomID(roomIDOrAlias) {
		return "", InvalidParam("Invalid room ID or alias")
	}
	return id.RoomID(roomIDOrAlias), nil
}

// knownRoom resolves a room ID or alias to a room this server has;
// M_NOT_FOUND for one it has never seen.
func (s *Server) knownRoom(ctx context.Context, roomIDOrAlias string) (id.RoomID, error) {
	roomID, err := ResolveRoom(ctx, s.db, roomIDOrAlias)
	if err != nil {
		return "", err
	}
	if _, err := RoomVersion(ctx, s.db, roomID); errors.Is(err, ErrUnknownRoom) {
		return "", NotFound("No known servers for this room")
	} else if err != nil {
		return "", err
	}
	return roomID, nil
}

// Join joins user to a room given by ID or alias.
func (s *Server) Join(ctx context.Context, user id.UserID, roomIDOrAlias, reason string) (id.RoomID, error) {
	return s.join(ctx, user, roomIDOrAlias, reason, nil)
}

// JoinWithContent is Join with the client's /join body: its keys go into the
// member event's content (the spec's reason and any other, as in Synapse),
// except third_party_signed (a request to the server, not content), the
// membership and the keys only the server may set (clientExtraContent).
func (s *Server) JoinWithContent(ctx context.Context, user id.UserID, roomIDOrAlias string, body map[string]json.RawMessage) (id.RoomID, error) {
	if raw, ok := body["reason"]; ok {
		var reason string
		if err := json.Unmarshal(raw, &reason); err != nil {
			return "", BadJSON("reason must be a string")
		}
	}
	c := maps.Clone(body)
	delete(c, "third_party_signed")
	extra, err := clientExtraContent(c)
	if err != nil {
		return "", err
	}
	// The body becomes signed event content: it must be canonical JSON.
	if err := mxhttp.CheckEventJSON(MustJSON(extra)); err != nil {
		return "", eventJSONError(err)
	}
	return s.join(ctx, user, roomIDOrAlias, "", extra)
}

func (s *Server) join(ctx context.Context, user id.UserID, roomIDOrAlias, reason string, extra map[string]any) (id.RoomID, error) {
	roomID, err := s.knownRoom(ctx, roomIDOrAlias)
	if err != nil {
		return "", err
	}
	mk, err := s.joinMaker(ctx, user, reason, extra, false)
	if err != nil {
		return "", err
	}
	if _, err := s.submitMember(ctx, roomID, mk); err != nil && !errors.Is(err, errSkip) {
		return "", err
	}
	return roomID, nil
}

// joinMaker makes user's join, with extra content over the profile. A join
// by a user already joined is skipped, unless rejoin (a member state PUT:
// a profile change). In a restricted room only this path, having checked the
// allow list, names the authorising user.
func (s *Server) joinMaker(ctx context.Context, user id.UserID, reason string, extra map[string]any, rejoin bool) (maker, error) {
	// Rooms the user is joined to, for restricted join rules (read outside the room's worker).
	joined, err := s.db.RoomsOfUser(ctx, string(user), "join")
	if err != nil {
		return nil, err
	}
	joinedSet := map[string]bool{}
	for _, m := range joined {
		joinedSet[m.RoomID] = true
	}
	base, err := s.memberContent(ctx, user, "join", reason, extra)
	if err != nil {
		return nil, err
	}
	return func(rs *roomState) (*proto, error) {
		current := rs.membership(user)
		if current == "join" && !rejoin {
			return nil, errSkip
		}
		content := base
		rule := ""
		if jr := rs.get("m.room.join_rules", ""); jr != nil {
			rule = jr.ContentString("join_rule")
		}
		if (rule == "restricted" || rule == "knock_restricted") && current != "invite" && current != "join" && rs.version.RestrictedJoins() {
			via, err := s.authoriseRestrictedJoin(rs, joinedSet)
			if err != nil {
				return nil, err
			}
			if content, err = withContentKey(base, "join_authorised_via_users_server", via); err != nil {
				return nil, err
			}
		}
		return &proto{Type: "m.room.member", StateKey: stateKeyPtr(string(user)), Sender: user, Content: content}, nil
	}, nil
}

// withContentKey returns content with key set to v, other values untouched.
func withContentKey(content json.RawMessage, key string, v any) (json.RawMessage, error) {
	var c map[string]json.RawMessage
	if err := json.Unmarshal(content, &c); err != nil {
		return nil, fmt.Errorf("member content: %w", err)
	}
	c[key] = MustJSON(v)
	return MustJSON(c), nil
}

// submitMember runs one membership maker in the room's worker and returns
// the event written, or errSkip when there was nothing to do.
func (s *Server) submitMember(ctx context.Context, roomID id.RoomID, mk maker) (*Event, error) {
	evs, err := s.submit(ctx, roomID, &request{makers: []maker{mk}})
	if err != nil {
		return nil, err
	}
	return evs[len(evs)-1], nil
}

// errSkip tells the worker a request has nothing to do.
var errSkip = errors.New("nothing to do")

// authoriseRestrictedJoin picks a local joined member who may invite, when the
// joining user is in one of the rooms the join rule allows.
func (s *Server) authoriseRestrictedJoin(rs *roomState, userRooms map[string]bool) (id.UserID, error) {
	jr := rs.get("m.room.join_rules", "")
	allowed := false
	for _, a := range gjson.GetBytes(jr.PDU.Content, "allow").Array() {
		if a.Get("type").Str == "m.room_membership" && userRooms[a.Get("room_id").Str] {
			allowed = true
		}
	}
	if !allowed {
		return "", Forbidden("You do not belong to any of the rooms this room is restricted to")
	}
	pl := s.powerLevels(rs)
	best, bestLevel := id.UserID(""), -1<<62
	for k, e := range rs.state {
		if k.Type != "m.room.member" || e.Membership() != "join" || !s.isLocal(id.UserID(k.StateKey)) {
			continue
		}
		u := id.UserID(k.StateKey)
		if lvl := s.userLevel(rs, u); lvl >= pl.Invite() && lvl > bestLevel {
			best, bestLevel = u, lvl
		}
	}
	if best == "" {
		return "", NewError(ErrUnableToAuthoriseJoin, "No local member can authorise this join")
	}
	return best, nil
}

// MembershipAction is an invite, kick, ban, unban or leave.
type MembershipAction struct {
	Sender   id.UserID
	RoomID   id.RoomID
	Target   id.UserID
	Action   string // invite, kick, ban, unban, leave
	Reason   string
	IsDirect bool

	// deactivating: the account is being deactivated; it leaves every room,
	// server notice invites included.
	deactivating bool
}

// NoticeRooms is the store's record of each user's server notices room
// (storage.ErrNotFound: none), whose invite the user may not reject.
type NoticeRooms interface {
	ServerNoticeRoom(ctx context.Context, userID string) (string, error)
}

// actionRemove is the leave a member state PUT sets for another user: a kick,
// or an unban when the target is banned. Not offered to the endpoints.
const actionRemove = "remove"

// ChangeMembership performs a membership action through the auth rules.
func (s *Server) ChangeMembership(ctx context.Context, a MembershipAction) error {
	switch a.Action {
	case "invite", "kick", "ban", "unban", "leave":
	default:
		return InvalidParam("Unknown membership action")
	}
	if err := s.checkMembershipAction(ctx, a); err != nil {
		return err
	}
	mk, err := s.membershipMaker(ctx, a, nil)
	if err != nil {
		return err
	}
	if _, err := s.submitMember(ctx, a.RoomID, mk); err != nil && !errors.Is(err, errSkip) {
		return err
	}
	return nil
}

// checkMembershipAction refuses an action on an invalid target or unknown room.
func (s *Server) checkMembershipAction(ctx context.Context, a MembershipAction) error {
	if a.Action != "leave" && !ValidUserID(string(a.Target)) {
		return InvalidParam("Invalid user ID")
	}
	if _, err := RoomVersion(ctx, s.db, a.RoomID); errors.Is(err, ErrUnknownRoom) {
		if a.Action == "leave" {
			return NotFound("Unknown room")
		}
		return Forbidden("You are not in this room")
	} else if err != nil {
		return err
	}
	if a.Action == "invite" && !s.isLocal(a.Target) {
		return Forbidden("Inviting users of other servers needs federation, which is not enabled")
	}
	return nil
}

// membershipMaker makes the member event of an invite, kick, ban, unban,
// leave or remove, with extra content over the defaults, checking the
// target's current membership as the endpoints do.
func (s *Server) membershipMaker(ctx context.Context, a MembershipAction, extra map[string]any) (maker, error) {
	if a.Action == "invite" {
		switch rule, err := s.inviteRuleFor(ctx, a.Sender, a.Target); {
		case err != nil:
			return nil, err
		case rule == inviteBlock:
			return nil, errInviteBlocked
		case rule == inviteIgnore:
			// Dropped unseen: the inviter is answered as if it went out.
			return func(*roomState) (*proto, error) { return nil, errSkip }, nil
		}
		inv := s.inviteMaker(ctx, a.Sender, a.Target, a.Reason, a.IsDirect, extra)
		return func(rs *roomState) (*proto, error) {
			switch rs.membership(a.Target) {
			case "join":
				return nil, Forbidden("%s is already in the room", a.Target)
			case "ban":
				return nil, Forbidden("%s is banned from the room", a.Target)
			}
			return inv(rs)
		}, nil
	}
	target, membership := a.Target, "leave"
	if a.Action == "ban" {
		membership = "ban"
	}
	if a.Action == "leave" {
		target = a.Sender
	}
	content, err := s.memberContent(ctx, target, membership, a.Reason, extra)
	if err != nil {
		return nil, err
	}
	return func(rs *roomState) (*proto, error) {
		cur := rs.membership(target)
		action := a.Action
		if action == actionRemove {
			action = "kick"
			if cur == "ban" {
				action = "unban"
			}
		}
		switch action {
		case "unban":
			if cur != "ban" {
				return nil, Forbidden("%s is not banned", target)
			}
		case "kick":
			if cur != "join" && cur != "invite" && cur != "knock" {
				return nil, Forbidden("%s is not in the room", target)
			}
		case "leave":
			if cur == "leave" || cur == "ban" {
				if rs.membership(a.Sender) == "ban" {
					return nil, Forbidden("You are banned from this room")
				}
				return nil, errSkip // already left: nothing to do
			}
			if cur == "invite" && !a.deactivating {
				if err := s.checkNoticeInviteReject(ctx, target, a.RoomID); err != nil {
					return nil, err
				}
			}
		}
		return &proto{Type: "m.room.member", StateKey: stateKeyPtr(string(target)), Sender: a.Sender, Content: content}, nil
	}, nil
}

// checkNoticeInviteReject refuses to reject the invite to one's server
// notices room (spec: M_CANNOT_LEAVE_SERVER_NOTICE_ROOM); once joined, the
// user may leave it.
func (s *Server) checkNoticeInviteReject(ctx context.Context, user id.UserID, roomID id.RoomID) error {
	if s.noticeRooms == nil {
		return nil
	}
	notice, err := s.noticeRooms.ServerNoticeRoom(ctx, user.String())
	if errors.Is(err, storage.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("checking for a server notices room: %w", err)
	}
	if notice == roomID.String() {
		return NewError(ErrNoticeRoomInvite, "You cannot reject the invite to your server notices room")
	}
	return nil
}

// Knock asks to join a room whose join rule allows knocking.
func (s *Server) Knock(ctx context.Context, user id.UserID, roomIDOrAlias, reason string) (id.RoomID, error) {
	roomID, err := s.knownRoom(ctx, roomIDOrAlias)
	if err != nil {
		return "", err
	}
	mk, err := s.knockMaker(ctx, user, reason, nil)
	if err != nil {
		return "", err
	}
	if _, err := s.submitMember(ctx, roomID, mk); err != nil {
		return "", err
	}
	return roomID, nil
}

// knockMaker makes user's knock, with extra content over the profile.
func (s *Server) knockMaker(ctx context.Context, user id.UserID, reason string, extra map[string]any) (maker, error) {
	content, err := s.memberContent(ctx, user, "knock", reason, extra)
	if err != nil {
		return nil, err
	}
	return func(rs *roomState) (*proto, error) {
		if !rs.version.Knocks() {
			return nil, Forbidden("Room version %s does not support knocking", rs.version)
		}
		unsigned := MustJSON(map[string]any{"knock_room_state": strippedState(rs, user)})
		return &proto{Type: "m.room.member", StateKey: stateKeyPtr(string(user)), Sender: user, Content: content, Unsigned: unsigned}, nil
	}, nil
}

// Forget hides a room the user has left from their room lists.
func (s *Server) Forget(ctx context.Context, user id.UserID, roomID id.RoomID) error {
	m, err := s.db.GetMembership(ctx, string(roomID), string(user))
	if errors.Is(err, storage.ErrNotFound) {
		return s.forgetOutOfBand(ctx, user, roomID)
	}
	if err != nil {
		return err
	}
	if m.Membership == "join" || m.Membership == "invite" || m.Membership == "knock" {
		return NewError(ErrInvalidState, "You must leave the room before forgetting it")
	}
	return s.db.ForgetRoom(ctx, string(roomID), string(user))
}

// OnProfileChanged sends updated member events to every room the user is
// joined to (the accounts service calls it after a profile change).
func (s *Server) OnProfileChanged(ctx context.Context, user id.UserID) error {
	rooms, err := s.db.RoomsOfUser(ctx, string(user), "join")
	if err != nil {
		return err
	}
	content, err := s.memberContent(ctx, user, "join", "", nil)
	if err != nil {
		return err
	}
	var errs []error
	for _, m := range rooms {
		_, err := s.submit(ctx, id.RoomID(m.RoomID), &request{makers: []maker{func(rs *roomState) (*proto, error) {
			if rs.membership(user) != "join" {
				return nil, errSkip
			}
			return &proto{Type: "m.room.member", StateKey: stateKeyPtr(string(user)), Sender: user, Content: content}, nil
		}}})
		if err != nil && !errors.Is(err, errSkip) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// LeaveAllRooms makes a user leave every room they are joined to, reject
// every pending invite and withdraw every knock: the accounts service calls
// it after deactivating the account (spec: deactivation "leaves all rooms").
// It goes on after a room fails and returns the errors together.
func (s *Server) LeaveAllRooms(ctx context.Context, user id.UserID) error {
	rooms, err := s.db.RoomsOfUser(ctx, string(user), "join", "invite", "knock")
	if err != nil {
		return err
	}
	var errs []error
	for _, m := range rooms {
		err := s.ChangeMembership(ctx, MembershipAction{Sender: user, RoomID: id.RoomID(m.RoomID), Target: user, Action: "leave", deactivating: true})
		if err != nil {
			errs = append(errs, fmt.Errorf("leaving %s: %w", m.RoomID, err))
		}
	}
	return errors.Join(errs...)
}
