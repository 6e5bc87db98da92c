package clientapi

import (
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/myelin-chat/myelin/internal/authn"
	"github.com/myelin-chat/myelin/internal/mxhttp"
	"github.com/myelin-chat/myelin/push"
)

func (a *API) pusherRoutes(r chi.Router) {
	r.Method(http.MethodGet, "/pushers", mxhttp.JSON(a.getPushers))
	r.Method(http.MethodPost, "/pushers/set", mxhttp.JSON(a.setPusher))
}

// getPushers: GET /pushers (pusher.yaml).
func (a *API) getPushers(r *http.Request) (any, error) {
	dev := authn.FromRequest(r)
	list, err := a.Push.Pushers(r.Context(), dev.UserID.String())
	if err != nil {
		return nil, err
	}
	return map[string]any{"pushers": list}, nil
}

// setPusher: POST /pushers/set. Pushers are stored; delivery to push gateways
// is not implemented yet.
func (a *API) setPusher(r *http.Request) (any, error) {
	dev := authn.FromRequest(r)
	var req push.PusherRequest
	if err := mxhttp.ReadJSON(r, &req); err != nil {
		return nil, err
	}
	return mxhttp.EmptyOr(a.Push.SetPusher(r.Context(), dev.UserID.String(), dev.DeviceID.String(), req))
}
