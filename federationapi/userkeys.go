package federationapi

import (
	"context"
	"encoding/json"
	"net/http"

	"github.com/go-chi/chi/v5"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/federation"
	"github.com/myelin-chat/myelin/internal/mxhttp"
	"github.com/myelin-chat/myelin/keyserver"
	"github.com/myelin-chat/myelin/residency"
)

// UserKeys answers other servers about our users' devices and keys (the
// keyserver). It refuses users of other servers (400 M_INVALID_PARAM, as
// Synapse answers 400 "Not a user here": a server answers only for its own
// users) and requests beyond its bounds (413 M_TOO_LARGE).
type UserKeys interface {
	LocalUserDevices(ctx context.Context, userID string) (*keyserver.UserDevicesResponse, error)
	FederationQuery(ctx context.Context, deviceKeys map[string][]string) (*keyserver.QueryResponse, error)
	FederationClaim(ctx context.Context, oneTimeKeys map[string]map[string]string) (map[string]map[string]map[string]json.RawMessage, error)
}

// maxUserKeysBody bounds a /user/keys/query or /user/keys/claim body: 1000
// users with a few devices each fit well within it.
const maxUserKeysBody = 1 << 20

func (a *API) mountUserKeys(r chi.Router) {
	if a.userKeys == nil {
		return
	}
	r.Get("/v1/user/devices/{userId}", mxhttp.JSON(a.userDevices).ServeHTTP)
	r.Post("/v1/user/keys/query", mxhttp.JSON(a.userKeysQuery).ServeHTTP)
	r.Post("/v1/user/keys/claim", mxhttp.JSON(a.userKeysClaim).ServeHTTP)
}

// GET /_matrix/federation/v1/user/devices/{userId}.
func (a *API) userDevices(r *http.Request) (any, error) {
	userID := mxhttp.PathParam(r, "userId")
	if _, _, err := id.UserID(userID).ParseAndValidateRelaxed(); err != nil || len(userID) > 255 {
		return nil, mxhttp.InvalidParam("Invalid user ID")
	}
	origin := federation.Origin(r.Context())
	if err := a.admitServer(r, origin, residency.DeviceKeys); err != nil {
		return nil, err
	}
	resp, err := a.userKeys.LocalUserDevices(r.Context(), userID)
	if err != nil {
		return nil, err
	}
	a.served(r, origin, residency.DeviceKeys, "", 1)
	return resp, nil
}

// readUserKeysBody reads a bounded JSON body into v.
func readUserKeysBody(r *http.Request, v any) error {
	r.Body = http.MaxBytesReader(nil, r.Body, maxUserKeysBody)
	return mxhttp.ReadJSON(r, v)
}

// POST /_matrix/federation/v1/user/keys/query.
func (a *API) userKeysQuery(r *http.Request) (any, error) {
	var body struct {
		DeviceKeys map[string][]string `json:"device_keys"`
	}
	if err := readUserKeysBody(r, &body); err != nil {
		return nil, err
	}
	if body.DeviceKeys == nil {
		return nil, mxhttp.MissingParam("device_keys is required")
	}
	origin := federation.Origin(r.Context())
	if err := a.admitServer(r, origin, residency.Keys); err != nil {
		return nil, err
	}
	resp, err := a.userKeys.FederationQuery(r.Context(), body.DeviceKeys)
	if err != nil {
		return nil, err
	}
	a.served(r, origin, residency.Keys, "", len(resp.DeviceKeys))
	return struct {
		DeviceKeys      map[string]map[string]json.RawMessage `json:"device_keys"`
		MasterKeys      map[string]json.RawMessage            `json:"master_keys"`
		SelfSigningKeys map[string]json.RawMessage            `json:"self_signing_keys"`
	}{resp.DeviceKeys, resp.MasterKeys, resp.SelfSigningKeys}, nil
}

// POST /_matrix/federation/v1/user/keys/claim.
func (a *API) userKeysClaim(r *http.Request) (any, error) {
	var body struct {
		OneTimeKeys map[string]map[string]string `json:"one_time_keys"`
	}
	if err := readUserKeysBody(r, &body); err != nil {
		return nil, err
	}
	if body.OneTimeKeys == nil {
		return nil, mxhttp.MissingParam("one_time_keys is required")
	}
	origin := federation.Origin(r.Context())
	if err := a.admitServer(r, origin, residency.Keys); err != nil {
		return nil, err
	}
	keys, err := a.userKeys.FederationClaim(r.Context(), body.OneTimeKeys)
	if err != nil {
		return nil, err
	}
	a.served(r, origin, residency.Keys, "", len(keys))
	return map[string]any{"one_time_keys": keys}, nil
}
