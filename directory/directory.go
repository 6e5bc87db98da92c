// Package directory is the room directory: local room aliases (set, resolve,
// delete, list) and the rooms published in /publicRooms. It reads and
// writes its own tables through the store; the one room event it causes —
// dropping a deleted alias from m.room.canonical_alias — goes through the
// room writer (Rooms), as does the power check on the room's state. Its
// failures are the roomserver's error kinds (roomserver.Error).
package directory

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/internal/config"
	"github.com/myelin-chat/myelin/internal/mxhttp"
	"github.com/myelin-chat/myelin/roomserver"
	"github.com/myelin-chat/myelin/roomview"
	"github.com/myelin-chat/myelin/storage"
)

// Store is what the directory uses of the store (*storage.DB).
type Store interface {
	roomview.InfoStore // a published room's entry
	GetRoom(ctx context.Context, roomID string) (*storage.RoomRow, error)
	GetMembership(ctx context.Context, roomID, userID string) (*storage.Membership, error)
	CreateAlias(ctx context.Context, alias, roomID, creator string) error
	ResolveAlias(ctx context.Context, alias string) (roomID, creator string, err error)
	DeleteAlias(ctx context.Context, alias string) error
	RoomAliases(ctx context.Context, roomID string) ([]string, error)
	SetRoomPublic(ctx context.Context, roomID string, public bool) error
	PublicRoomIDs(ctx context.Context) ([]string, error)
	JoinedServers(ctx context.Context, roomID string) ([]string, error)
}

// Rooms is what the directory asks of the room writer (roomserver).
type Rooms interface {
	// MaySendState: whether user, joined, may send a state event of evType.
	MaySendState(ctx context.Context, user id.UserID, roomID id.RoomID, evType string) (bool, error)
	// EditState sends a new version of a state event made by edit from the current one.
	EditState(ctx context.Context, sender id.UserID, roomID id.RoomID, evType, stateKey string,
		edit func(content json.RawMessage) (json.RawMessage, bool)) (bool, error)
}

// Remote is what the directory asks of other servers (over federation): their
// aliases and their published rooms. Errors that mean "the server answered
// that it has none" are ErrRemoteNotFound.
type Remote interface {
	QueryDirectory(ctx context.Context, server, alias string) (*AliasInfo, error)
	PublicRooms(ctx context.Context, server string, req PublicRoomsRequest) (*PublicRoomsResponse, error)
}

// ErrRemoteNotFound is a remote server's 404.
var ErrRemoteNotFound = errors.New("not found on the remote server")

// Options are what the directory is built from.
type Options struct {
	Store      Store
	Rooms      Rooms
	ServerName string // aliases are made on this server only
	Remote     Remote // other servers' directories; nil: federation is off
}

// Service is the room directory.
type Service struct {
	db         Store
	rooms      Rooms
	serverName string
	remote     Remote
}

// New builds the directory.
func New(o Options) *Service {
	return &Service{db: o.Store, rooms: o.Rooms, serverName: o.ServerName, remote: o.Remote}
}

// SetAlias maps a local alias to a room (PUT /directory/room/{alias}).
func (s *Service) SetAlias(ctx context.Context, user id.UserID, alias string, roomID id.RoomID) error {
	if !roomserver.ValidAlias(alias) {
		return roomserver.InvalidParam("Invalid room alias")
	}
	if _, server, _ := strings.Cut(alias, ":"); server != s.serverName {
		return roomserver.InvalidParam("Alias must be on this server")
	}
	if !roomserver.ValidRoomID(string(roomID)) {
		return roomserver.InvalidParam("Invalid room ID")
	}
	if _, err := s.db.GetRoom(ctx, string(roomID)); errors.Is(err, storage.ErrNotFound) {
		return roomserver.NotFound("Unknown room")
	} else if err != nil {
		return err
	}
	m, err := s.db.GetMembership(ctx, string(roomID), string(user))
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return fmt.Errorf("reading %s's membership of %s: %w", user, roomID, err)
	}
	if m == nil || m.Membership != "join" {
		return roomserver.Forbidden("You are not in this room")
	}
	if err := s.db.CreateAlias(ctx, alias, string(roomID), string(user)); errors.Is(err, storage.ErrAliasExists) {
		return roomserver.NewError(roomserver.ErrConflict, "Room alias already exists")
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

// MaxAliasServers bounds the servers a resolved alias lists (ours, or what
// a remote server answered).
const MaxAliasServers = 50

// GetAlias resolves an alias: a local one from the store, with the servers in
// the room (ours first); another server's by asking it.
func (s *Service) GetAlias(ctx context.Context, alias string) (*AliasInfo, error) {
	if !roomserver.ValidAlias(alias) {
		return nil, roomserver.InvalidParam("Invalid room alias")
	}
	if _, server, _ := strings.Cut(alias, ":"); server != s.serverName {
		return s.remoteAlias(ctx, server, alias)
	}
	roomID, _, err := s.db.ResolveAlias(ctx, alias)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, roomserver.NotFound("Room alias %s not found", alias)
	}
	if err != nil {
		return nil, err
	}
	servers := []string{s.serverName}
	joined, err := s.db.JoinedServers(ctx, roomID)
	if err != nil {
		return nil, err
	}
	for _, srv := range joined {
		if srv != s.serverName && len(servers) < MaxAliasServers {
			servers = append(servers, srv)
		}
	}
	return &AliasInfo{RoomID: id.RoomID(roomID), Servers: servers}, nil
}

// remoteAlias asks the alias's server (GET /_matrix/federation/v1/query/directory).
// The answer is checked before a client or a join relies on it: a valid room
// ID, and the listed servers valid names, at most MaxAliasServers of them.
func (s *Service) remoteAlias(ctx context.Context, server, alias string) (*AliasInfo, error) {
	if s.remote == nil {
		return nil, roomserver.NotFound("Room alias %s not found: federation is off", alias)
	}
	info, err := s.remote.QueryDirectory(ctx, server, alias)
	if errors.Is(err, ErrRemoteNotFound) {
		return nil, roomserver.NotFound("Room alias %s not found", alias)
	}
	if refusal := policyRefusal(err); refusal != nil {
		return nil, refusal
	}
	if err != nil {
		return nil, roomserver.Unavailable("Could not resolve %s: %s did not answer", alias, server)
	}
	if !roomserver.ValidRoomID(string(info.RoomID)) {
		return nil, roomserver.Unavailable("Could not resolve %s: %s answered an invalid room ID", alias, server)
	}
	servers := make([]string, 0, min(len(info.Servers), MaxAliasServers))
	for _, srv := range info.Servers {
		if _, _, err := config.ParseServerName(srv); err == nil && len(servers) < MaxAliasServers && !slices.Contains(servers, srv) {
			servers = append(servers, srv)
		}
	}
	return &AliasInfo{RoomID: info.RoomID, Servers: servers}, nil
}

// DeleteAlias removes an alias: its creator, a room member with the power to
// change m.room.canonical_alias, or a server admin may.
func (s *Service) DeleteAlias(ctx context.Context, user id.UserID, isAdmin bool, alias string) error {
	if !roomserver.ValidAlias(alias) {
		return roomserver.InvalidParam("Invalid room alias")
	}
	roomID, creator, err := s.db.ResolveAlias(ctx, alias)
	if errors.Is(err, storage.ErrNotFound) {
		return roomserver.NotFound("Room alias %s not found", alias)
	}
	if err != nil {
		return err
	}
	if creator != string(user) && !isAdmin {
		may, err := s.rooms.MaySendState(ctx, user, id.RoomID(roomID), "m.room.canonical_alias")
		if err != nil {
			return err
		}
		if !may {
			return roomserver.Forbidden("You may not delete this alias")
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
func (s *Service) dropCanonicalAlias(ctx context.Context, user id.UserID, roomID id.RoomID, alias string) {
	_, err := s.rooms.EditState(ctx, user, roomID, "m.room.canonical_alias", "", func(content json.RawMessage) (json.RawMessage, bool) {
		return withoutAlias(content, alias)
	})
	if err != nil {
		slog.Info("directory: deleted alias left in m.room.canonical_alias", "room", roomID, "alias", alias, "user", user, "err", err)
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
			c["alt_aliases"] = roomserver.MustJSON(kept)
		}
	}
	return roomserver.MustJSON(c), changed
}

// RoomAliases lists a room's local aliases; the user must be able to see the room.
func (s *Service) RoomAliases(ctx context.Context, user id.UserID, roomID id.RoomID) ([]string, error) {
	if !roomserver.ValidRoomID(string(roomID)) {
		return nil, roomserver.InvalidParam("Invalid room ID")
	}
	if _, err := s.db.GetRoom(ctx, string(roomID)); errors.Is(err, storage.ErrNotFound) {
		return nil, roomserver.Forbidden("You are not in this room")
	} else if err != nil {
		return nil, err
	}
	m, err := s.db.GetMembership(ctx, string(roomID), string(user))
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return nil, fmt.Errorf("reading %s's membership of %s: %w", user, roomID, err)
	}
	if m == nil || m.Membership != "join" {
		cur, err := s.db.CurrentStateEvent(ctx, string(roomID), "m.room.history_visibility", "")
		if err != nil && !errors.Is(err, storage.ErrNotFound) {
			return nil, fmt.Errorf("reading the history visibility of %s: %w", roomID, err)
		}
		if cur == nil || gjson.GetBytes(cur.JSON, "content.history_visibility").Str != "world_readable" {
			return nil, roomserver.Forbidden("You are not in this room")
		}
	}
	return s.db.RoomAliases(ctx, string(roomID))
}

// SetVisibility publishes a room in (or removes it from) the directory.
func (s *Service) SetVisibility(ctx context.Context, user id.UserID, roomID id.RoomID, visibility string) error {
	if visibility != "public" && visibility != "private" {
		return roomserver.InvalidParam("visibility must be public or private")
	}
	may, err := s.rooms.MaySendState(ctx, user, roomID, "m.room.canonical_alias")
	if err != nil {
		return err
	}
	if !may {
		return roomserver.Forbidden("You may not change this room's directory visibility")
	}
	return s.db.SetRoomPublic(ctx, string(roomID), visibility == "public")
}

// GetVisibility returns a room's directory visibility.
func (s *Service) GetVisibility(ctx context.Context, roomID id.RoomID) (string, error) {
	row, err := s.db.GetRoom(ctx, string(roomID))
	if errors.Is(err, storage.ErrNotFound) {
		return "", roomserver.NotFound("Unknown room")
	}
	if err != nil {
		return "", err
	}
	if row.IsPublic {
		return "public", nil
	}
	return "private", nil
}

// PublicRoomsRequest is GET/POST /publicRooms.
type PublicRoomsRequest struct {
	Server string // another server's directory; empty: ours
	Limit  int
	Since  string
	Filter struct {
		GenericSearchTerm string    `json:"generic_search_term"`
		RoomTypes         []*string `json:"room_types"`
	}
}

// PublicRoomsResponse is the directory page.
type PublicRoomsResponse struct {
	Chunk                  []*roomview.PublicRoom `json:"chunk"`
	NextBatch              string                 `json:"next_batch,omitempty"`
	PrevBatch              string                 `json:"prev_batch,omitempty"`
	TotalRoomCountEstimate int                    `json:"total_room_count_estimate"`
}

// PublicRooms lists published rooms, most members first: ours, or, with
// req.Server naming another server, that server's (asked over federation).
func (s *Service) PublicRooms(ctx context.Context, req PublicRoomsRequest) (*PublicRoomsResponse, error) {
	if req.Server != "" && req.Server != s.serverName {
		return s.remotePublicRooms(ctx, req)
	}
	ids, err := s.db.PublicRoomIDs(ctx)
	if err != nil {
		return nil, err
	}
	var rooms []*roomview.PublicRoom
	term := strings.ToLower(req.Filter.GenericSearchTerm)
	for _, r := range ids {
		pr, err := roomview.RoomInfo(ctx, s.db, id.RoomID(r))
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
			return nil, roomserver.InvalidParam("Invalid since token")
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
		resp.Chunk = []*roomview.PublicRoom{}
	}
	if end < len(rooms) {
		resp.NextBatch = "o" + strconv.Itoa(end)
	}
	if start > 0 {
		resp.PrevBatch = "o" + strconv.Itoa(max(0, start-limit))
	}
	return resp, nil
}

// MaxRemoteRooms bounds the rooms of one remote directory page passed on.
const MaxRemoteRooms = 500

// remotePublicRooms asks another server for its directory
// (/_matrix/federation/v1/publicRooms) and passes on what it answers, each
// entry re-encoded from the fields the spec defines and with a valid room ID.
func (s *Service) remotePublicRooms(ctx context.Context, req PublicRoomsRequest) (*PublicRoomsResponse, error) {
	if _, _, err := config.ParseServerName(req.Server); err != nil {
		return nil, roomserver.InvalidParam("Invalid server name %q", req.Server)
	}
	if s.remote == nil {
		return nil, roomserver.Forbidden("Querying other servers' directories needs federation")
	}
	resp, err := s.remote.PublicRooms(ctx, req.Server, req)
	if errors.Is(err, ErrRemoteNotFound) {
		return nil, roomserver.NotFound("%s has no room directory", req.Server)
	}
	if refusal := policyRefusal(err); refusal != nil {
		return nil, refusal
	}
	if err != nil {
		return nil, roomserver.Unavailable("Could not read the room directory of %s", req.Server)
	}
	out := &PublicRoomsResponse{NextBatch: resp.NextBatch, PrevBatch: resp.PrevBatch,
		TotalRoomCountEstimate: max(resp.TotalRoomCountEstimate, 0), Chunk: []*roomview.PublicRoom{}}
	for _, r := range resp.Chunk {
		if r != nil && roomserver.ValidRoomID(string(r.RoomID)) && len(out.Chunk) < MaxRemoteRooms {
			out.Chunk = append(out.Chunk, r)
		}
	}
	return out, nil
}

// policyRefusal is err when it is a policy's refusal of the request before
// it was made (403 M_FORBIDDEN and its reason, for the client), else nil.
func policyRefusal(err error) error {
	if refusal := (*mxhttp.Error)(nil); errors.As(err, &refusal) && refusal.Status == http.StatusForbidden {
		return refusal
	}
	return nil
}
