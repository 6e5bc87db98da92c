package clientapi

import (
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/myelin-chat/myelin/ephemeral"
	"github.com/myelin-chat/myelin/internal/authn"
	"github.com/myelin-chat/myelin/internal/mxhttp"
)

func (a *API) presenceRoutes(r chi.Router) {
	r.Method(http.MethodGet, "/presence/{userId}/status", mxhttp.JSON(a.getPresence))
	r.Method(http.MethodPut, "/presence/{userId}/status", mxhttp.JSON(a.putPresence))
}

// getPresence: GET /presence/{userId}/status (presence.yaml).
func (a *API) getPresence(r *http.Request) (any, error) {
	dev := authn.FromRequest(r)
	return a.Ephemeral.GetPresence(r.Context(), dev.UserID.String(), mxhttp.PathParam(r, "userId"))
}

// putPresence: PUT /presence/{userId}/status. With presence disabled the
// request is accepted and nothing is stored (the spec lets servers ignore it).
func (a *API) putPresence(r *http.Request) (any, error) {
	dev := authn.FromRequest(r)
	if mxhttp.PathParam(r, "userId") != dev.UserID.String() {
		return nil, mxhttp.Forbidden("You may only set your own presence")
	}
	var body struct {
		Presence  string  `json:"presence"`
		StatusMsg *string `json:"status_msg"`
	}
	if err := mxhttp.ReadJSON(r, &body); err != nil {
		return nil, err
	}
	if body.Presence == "" {
		return nil, mxhttp.BadJSON("presence is required")
	}
	if !ephemeral.ValidPresence(body.Presence) {
		return nil, mxhttp.InvalidParam("presence must be online, offline or unavailable")
	}
	return mxhttp.EmptyOr(a.Ephemeral.SetPresence(r.Context(), dev.UserID.String(), body.Presence, body.StatusMsg, true))
}
