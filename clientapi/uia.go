package clientapi

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/myelin-chat/myelin/accounts"
	"github.com/myelin-chat/myelin/internal/authn"
	"github.com/myelin-chat/myelin/internal/mxhttp"
)

// requireUIA guards an operation of the authenticated caller with
// user-interactive auth (spec: "User-Interactive Authentication API"),
// offering the m.login.password flow. auth is the raw "auth" object of the
// request body (nil when absent).
//
// It returns true once the caller completed a flow in a session opened for
// this same request (method + path, version prefix ignored) by this same
// user; the session is then used up. Otherwise it has written the response —
// 401 with flows/params/session/completed (plus errcode/error after a failed
// stage), or another Matrix error — and the handler must return at once.
//
// Validate the rest of the request body BEFORE calling it, so that bad input
// is answered without spending the user's authentication:
//
//	var req struct {
//		Auth json.RawMessage `json:"auth"`
//		// ... the endpoint's own fields
//	}
//	if err := mxhttp.ReadJSON(r, &req); err != nil { writeErr(w, r, err); return }
//	// ... validate req ...
//	if !a.requireUIA(w, r, req.Auth) { return }
//	// ... perform the operation ...
func (a *API) requireUIA(w http.ResponseWriter, r *http.Request, auth json.RawMessage) bool {
	dev := authn.FromContext(r.Context())
	if dev == nil {
		mxhttp.WriteError(w, r, mxhttp.MissingToken("Missing access token"))
		return false
	}
	res, err := a.Accounts.AuthenticateUIA(r.Context(), accounts.UIARequest{
		UserID:    dev.UserID,
		Operation: uiaOperation(r),
		Flows:     accounts.PasswordFlows(),
		Auth:      auth,
	})
	if err != nil {
		writeErr(w, r, err)
		return false
	}
	if err := a.Accounts.FinishUIA(r.Context(), res); err != nil {
		writeErr(w, r, err)
		return false
	}
	return true
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

// writeErr writes err as Matrix error, and UIA challenges as their 401 body.
func writeErr(w http.ResponseWriter, r *http.Request, err error) {
	var ch *accounts.UIAChallenge
	if errors.As(err, &ch) {
		mxhttp.WriteJSON(w, http.StatusUnauthorized, ch)
		return
	}
	mxhttp.WriteError(w, r, err)
}

// handle adapts a handler that returns its error.
func handle(f func(w http.ResponseWriter, r *http.Request) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := f(w, r); err != nil {
			writeErr(w, r, err)
		}
	}
}

// pathParam is a URL path parameter, percent-decoded.
func pathParam(r *http.Request, name string) string {
	v := chi.URLParam(r, name)
	if u, err := url.PathUnescape(v); err == nil {
		return u
	}
	return v
}

// readBody reads the raw request body: M_TOO_LARGE over the configured cap.
func readBody(r *http.Request) ([]byte, error) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		var maxErr *http.MaxBytesError
		if errors.As(err, &maxErr) {
			return nil, mxhttp.TooLarge("Request body exceeds %d bytes", maxErr.Limit)
		}
		return nil, mxhttp.BadJSON("Could not read request body")
	}
	return body, nil
}
