package roomview

import (
	"context"
	"encoding/json"
	"errors"
	"slices"

	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/roomserver"
)

// ServerHierarchyChild is a child room of GET /_matrix/federation/v1/hierarchy.
type ServerHierarchyChild struct {
	PublicRoom
	AllowedRoomIDs []string `json:"allowed_room_ids,omitempty"`
}

// ServerHierarchyResponse is the federation /hierarchy answer: the space,
// its children the requesting server may peek or join, and the rest.
type ServerHierarchyResponse struct {
	Room                 *HierarchyRoom          `json:"room"`
	Children             []*ServerHierarchyChild `json:"children"`
	InaccessibleChildren []id.RoomID             `json:"inaccessible_children"`
}

// maxServerHierarchyChildren bounds the children one answer describes.
const maxServerHierarchyChildren = 200

// ServerHierarchy is a space and its direct children (known locally) as the
// server-server API lists them for server: no pagination, one level. A room
// is accessible to a server when it is public, knockable or world_readable,
// when the server has joined members in it, or, for a restricted room, in
// one of the rooms its join rule allows. ErrNotFound for an unknown room or
// one the server may not see.
func (s *Service) ServerHierarchy(ctx context.Context, server string, roomID id.RoomID, suggestedOnly bool) (*ServerHierarchyResponse, error) {
	if _, err := roomserver.RoomVersion(ctx, s.db, roomID); err != nil {
		return nil, err
	}
	info, allowed, ok, err := s.serverMayPeek(ctx, server, roomID)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, roomserver.NotFound("Room %s is not accessible to %s", roomID, server)
	}
	root := &HierarchyRoom{PublicRoom: *info, AllowedRoomIDs: allowed, ChildrenState: []json.RawMessage{}}
	resp := &ServerHierarchyResponse{Room: root, Children: []*ServerHierarchyChild{}, InaccessibleChildren: []id.RoomID{}}
	if info.RoomType != "m.space" {
		return resp, nil
	}
	children, err := s.spaceChildren(ctx, roomID, suggestedOnly)
	if err != nil {
		return nil, err
	}
	for i, c := range children {
		if i == maxServerHierarchyChildren {
			break
		}
		root.ChildrenState = append(root.ChildrenState, c.event)
		if c.room == roomID {
			continue
		}
		if _, err := roomserver.RoomVersion(ctx, s.db, c.room); errors.Is(err, roomserver.ErrUnknownRoom) {
			continue // no details to give: left out, as the spec says
		} else if err != nil {
			return nil, err
		}
		cinfo, callowed, ok, err := s.serverMayPeek(ctx, server, c.room)
		if err != nil {
			return nil, err
		}
		if !ok {
			resp.InaccessibleChildren = append(resp.InaccessibleChildren, c.room)
			continue
		}
		resp.Children = append(resp.Children, &ServerHierarchyChild{PublicRoom: *cinfo, AllowedRoomIDs: callowed})
	}
	return resp, nil
}

// serverMayPeek is a room's summary, its allowed rooms and whether server
// may see it in a hierarchy.
func (s *Service) serverMayPeek(ctx context.Context, server string, roomID id.RoomID) (*PublicRoom, []string, bool, error) {
	info, err := s.roomInfo(ctx, roomID)
	if err != nil {
		return nil, nil, false, err
	}
	allowed, err := s.allowedRooms(ctx, roomID, info.JoinRule)
	if err != nil {
		return nil, nil, false, err
	}
	switch info.JoinRule {
	case "public", "knock", "knock_restricted":
		return info, allowed, true, nil
	}
	if info.WorldReadable {
		return info, allowed, true, nil
	}
	in := func(room string) (bool, error) {
		servers, err := s.db.JoinedServers(ctx, room)
		return slices.Contains(servers, server), err
	}
	if ok, err := in(string(roomID)); err != nil || ok {
		return info, allowed, ok, err
	}
	if info.JoinRule == "restricted" {
		for _, a := range allowed {
			if ok, err := in(a); err != nil || ok {
				return info, allowed, ok, err
			}
		}
	}
	return info, allowed, false, nil
}
