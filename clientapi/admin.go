package clientapi

import (
	"context"
	"net/http"

	"github.com/go-chi/chi/v5"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/accounts"
	"github.com/myelin-chat/myelin/internal/authn"
	"github.com/myelin-chat/myelin/internal/mxhttp"
	"github.com/myelin-chat/myelin/servernotices"
)

// ServerNotices sends server notices (the servernotices module).
type ServerNotices interface {
	Send(ctx context.Context, admin id.UserID, n servernotices.Notice, txnID string) (id.EventID, error)
}

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
	a.auditAdmin(r.Context(), "shared_secret", "register_user", map[string]any{"user_id": sess.UserID, "admin": req.Admin})
	return map[string]any{
		"user_id":      sess.UserID,
		"access_token": sess.AccessToken,
		"home_server":  sess.UserID.Homeserver(),
		"device_id":    sess.DeviceID,
	}, nil
}

// synapseAdminAuthedRoutes are the Synapse-compatible admin endpoints that
// need a server admin's access token.
func (a *API) synapseAdminAuthedRoutes(r chi.Router) {
	if a.ServerNotices == nil {
		return
	}
	r.Method(http.MethodPost, "/_synapse/admin/v1/send_server_notice", mxhttp.JSON(a.sendServerNotice))
	r.Method(http.MethodPut, "/_synapse/admin/v1/send_server_notice/{txnID}", mxhttp.JSON(a.sendServerNotice))
}

// sendServerNotice: server admins only (403 M_FORBIDDEN before the body is read).
func (a *API) sendServerNotice(r *http.Request) (any, error) {
	dev := authn.FromRequest(r)
	if !dev.IsAdmin {
		return nil, mxhttp.Forbidden("You are not a server admin")
	}
	var n servernotices.Notice
	if err := mxhttp.ReadJSON(r, &n); err != nil {
		return nil, err
	}
	eventID, err := a.ServerNotices.Send(r.Context(), dev.UserID, n, mxhttp.PathParam(r, "txnID"))
	if err != nil {
		return nil, roomError(err) // the notice goes through the roomserver
	}
	a.auditAdmin(r.Context(), dev.UserID.String(), "server_notice", map[string]any{"user_id": n.UserID, "event_id": eventID})
	return map[string]string{"event_id": eventID.String()}, nil
}
