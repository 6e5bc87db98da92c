package roomserver

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"sort"
	"strconv"
	"strings"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/storage"
)

// SetAlias maps a local alias to a room (PUT /directory/room/{alias}).
func (s *Server) SetAlias(ctx context.Context, user id.UserID, alias string, roomID id.RoomID) error {
	if !ValidAlias(alias) {
		return invalidParam("Invalid room alias")
	}
	if _, server, _ := strings.Cut(alias, ":"); server != s.serverName {
		return invalidParam("Alias must be on this server")
	}
	if !ValidRoomID(string(roomID)) {
		return invalidParam("Invalid room ID")
	}
	if _, err := s.roomVersion(ctx, roomID); errors.Is(err, ErrUnknownRoom) {
		return notFound("Unknown room")
	} else if err != nil {
		return err
	}
	if m, err := s.db.GetMembership(ctx, string(roomID), string(user)); err != nil || m.Membership != "join" {
		return forbidden("You are not in this room")
	}
	if err := s.db.CreateAlias(ctx, alias, string(roomID), string(user)); errors.Is(err, storage.ErrAliasExists) {
		return newError(ErrConflict, "Room alias already exists")
	} else if err != nil {
		return err
	}
	return nil
}

// AliasInfo is GET /directory/room/{alias}.
type AliasInfo struct {
	RoomID  id.RoomID `json:"room_id"`
	Servers []string  `json:"servers"`
}

// GetAlias resolves an alias.
func (s *Server) GetAlias(ctx context.Context, alias string) (*AliasInfo, error) {
	if !ValidAlias(alias) {
		return nil, invalidParam("Invalid room alias")
	}
	roomID, _, err := s.db.ResolveAlias(ctx, alias)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, notFound("Room alias %s not found", alias)
	}
	if err != nil {
		return nil, err
	}
	return &AliasInfo{RoomID: id.RoomID(roomID), Servers: []string{s.serverName}}, nil
}

// DeleteAlias removes an alias: its creator, a room member with the power to
// change m.room.canonical_alias, or a server admin may.
func (s *Server) DeleteAlias(ctx context.Context, user id.UserID, isAdmin bool, alias string) error {
	if !ValidAlias(alias) {
		return invalidParam("Invalid room alias")
	}
	roomID, creator, err := s.db.ResolveAlias(ctx, alias)
	if errors.Is(err, storage.ErrNotFound) {
		return notFound("Room alias %s not found", alias)
	}
	if err != nil {
		return err
	}
	if creator != string(user) && !isAdmin {
		rs, err := s.snapshotState(ctx, id.RoomID(roomID))
		if err != nil {
			return err
		}
		pl := s.powerLevels(rs)
		if rs.membership(user) != "join" || s.userLevel(rs, user) < pl.GetEventLevel(eventType("m.room.canonical_alias", true)) {
			return forbidden("You may not delete this alias")
		}
	}
	if err := s.db.DeleteAlias(ctx, alias); err != nil {
		return err
	}
	s.dropCanonicalAlias(ctx, user, id.RoomID(roomID), alias)
	return nil
}

// dropCanonicalAlias removes a deleted alias from the room's
// m.room.canonical_alias (alias and alt_aliases), as the deleting user, so
// that the room does not advertise an alias that leads nowhere. The alias is
// gone by then whatever happens here: a user without the power to change the
// event (an alias creator may delete their alias without it) leaves the event
// as it is, as in Synapse.
func (s *Server) dropCanonicalAlias(ctx context.Context, user id.UserID, roomID id.RoomID, alias string) {
	_, err := s.submit(ctx, roomID, &request{makers: []maker{func(rs *roomState) (*proto, error) {
		cur := rs.get("m.room.canonical_alias", "")
		if cur == nil {
			return nil, errSkip
		}
		content, changed := withoutAlias(cur.PDU.Content, alias)
		if !changed {
			return nil, errSkip
		}
		return &proto{Type: "m.room.canonical_alias", StateKey: stateKeyPtr(""), Sender: user, Content: content}, nil
	}}})
	if err != nil && !errors.Is(err, errSkip) {
		slog.Info("roomserver: deleted alias left in m.room.canonical_alias", "room", roomID, "alias", alias, "user", user, "err", err)
	}
}

// withoutAlias returns canonical_alias content without alias, and whether
// it was there. Other keys are kept; an emptied alt_aliases is dropped.
func withoutAlias(content json.RawMessage, alias string) (json.RawMessage, bool) {
	var c map[string]json.RawMessage
	if err := json.Unmarshal(content, &c); err != nil {
		return nil, false
	}
	changed := false
	var main string
	if json.Unmarshal(c["alias"], &main) == nil && main == alias {
		delete(c, "alias")
		changed = true
	}
	var alt []json.RawMessage
	if raw, ok := c["alt_aliases"]; ok && json.Unmarshal(raw, &alt) == nil {
		kept := alt[:0]
		for _, a := range alt {
			var s string
			if json.Unmarshal(a, &s) == nil && s == alias {
				changed = true
				continue
			}
			kept = append(kept, a)
		}
		if len(kept) == 0 {
			delete(c, "alt_aliases")
		} else {
			c["alt_aliases"] = mustJSON(kept)
		}
	}
	return mustJSON(c), changed
}

// RoomAliases lists a room's local aliases; the user must be able to see the room.
func (s *Server) RoomAliases(ctx context.Context, user id.UserID, roomID id.RoomID) ([]string, error) {
	_, v, err := s.roomAndViewer(ctx, user, roomID)
	if err != nil {
		return nil, err
	}
	if v.current() != "join" {
		cur, err := s.db.CurrentStateEvent(ctx, string(roomID), "m.room.history_visibility", "")
		if err != nil || gjson.GetBytes(cur.JSON, "content.history_visibility").Str != "world_readable" {
			return nil, forbidden("You are not in this room")
		}
	}
	return s.db.RoomAliases(ctx, string(roomID))
}

// SetVisibility publishes a room in (or removes it from) the directory.
func (s *Server) SetVisibility(ctx context.Context, user id.UserID, roomID id.RoomID, visibility string) error {
	if visibility != "public" && visibility != "private" {
		return invalidParam("visibility must be public or private")
	}
	rs, err := s.snapshotState(ctx, roomID)
	if errors.Is(err, ErrUnknownRoom) {
		return notFound("Unknown room")
	}
	if err != nil {
		return err
	}
	pl := s.powerLevels(rs)
	if rs.membership(user) != "join" || s.userLevel(rs, user) < pl.GetEventLevel(eventType("m.room.canonical_alias", true)) {
		return forbidden("You may not change this room's directory visibility")
	}
	return s.db.SetRoomPublic(ctx, string(roomID), visibility == "public")
}

// GetVisibility returns a room's directory visibility.
func (s *Server) GetVisibility(ctx context.Context, roomID id.RoomID) (string, error) {
	row, err := s.db.GetRoom(ctx, string(roomID))
	if errors.Is(err, storage.ErrNotFound) {
		return "", notFound("Unknown room")
	}
	if err != nil {
		return "", err
	}
	if row.IsPublic {
		return "public", nil
	}
	return "private", nil
}

// PublicRoom is a room directory entry (also the room summary's base).
type PublicRoom struct {
	RoomID           id.RoomID `json:"room_id"`
	Name             string    `json:"name,omitempty"`
	Topic            string    `json:"topic,omitempty"`
	CanonicalAlias   string    `json:"canonical_alias,omitempty"`
	AvatarURL        string    `json:"avatar_url,omitempty"`
	NumJoinedMembers int       `json:"num_joined_members"`
	WorldReadable    bool      `json:"world_readable"`
	GuestCanJoin     bool      `json:"guest_can_join"`
	JoinRule         string    `json:"join_rule,omitempty"`
	RoomType         string    `json:"room_type,omitempty"`
}

// PublicRoomsRequest is GET/POST /publicRooms.
type PublicRoomsRequest struct {
	Limit  int
	Since  string
	Filter struct {
		GenericSearchTerm string    `json:"generic_search_term"`
		RoomTypes         []*string `json:"room_types"`
	}
}

// PublicRoomsResponse is the directory page.
type PublicRoomsResponse struct {
	Chunk                  []*PublicRoom `json:"chunk"`
	NextBatch              string        `json:"next_batch,omitempty"`
	PrevBatch              string        `json:"prev_batch,omitempty"`
	TotalRoomCountEstimate int           `json:"total_room_count_estimate"`
}

// PublicRooms lists published rooms, most members first.
func (s *Server) PublicRooms(ctx context.Context, req PublicRoomsRequest) (*PublicRoomsResponse, error) {
	ids, err := s.db.PublicRoomIDs(ctx)
	if err != nil {
		return nil, err
	}
	var rooms []*PublicRoom
	term := strings.ToLower(req.Filter.GenericSearchTerm)
	for _, r := range ids {
		pr, err := s.roomInfo(ctx, id.RoomID(r))
		if err != nil {
			return nil, err
		}
		if term != "" && !strings.Contains(strings.ToLower(pr.Name+" "+pr.Topic+" "+pr.CanonicalAlias), term) {
			continue
		}
		if req.Filter.RoomTypes != nil {
			ok := false
			for _, t := range req.Filter.RoomTypes {
				ok = ok || (t == nil && pr.RoomType == "") || (t != nil && *t == pr.RoomType)
			}
			if !ok {
				continue
			}
		}
		rooms = append(rooms, pr)
	}
	sort.SliceStable(rooms, func(i, j int) bool {
		if rooms[i].NumJoinedMembers != rooms[j].NumJoinedMembers {
			return rooms[i].NumJoinedMembers > rooms[j].NumJoinedMembers
		}
		return rooms[i].RoomID < rooms[j].RoomID
	})
	start := 0
	if req.Since != "" {
		n, err := strconv.Atoi(strings.TrimPrefix(req.Since, "o"))
		if err != nil || n < 0 {
			return nil, invalidParam("Invalid since token")
		}
		start = min(n, len(rooms))
	}
	limit := req.Limit
	if limit <= 0 || limit > 500 {
		limit = 100
	}
	end := min(start+limit, len(rooms))
	resp := &PublicRoomsResponse{Chunk: rooms[start:end], TotalRoomCountEstimate: len(rooms)}
	if resp.Chunk == nil {
		resp.Chunk = []*PublicRoom{}
	}
	if end < len(rooms) {
		resp.NextBatch = "o" + strconv.Itoa(end)
	}
	if start > 0 {
		resp.PrevBatch = "o" + strconv.Itoa(max(0, start-limit))
	}
	return resp, nil
}

// roomInfo summarizes a room from its current state.
func (s *Server) roomInfo(ctx context.Context, roomID id.RoomID) (*PublicRoom, error) {
	pr := &PublicRoom{RoomID: roomID}
	get := func(t, path string) string {
		e, err := s.db.CurrentStateEvent(ctx, string(roomID), t, "")
		if err != nil {
			return ""
		}
		return gjson.GetBytes(e.JSON, "content."+path).Str
	}
	pr.Name, pr.Topic, pr.CanonicalAlias, pr.AvatarURL = get("m.room.name", "name"), get("m.room.topic", "topic"),
		get("m.room.canonical_alias", "alias"), get("m.room.avatar", "url")
	pr.WorldReadable = get("m.room.history_visibility", "history_visibility") == "world_readable"
	pr.GuestCanJoin = get("m.room.guest_access", "guest_access") == "can_join"
	pr.JoinRule = get("m.room.join_rules", "join_rule")
	pr.RoomType = get("m.room.create", "type")
	joined, _, err := s.db.MemberCounts(ctx, string(roomID))
	if err != nil {
		return nil, err
	}
	pr.NumJoinedMembers = joined
	return pr, nil
}
