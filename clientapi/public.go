package clientapi

import (
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/myelin-chat/myelin/internal/mxhttp"
)

// publicRoutes are the endpoints whose OpenAPI definition has no security
// section: they are served without an access token, and with one (then the
// token must be valid). authn.FromRequest is nil on an anonymous request.
func (a *API) publicRoutes(r chi.Router) {
	r.Method(http.MethodGet, "/profile/{userId}", mxhttp.JSON(a.getProfile))
	r.Method(http.MethodGet, "/profile/{userId}/{keyName}", mxhttp.JSON(a.getProfileField))
	if a.Directory == nil {
		return
	}
	r.Method(http.MethodGet, "/directory/room/{alias}", mxhttp.JSON(a.getAlias))
	r.Method(http.MethodGet, "/directory/list/room/{roomID}", mxhttp.JSON(a.getVisibility))
	r.Method(http.MethodGet, "/publicRooms", mxhttp.JSON(a.publicRooms))
}

// publicRoutesV1 are those under /v1: the room summary, which servers MAY
// serve anonymously for rooms anyone could find (room_summary.yaml).
func (a *API) publicRoutesV1(r chi.Router) {
	if a.RoomView == nil {
		return
	}
	r.Method(http.MethodGet, "/room_summary/{roomIDOrAlias}", mxhttp.JSON(a.roomSummary))
}
