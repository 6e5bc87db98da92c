package clientapi

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"

	"github.com/myelin-chat/myelin/internal/mxhttp"
)

// keysPasswordUIA is the user-interactive auth for replacing cross-signing
// keys: a single m.login.password stage.
//
// NOTE: this stands in for the shared UIA helper (clientapi/uia.go, being
// built with accounts). Once it lands, replace this with it so sessions are
// tracked and every configured flow is offered. Here a session ID is issued
// but not stored: the one stage carries its own proof (the password).
func (a *API) keysPasswordUIA(ctx context.Context, userID string, body []byte) error {
	var req struct {
		Auth *struct {
			Type       string `json:"type"`
			Session    string `json:"session"`
			Password   string `json:"password"`
			User       string `json:"user"`
			Identifier struct {
				Type string `json:"type"`
				User string `json:"user"`
			} `json:"identifier"`
		} `json:"auth"`
	}
	_ = json.Unmarshal(body, &req)
	challenge := func(e *mxhttp.Error) error {
		session := ""
		if req.Auth != nil && req.Auth.Session != "" {
			session = req.Auth.Session
		} else {
			b := make([]byte, 18)
			_, _ = rand.Read(b)
			session = base64.RawURLEncoding.EncodeToString(b)
		}
		if e == nil {
			e = &mxhttp.Error{Status: http.StatusUnauthorized, Code: "M_UNAUTHORIZED", Message: "Additional authentication is required"}
		}
		e.Status = http.StatusUnauthorized
		return e.With("flows", []map[string][]string{{"stages": {"m.login.password"}}}).
			With("params", map[string]any{}).With("session", session).With("completed", []string{})
	}
	if req.Auth == nil || req.Auth.Type == "" {
		return challenge(nil)
	}
	if req.Auth.Type != "m.login.password" {
		return challenge(mxhttp.Unknown("Unsupported authentication type %q", req.Auth.Type))
	}
	who := req.Auth.Identifier.User
	if who == "" {
		who = req.Auth.User
	}
	if who != "" && who != userID && !strings.EqualFold(who, strings.TrimPrefix(strings.SplitN(userID, ":", 2)[0], "@")) {
		return challenge(mxhttp.Forbidden("Authenticate as the user making the request"))
	}
	ok, err := a.Keys.CheckPassword(ctx, userID, req.Auth.Password)
	if err != nil {
		return err
	}
	if !ok {
		return challenge(mxhttp.Forbidden("Invalid password"))
	}
	return nil
}

// keysReadBody reads the (size-capped) request body.
func keysReadBody(r *http.Request) ([]byte, error) {
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
