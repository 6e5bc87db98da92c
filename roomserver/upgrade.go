package roomserver

import (
	"context"
	"encoding/json"
	"errors"

	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/internal/mxhttp"
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
	if !SupportedRoomVersion(newVersion) {
		return "", mxhttp.UnsupportedRoomVer("Room version %q is not supported", newVersion)
	}
	rs, err := s.snapshotState(ctx, oldRoom)
	if errors.Is(err, ErrUnknownRoom) {
		return "", mxhttp.Forbidden("You are not in this room")
	}
	if err != nil {
		return "", err
	}
	if rs.membership(user) != "join" {
		return "", mxhttp.Forbidden("You are not in this room")
	}
	pl := s.powerLevels(rs)
	level := s.userLevel(rs, user)
	if level < pl.GetEventLevel(eventType("m.room.tombstone", true)) {
		return "", mxhttp.Forbidden("You may not upgrade this room")
	}
	if t := rs.get("m.room.tombstone", ""); t != nil {
		return "", mxhttp.BadJSON("This room has already been upgraded")
	}
	create := rs.get("m.room.create", "")
	req := &CreateRoomRequest{RoomVersion: newVersion, predecessor: &predecessor{roomID: oldRoom}}
	if last := rs.extremities; len(last) > 0 {
		req.predecessor.eventID = last[0].ID
	}
	if t := create.ContentString("type"); t != "" {
		req.CreationContent = map[string]json.RawMessage{"type": mustJSON(t)}
	}
	if f := create.PDU.Content; len(f) > 0 {
		var c map[string]json.RawMessage
		if json.Unmarshal(f, &c) == nil {
			if v, ok := c["m.federate"]; ok {
				if req.CreationContent == nil {
					req.CreationContent = map[string]json.RawMessage{}
				}
				req.CreationContent["m.federate"] = v
			}
		}
	}
	for _, t := range upgradeCarriedState {
		if e := rs.get(t, ""); e != nil {
			req.carried = append(req.carried, InitialStateEvent{Type: t, Content: json.RawMessage(e.PDU.Content)})
		}
	}
	// Power levels: the old ones, with the upgrading user able to set up the
	// new room (creators of v12 rooms are implicit and must not be listed).
	var oldPL map[string]json.RawMessage
	if e := rs.get("m.room.power_levels", ""); e != nil {
		_ = json.Unmarshal(e.PDU.Content, &oldPL)
	}
	if oldPL == nil {
		oldPL = map[string]json.RawMessage{}
	}
	users := map[string]json.RawMessage{}
	if raw, ok := oldPL["users"]; ok {
		_ = json.Unmarshal(raw, &users)
	}
	nv := id.RoomVersion(newVersion)
	if nv.PrivilegedRoomCreators() {
		delete(users, string(user))
	} else {
		users[string(user)] = mustJSON(max(100, min(level, 1<<53)))
	}
	oldPL["users"] = mustJSON(users)
	req.PowerLevelContentOverride = oldPL
	// Keep the canonical alias state; the aliases themselves move below.
	newRoom, err := s.CreateRoom(ctx, user, req)
	if err != nil {
		return "", err
	}
	// Tombstone the old room and stop further activity there.
	if _, err := s.Send(ctx, SendRequest{Sender: user, RoomID: oldRoom, Type: "m.room.tombstone", StateKey: stateKeyPtr(""),
		Content: mustJSON(map[string]string{"body": "This room has been replaced", "replacement_room": string(newRoom)})}); err != nil {
		return "", err
	}
	restricted := map[string]json.RawMessage{}
	for k, v := range oldPL {
		restricted[k] = v
	}
	var usersDefault int
	if raw, ok := oldPL["users_default"]; ok {
		_ = json.Unmarshal(raw, &usersDefault)
	}
	lock := mustJSON(max(50, usersDefault+1))
	restricted["events_default"], restricted["invite"] = lock, lock
	if e := rs.get("m.room.power_levels", ""); e != nil {
		var orig map[string]json.RawMessage
		_ = json.Unmarshal(e.PDU.Content, &orig)
		restricted["users"] = orig["users"]
		if _, err := s.Send(ctx, SendRequest{Sender: user, RoomID: oldRoom, Type: "m.room.power_levels", StateKey: stateKeyPtr(""),
			Content: mustJSON(restricted)}); err != nil {
			return "", err
		}
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
