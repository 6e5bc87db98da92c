package clientapi

import (
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/myelin-chat/myelin/accounts"
	"github.com/myelin-chat/myelin/internal/mxhttp"
)

// synapseAdminRoutes are the Synapse-compatible admin endpoints that
// deployment tools use without an access token (rate-limited as logins).
func (a *API) synapseAdminRoutes(r chi.Router) {
	r.Method(http.MethodGet, "/_synapse/admin/v1/register", mxhttp.JSON(a.sharedSecretNonce))
	r.Method(http.MethodPost, "/_synapse/admin/v1/register", mxhttp.JSON(a.sharedSecretRegister))
}

// sharedSecretNonce issues a nonce; with no registration.shared_secret the
// endpoint does not exist (M_UNRECOGNIZED, 404).
func (a *API) sharedSecretNonce(r *http.Request) (any, error) {
	if !a.Accounts.SharedSecretEnabled() {
		return nil, mxhttp.Unrecognized("Shared secret registration is not enabled")
	}
	return map[string]string{"nonce": a.Accounts.NewRegistrationNonce()}, nil
}

func (a *API) sharedSecretRegister(r *http.Request) (any, error) {
	if !a.Accounts.SharedSecretEnabled() {
		return nil, mxhttp.Unrecognized("Shared secret registration is not enabled")
	}
	var req accounts.SharedSecretRequest
	if err := mxhttp.ReadJSON(r, &req); err != nil {
		return nil, err
	}
	sess, err := a.Accounts.RegisterWithSharedSecret(r.Context(), req, clientIP(r))
	if err != nil {
		return nil, err
	}
	return map[string]any{
		"user_id":      sess.UserID,
		"access_token": sess.AccessToken,
		"home_server":  sess.UserID.Homeserver(),
		"device_id":    sess.DeviceID,
	}, nil
}
