package clientapi

import (
	"encoding/json"
	"net/http"
	"strings"

	"github.com/myelin-chat/myelin/accounts"
	"github.com/myelin-chat/myelin/internal/authn"
	"github.com/myelin-chat/myelin/internal/mxhttp"
)

// requireUIA guards an operation of the authenticated caller with
// user-interactive auth (spec: "User-Interactive Authentication API"),
// offering the m.login.password flow. auth is the raw "auth" object of the
// request body (nil when absent).
//
// It returns nil once the caller completed a flow in a session opened for
// this same request (method + path, version prefix ignored) by this same
// user; the session is then used up. Otherwise it returns the error to answer
// with: an *accounts.UIAChallenge (401 with flows/params/session/completed,
// plus errcode/error after a failed stage) or another Matrix error.
//
// Validate the rest of the request body BEFORE calling it, so that bad input
// is answered without spending the user's authentication:
//
//	var req struct {
//		Auth json.RawMessage `json:"auth"`
//		// ... the endpoint's own fields
//	}
//	if err := mxhttp.ReadJSON(r, &req); err != nil { return nil, err }
//	// ... validate req ...
//	if err := a.requireUIA(r, req.Auth); err != nil { return nil, err }
//	// ... perform the operation ...
func (a *API) requireUIA(r *http.Request, auth json.RawMessage) error {
	dev := authn.FromRequest(r)
	if dev == nil {
		return mxhttp.MissingToken("Missing access token")
	}
	res, err := a.Accounts.AuthenticateUIA(r.Context(), accounts.UIARequest{
		UserID:    dev.UserID,
		Operation: uiaOperation(r),
		Flows:     accounts.PasswordFlows(),
		Auth:      auth,
	})
	if err != nil {
		return err
	}
	return a.Accounts.ClaimUIA(r.Context(), res)
}

// requireUIABody is requireUIA for endpoints whose body holds only "auth".
func (a *API) requireUIABody(r *http.Request) error {
	var req struct {
		Auth json.RawMessage `json:"auth"`
	}
	if err := mxhttp.ReadJSON(r, &req); err != nil {
		return err
	}
	return a.requireUIA(r, req.Auth)
}

// uiaOperation names the request a UIA session is bound to: the method and
// the path without /_matrix/client/<version>.
func uiaOperation(r *http.Request) string {
	p := r.URL.EscapedPath()
	if rest, ok := strings.CutPrefix(p, "/_matrix/client/"); ok {
		if _, after, ok := strings.Cut(rest, "/"); ok {
			p = "/" + after
		}
	}
	return r.Method + " " + p
}
