package clientapi

import (
	"net/http"

	"github.com/myelin-chat/myelin/accounts"
	"github.com/myelin-chat/myelin/internal/authn"
	"github.com/myelin-chat/myelin/internal/mxhttp"
)

func (a *API) loginFlows(w http.ResponseWriter, r *http.Request) {
	mxhttp.WriteJSON(w, http.StatusOK, map[string]any{
		"flows": []map[string]any{
			{"type": "m.login.password"},
			{"type": "m.login.token", "get_login_token": true},
		},
	})
}

type loginRequest struct {
	Type       string `json:"type"`
	Identifier *struct {
		Type string `json:"type"`
		User string `json:"user"`
	} `json:"identifier"`
	User                     string `json:"user"` // deprecated form
	Password                 string `json:"password"`
	Token                    string `json:"token"`
	DeviceID                 string `json:"device_id"`
	InitialDeviceDisplayName string `json:"initial_device_display_name"`
	RefreshToken             bool   `json:"refresh_token"`
}

func (a *API) login(r *http.Request) (any, error) {
	var req loginRequest
	if err := mxhttp.ReadJSON(r, &req); err != nil {
		return nil, err
	}
	var sess *accounts.Session
	var err error
	switch req.Type {
	case "m.login.password":
		user := req.User
		if req.Identifier != nil {
			if req.Identifier.Type != "m.id.user" {
				return nil, mxhttp.Unknown("Unsupported identifier type %q", req.Identifier.Type)
			}
			user = req.Identifier.User
		}
		if user == "" {
			return nil, mxhttp.MissingParam("identifier.user is required")
		}
		sess, err = a.Accounts.LoginPassword(r.Context(), a.Accounts.ResolveUser(user), req.Password, req.DeviceID,
			req.InitialDeviceDisplayName, clientIP(r), req.RefreshToken)
	case "m.login.token":
		if req.Token == "" {
			return nil, mxhttp.MissingParam("token is required")
		}
		sess, err = a.Accounts.LoginToken(r.Context(), req.Token, req.DeviceID, req.InitialDeviceDisplayName, clientIP(r), req.RefreshToken)
	case "":
		return nil, mxhttp.MissingParam("type is required")
	default:
		return nil, mxhttp.Unknown("Unknown login type %q", req.Type)
	}
	if err != nil {
		return nil, err
	}
	return sessionResponse(sess, a.Config.BaseURL()), nil
}

func (a *API) refresh(r *http.Request) (any, error) {
	var req struct {
		RefreshToken string `json:"refresh_token"`
	}
	if err := mxhttp.ReadJSON(r, &req); err != nil {
		return nil, err
	}
	if req.RefreshToken == "" {
		return nil, mxhttp.MissingParam("refresh_token is required")
	}
	sess, err := a.Accounts.Refresh(r.Context(), req.RefreshToken)
	if err != nil {
		return nil, err
	}
	resp := map[string]any{"access_token": sess.AccessToken, "refresh_token": sess.RefreshToken}
	if sess.ExpiresInMS > 0 {
		resp["expires_in_ms"] = sess.ExpiresInMS
	}
	return resp, nil
}

func (a *API) logout(r *http.Request) (any, error) {
	dev := authn.FromRequest(r)
	return mxhttp.EmptyOr(a.Accounts.Logout(r.Context(), dev.UserID, dev.DeviceID))
}

func (a *API) logoutAll(r *http.Request) (any, error) {
	return mxhttp.EmptyOr(a.Accounts.LogoutAll(r.Context(), authn.FromRequest(r).UserID))
}

// getLoginToken is POST /v1/login/get_token: a short-lived single-use token
// another client of the same user can log in with (m.login.token).
func (a *API) getLoginToken(r *http.Request) (any, error) {
	if err := a.requireUIABody(r); err != nil {
		return nil, err
	}
	token, life, err := a.Accounts.CreateLoginToken(r.Context(), authn.FromRequest(r).UserID)
	if err != nil {
		return nil, err
	}
	return map[string]any{"login_token": token, "expires_in_ms": life.Milliseconds()}, nil
}

func (a *API) whoami(w http.ResponseWriter, r *http.Request) {
	dev := authn.FromRequest(r)
	mxhttp.WriteJSON(w, http.StatusOK, map[string]any{
		"user_id":   dev.UserID,
		"device_id": dev.DeviceID,
		"is_guest":  false,
	})
}
