package federationapi

import (
	"net/http"
	"slices"
	"strings"

	"github.com/myelin-chat/myelin/directory"
	"github.com/myelin-chat/myelin/federation"
	"github.com/myelin-chat/myelin/internal/mxhttp"
	"github.com/myelin-chat/myelin/roomserver"
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
	return resp, roomAnswer(err)
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
	if err := a.checkACL(ctx, roomID, origin); err != nil {
		return nil, err
	}
	resp, err := a.spaces.ServerHierarchy(ctx, origin, roomID, suggested)
	return resp, roomAnswer(err)
}
