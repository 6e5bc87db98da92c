package clientapi

import (
	"context"
	"net/http"

	"github.com/go-chi/chi/v5"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/directory"
	"github.com/myelin-chat/myelin/internal/authn"
	"github.com/myelin-chat/myelin/internal/mxhttp"
)

// Directory is what the alias and room directory handlers need (directory).
type Directory interface {
	SetAlias(ctx context.Context, user id.UserID, alias string, roomID id.RoomID) error
	GetAlias(ctx context.Context, alias string) (*directory.AliasInfo, error)
	DeleteAlias(ctx context.Context, user id.UserID, isAdmin bool, alias string) error
	RoomAliases(ctx context.Context, user id.UserID, roomID id.RoomID) ([]string, error)
	SetVisibility(ctx context.Context, user id.UserID, roomID id.RoomID, visibility string) error
	GetVisibility(ctx context.Context, roomID id.RoomID) (string, error)
	PublicRooms(ctx context.Context, req directory.PublicRoomsRequest) (*directory.PublicRoomsResponse, error)
}

func (a *API) directoryRoutes(r chi.Router) {
	if a.Directory == nil {
		return
	}
	r.Method(http.MethodPut, "/directory/room/{alias}", mxhttp.JSON(a.putAlias))
	r.Method(http.MethodDelete, "/directory/room/{alias}", mxhttp.JSON(a.deleteAlias))
	r.Method(http.MethodGet, "/rooms/{roomID}/aliases", mxhttp.JSON(a.roomAliases))
	r.Method(http.MethodPut, "/directory/list/room/{roomID}", mxhttp.JSON(a.putVisibility))
	r.Method(http.MethodPost, "/publicRooms", mxhttp.JSON(a.publicRooms))
}

func (a *API) putAlias(r *http.Request) (any, error) {
	var body struct {
		RoomID string `json:"room_id"`
	}
	if err := mxhttp.ReadJSON(r, &body); err != nil {
		return nil, err
	}
	if body.RoomID == "" {
		return nil, mxhttp.MissingParam("Missing room_id")
	}
	return mxhttp.EmptyOr(roomError(a.Directory.SetAlias(r.Context(), authn.FromRequest(r).UserID, mxhttp.PathParam(r, "alias"), id.RoomID(body.RoomID))))
}

func (a *API) getAlias(r *http.Request) (any, error) {
	return roomResult(a.Directory.GetAlias(r.Context(), mxhttp.PathParam(r, "alias")))
}

func (a *API) deleteAlias(r *http.Request) (any, error) {
	d := authn.FromRequest(r)
	return mxhttp.EmptyOr(roomError(a.Directory.DeleteAlias(r.Context(), d.UserID, d.IsAdmin, mxhttp.PathParam(r, "alias"))))
}

func (a *API) roomAliases(r *http.Request) (any, error) {
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	aliases, err := a.Directory.RoomAliases(r.Context(), authn.FromRequest(r).UserID, roomID)
	if err != nil {
		return nil, roomError(err)
	}
	return map[string]any{"aliases": aliases}, nil
}

func (a *API) putVisibility(r *http.Request) (any, error) {
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	var body struct {
		Visibility string `json:"visibility"`
	}
	if err := mxhttp.ReadJSON(r, &body); err != nil {
		return nil, err
	}
	return mxhttp.EmptyOr(roomError(a.Directory.SetVisibility(r.Context(), authn.FromRequest(r).UserID, roomID, body.Visibility)))
}

func (a *API) getVisibility(r *http.Request) (any, error) {
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	v, err := a.Directory.GetVisibility(r.Context(), roomID)
	if err != nil {
		return nil, roomError(err)
	}
	return map[string]string{"visibility": v}, nil
}

func (a *API) publicRooms(r *http.Request) (any, error) {
	var req directory.PublicRoomsRequest
	q := r.URL.Query()
	if r.Method == http.MethodPost {
		var body struct {
			Limit  int    `json:"limit"`
			Since  string `json:"since"`
			Filter *struct {
				GenericSearchTerm string    `json:"generic_search_term"`
				RoomTypes         []*string `json:"room_types"`
			} `json:"filter"`
		}
		if err := mxhttp.ReadJSON(r, &body); err != nil {
			return nil, err
		}
		req.Limit, req.Since = body.Limit, body.Since
		if body.Filter != nil {
			req.Filter.GenericSearchTerm, req.Filter.RoomTypes = body.Filter.GenericSearchTerm, body.Filter.RoomTypes
		}
	} else {
		n, err := intParam(r, "limit", 0)
		if err != nil {
			return nil, err
		}
		req.Limit, req.Since = n, q.Get("since")
	}
	req.Server = q.Get("server")
	return roomResult(a.Directory.PublicRooms(r.Context(), req))
}
