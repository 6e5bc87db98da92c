package roomserver

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"maps"
	"math"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/id"
)

// upgradeCarriedState is the state copied into the replacement room.
var upgradeCarriedState = []string{
	"m.room.join_rules", "m.room.history_visibility", "m.room.guest_access", "m.room.name", "m.room.topic",
	"m.room.avatar", "m.room.encryption", "m.room.server_acl", "m.room.canonical_alias", "m.room.pinned_events",
}

// Upgrade replaces a room with a new one of another version: the new room
// links back through its create event's predecessor, the old room gets a
// tombstone pointing forward, state, power levels and aliases move across,
// and the old room is locked down.
func (s *Server) Upgrade(ctx context.Context, user id.UserID, oldRoom id.RoomID, newVersion string) (id.RoomID, error) {
	return s.UpgradeWithCreators(ctx, user, oldRoom, newVersion, nil)
}

// UpgradeWithCreators is Upgrade naming the new room's additional creators
// (the upgrade body's additional_creators: in v12 rooms, besides the
// upgrading user; ignored for versions without them, as the spec says).
func (s *Server) UpgradeWithCreators(ctx context.Context, user id.UserID, oldRoom id.RoomID, newVersion string, additionalCreators []string) (id.RoomID, error) {
	if !SupportedRoomVersion(newVersion) {
		return "", NewError(ErrUnsupportedRoomVersion, "Room version %q is not supported", newVersion)
	}
	extraCreators, err := upgradeCreators(user, id.RoomVersion(newVersion), additionalCreators)
	if err != nil {
		return "", err
	}
	rs, err := s.snapshotState(ctx, oldRoom)
	if errors.Is(err, ErrUnknownRoom) {
		return "", Forbidden("You are not in this room")
	}
	if err != nil {
		return "", err
	}
	if rs.membership(user) != "join" {
		return "", Forbidden("You are not in this room")
	}
	pl := s.powerLevels(rs)
	level := s.userLevel(rs, user)
	if level < pl.GetEventLevel(eventType("m.room.tombstone", true)) {
		return "", Forbidden("You may not upgrade this room")
	}
	if t := rs.get("m.room.tombstone", ""); t != nil {
		return "", BadJSON("This room has already been upgraded")
	}
	create := rs.get("m.room.create", "")
	req := &CreateRoomRequest{RoomVersion: newVersion, predecessor: &predecessor{roomID: oldRoom}}
	if last := rs.extremities; len(last) > 0 {
		req.predecessor.eventID = last[0].ID
	}
	if t := create.ContentString("type"); t != "" {
		req.CreationContent = map[string]json.RawMessage{"type": MustJSON(t)}
	}
	if f := create.PDU.Content; len(f) > 0 {
		var c map[string]json.RawMessage
		if json.Unmarshal(f, &c) == nil {
			// The residency zone our server pinned at creation goes with the
			// room (the replacement is in the same zone; its ACL is carried).
			for _, k := range []string{"m.federate", "org.myelin.residency"} {
				if v, ok := c[k]; ok {
					if req.CreationContent == nil {
						req.CreationContent = map[string]json.RawMessage{}
					}
					req.CreationContent[k] = v
				}
			}
		}
	}
	if len(extraCreators) > 0 {
		if req.CreationContent == nil {
			req.CreationContent = map[string]json.RawMessage{}
		}
		req.CreationContent["additional_creators"] = MustJSON(extraCreators)
	}
	for _, t := range upgradeCarriedState {
		if e := rs.get(t, ""); e != nil {
			req.carried = append(req.carried, InitialStateEvent{Type: t, Content: json.RawMessage(e.PDU.Content)})
		}
	}
	// Power levels: the old ones, with the upgrading user able to set up the
	// new room (creators of v12 rooms are implicit and must not be listed).
	var origPL map[string]json.RawMessage
	if e := rs.get("m.room.power_levels", ""); e != nil {
		_ = json.Unmarshal(e.PDU.Content, &origPL)
	}
	req.PowerLevelContentOverride = s.upgradedLevels(rs, user, extraCreators, origPL, id.RoomVersion(newVersion))
	// Keep the canonical alias state; the aliases themselves move below.
	newRoom, err := s.CreateRoom(ctx, user, req)
	if err != nil {
		return "", err
	}
	// Tombstone the old room and stop further activity there.
	if _, err := s.Send(ctx, SendRequest{Sender: user, RoomID: oldRoom, Type: "m.room.tombstone", StateKey: stateKeyPtr(""),
		Content: MustJSON(map[string]string{"body": "This room has been replaced", "replacement_room": string(newRoom)})}); err != nil {
		return "", err
	}
	if origPL != nil {
		s.lockDownOldRoom(ctx, user, oldRoom, origPL, level)
	}
	if err := s.db.MoveAliases(ctx, string(oldRoom), string(newRoom)); err != nil {
		return "", err
	}
	if row, err := s.db.GetRoom(ctx, string(oldRoom)); err == nil && row.IsPublic {
		_ = s.db.SetRoomPublic(ctx, string(oldRoom), false)
		_ = s.db.SetRoomPublic(ctx, string(newRoom), true)
	}
	return newRoom, nil
}

// upgradeCreators validates the additional creators asked for an upgrade to
// version nv: user IDs, without repeats or the upgrading user (a creator
// anyway); none for a version without additional creators.
func upgradeCreators(user id.UserID, nv id.RoomVersion, asked []string) ([]id.UserID, error) {
	if !nv.PrivilegedRoomCreators() {
		return nil, nil
	}
	var out []id.UserID
	for _, u := range asked {
		if !ValidUserID(u) {
			return nil, BadJSON("Invalid user ID %q in additional_creators", u)
		}
		if id.UserID(u) != user {
			out = append(out, id.UserID(u))
		}
	}
	return uniqueUsers(out), nil
}

// upgradedLevels are the power levels of the replacement room: the old ones
// as integers within canonical JSON's range (string levels of old room
// versions are invalid from v10), with the upgrading user at 100 or more.
// Creators of a v12 room are above every level there; in a room of an
// earlier version they get the highest level the old room names, so that
// they still rank with its top.
func (s *Server) upgradedLevels(rs *roomState, user id.UserID, extraCreators []id.UserID, origPL map[string]json.RawMessage, nv id.RoomVersion) map[string]json.RawMessage {
	pl := integerLevels(origPL)
	users := map[string]int64{}
	if raw, ok := pl["users"]; ok {
		_ = json.Unmarshal(raw, &users)
	}
	if nv.PrivilegedRoomCreators() {
		delete(users, string(user))
		for _, c := range extraCreators {
			delete(users, string(c))
		}
	} else {
		mine := int64(s.userLevel(rs, user))
		if mine == math.MaxInt {
			mine = highestLevel(pl)
		}
		mine = max(100, clampCanonical(mine))
		users[string(user)] = mine
		if rs.version.PrivilegedRoomCreators() {
			for _, c := range creators(rs) {
				users[string(c)] = mine
			}
		}
	}
	pl["users"] = MustJSON(users)
	return pl
}

// lockDownOldRoom raises events_default and invite in the old room above
// users_default, so that only its moderators speak there (never lowering a
// level, nor raising one above the upgrading user's, which the auth rules
// would refuse). The upgrade is done by then: a failure is logged, as
// Synapse does.
func (s *Server) lockDownOldRoom(ctx context.Context, user id.UserID, oldRoom id.RoomID, origPL map[string]json.RawMessage, userLevel int) {
	level := func(key string, def int64) int64 {
		if n, ok := levelValue(gjson.ParseBytes(origPL[key])); ok {
			return clampCanonical(n)
		}
		return def
	}
	lock := min(max(50, level("users_default", 0)+1), clampCanonical(int64(userLevel)))
	restricted := maps.Clone(origPL)
	changed := false
	for _, k := range []string{"events_default", "invite"} {
		if level(k, 0) < lock {
			restricted[k] = MustJSON(lock)
			changed = true
		}
	}
	if !changed {
		return
	}
	if _, err := s.Send(ctx, SendRequest{Sender: user, RoomID: oldRoom, Type: "m.room.power_levels", StateKey: stateKeyPtr(""),
		Content: MustJSON(restricted)}); err != nil {
		slog.Warn("roomserver: cannot lock down the upgraded room", "room", oldRoom, "err", err)
	}
}
