package federationapi

import (
	"context"
	"net/http"
	"slices"
	"strings"

	"github.com/tidwall/gjson"

	"github.com/myelin-chat/myelin/directory"
	"github.com/myelin-chat/myelin/federation"
	"github.com/myelin-chat/myelin/internal/mxhttp"
	"github.com/myelin-chat/myelin/residency"
	"github.com/myelin-chat/myelin/roomserver"
	"github.com/myelin-chat/myelin/roomview"
)

// GET /_matrix/federation/v1/query/directory?room_alias=: a local alias, with
// the servers in the room (ours first).
func (a *API) queryDirectory(r *http.Request) (any, error) {
	alias := r.URL.Query().Get("room_alias")
	if alias == "" {
		return nil, mxhttp.MissingParam("room_alias is required")
	}
	if !roomserver.ValidAlias(alias) {
		return nil, mxhttp.InvalidParam("Invalid room alias")
	}
	if !strings.HasSuffix(alias, ":"+a.serverName) {
		return nil, mxhttp.NotFound("Room alias %s is not hosted on this server", alias)
	}
	info, err := a.directory.GetAlias(r.Context(), alias)
	if err != nil {
		return nil, roomAnswer(err)
	}
	origin := federation.Origin(r.Context())
	if err := a.admitRoom(r, string(info.RoomID), origin, residency.Directory); err != nil {
		return nil, err
	}
	servers, err := a.store.JoinedServers(r.Context(), string(info.RoomID))
	if err != nil {
		return nil, err
	}
	out := []string{a.serverName}
	for _, s := range servers {
		if s != a.serverName {
			out = append(out, s)
		}
	}
	slices.Sort(out[1:])
	a.served(r, origin, residency.Directory, string(info.RoomID), 1)
	return map[string]any{"room_id": info.RoomID, "servers": out}, nil
}

// GET and POST /_matrix/federation/v1/publicRooms: the published local rooms.
func (a *API) publicRooms(r *http.Request) (any, error) {
	var req directory.PublicRoomsRequest
	q := r.URL.Query()
	if r.Method == http.MethodPost {
		var body struct {
			Limit  *int64 `json:"limit"`
			Since  string `json:"since"`
			Filter *struct {
				GenericSearchTerm string    `json:"generic_search_term"`
				RoomTypes         []*string `json:"room_types"`
			} `json:"filter"`
			IncludeAllNetworks   bool   `json:"include_all_networks"`
			ThirdPartyInstanceID string `json:"third_party_instance_id"`
		}
		if err := mxhttp.ReadJSON(r, &body); err != nil {
			return nil, err
		}
		if body.Limit != nil {
			if *body.Limit < 1 {
				return nil, mxhttp.InvalidParam("limit must be a positive integer")
			}
			req.Limit = int(min(*body.Limit, maxPublicRoomsLimit))
		}
		req.Since = body.Since
		if body.Filter != nil {
			req.Filter.GenericSearchTerm, req.Filter.RoomTypes = body.Filter.GenericSearchTerm, body.Filter.RoomTypes
		}
	} else {
		n, err := limitParam(q.Get("limit"), 0, maxPublicRoomsLimit)
		if err != nil {
			return nil, err
		}
		req.Limit, req.Since = n, q.Get("since")
	}
	if req.Limit == 0 {
		req.Limit = defaultPublicRoomsCap
	}
	resp, err := a.directory.PublicRooms(r.Context(), req)
	if err != nil {
		return nil, roomAnswer(err)
	}
	// Only the rooms whose zone admits the server to directory entries: a
	// page may come out shorter than asked, its next_batch still continues.
	origin := federation.Origin(r.Context())
	kept := resp.Chunk[:0]
	for _, room := range resp.Chunk {
		if a.roomAdmits(r.Context(), string(room.RoomID), origin, residency.Directory) {
			kept = append(kept, room)
		}
	}
	resp.TotalRoomCountEstimate = max(0, resp.TotalRoomCountEstimate-(len(resp.Chunk)-len(kept)))
	resp.Chunk = kept
	a.served(r, origin, residency.Directory, "", len(kept))
	return resp, nil
}

// GET /_matrix/federation/v1/hierarchy/{roomId}?suggested_only=: a local
// space and its children, as far as the requesting server may see them.
func (a *API) hierarchy(r *http.Request) (any, error) {
	ctx, origin := r.Context(), federation.Origin(r.Context())
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	var suggested bool
	switch v := r.URL.Query().Get("suggested_only"); v {
	case "", "false":
	case "true":
		suggested = true
	default:
		return nil, mxhttp.InvalidParam("suggested_only must be true or false")
	}
	if err := a.knownRoom(ctx, roomID); err != nil {
		return nil, err
	}
	if err := a.admitRoom(r, string(roomID), origin, residency.Directory); err != nil {
		return nil, err
	}
	if err := a.checkACL(ctx, roomID, origin); err != nil {
		return nil, err
	}
	resp, err := a.spaces.ServerHierarchy(ctx, origin, roomID, suggested)
	if err != nil {
		return nil, roomAnswer(err)
	}
	a.keepAdmittedChildren(ctx, resp, origin)
	n := len(resp.Children)
	if resp.Room != nil {
		n++
	}
	a.served(r, origin, residency.Directory, string(roomID), n)
	return resp, nil
}

// keepAdmittedChildren leaves out of a hierarchy the children whose zone
// does not admit origin to directory entries: their summaries, their
// m.space.child events and their IDs among the inaccessible children (the
// server is not told they exist).
func (a *API) keepAdmittedChildren(ctx context.Context, resp *roomview.ServerHierarchyResponse, origin string) {
	if a.residency == nil {
		return
	}
	admitted := map[string]bool{}
	admits := func(roomID string) bool {
		ok, seen := admitted[roomID]
		if !seen {
			ok = a.roomAdmits(ctx, roomID, origin, residency.Directory)
			admitted[roomID] = ok
		}
		return ok
	}
	children := resp.Children[:0]
	for _, c := range resp.Children {
		if admits(string(c.RoomID)) {
			children = append(children, c)
		}
	}
	resp.Children = children
	inaccessible := resp.InaccessibleChildren[:0]
	for _, c := range resp.InaccessibleChildren {
		if admits(string(c)) {
			inaccessible = append(inaccessible, c)
		}
	}
	resp.InaccessibleChildren = inaccessible
	if resp.Room != nil {
		state := resp.Room.ChildrenState[:0]
		for _, ev := range resp.Room.ChildrenState {
			if admits(gjson.GetBytes(ev, "state_key").Str) {
				state = append(state, ev)
			}
		}
		resp.Room.ChildrenState = state
	}
}
