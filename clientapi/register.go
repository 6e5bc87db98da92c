package clientapi

import (
	"net/http"

	"github.com/myelin-chat/myelin/accounts"
	"github.com/myelin-chat/myelin/internal/mxhttp"
)

type registerRequest struct {
	Auth *struct {
		Type    string `json:"type"`
		Session string `json:"session"`
	} `json:"auth"`
	Username                 string `json:"username"`
	Password                 string `json:"password"`
	DeviceID                 string `json:"device_id"`
	InitialDeviceDisplayName string `json:"initial_device_display_name"`
	InhibitLogin             bool   `json:"inhibit_login"`
	RefreshToken             bool   `json:"refresh_token"`
}

func (a *API) register(w http.ResponseWriter, r *http.Request) {
	if kind := r.URL.Query().Get("kind"); kind == "guest" {
		mxhttp.WriteError(w, r, mxhttp.GuestAccessForbid("Guest access is disabled"))
		return
	} else if kind != "" && kind != "user" {
		mxhttp.WriteError(w, r, mxhttp.InvalidParam("Unknown kind %q", kind))
		return
	}
	var req registerRequest
	if err := mxhttp.ReadJSON(r, &req); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	if req.Auth == nil || req.Auth.Type != "m.login.dummy" {
		mxhttp.WriteJSON(w, http.StatusUnauthorized, map[string]any{
			"flows":   []map[string]any{{"stages": []string{"m.login.dummy"}}},
			"params":  map[string]any{},
			"session": "",
		})
		return
	}
	userID, err := a.Accounts.CreateUser(r.Context(), req.Username, req.Password, false)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	if req.InhibitLogin {
		mxhttp.WriteJSON(w, http.StatusOK, map[string]any{"user_id": userID})
		return
	}
	sess, err := a.Accounts.NewSession(r.Context(), userID, req.DeviceID, req.InitialDeviceDisplayName, clientIP(r), req.RefreshToken)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, sessionResponse(sess, a.Config.BaseURL()))
}

func sessionResponse(s *accounts.Session, baseURL string) map[string]any {
	resp := map[string]any{
		"user_id":      s.UserID,
		"device_id":    s.DeviceID,
		"access_token": s.AccessToken,
		"home_server":  s.UserID.Homeserver(),
		"well_known":   map[string]any{"m.homeserver": map[string]string{"base_url": baseURL}},
	}
	if s.RefreshToken != "" {
		resp["refresh_token"] = s.RefreshToken
		if s.ExpiresInMS > 0 {
			resp["expires_in_ms"] = s.ExpiresInMS
		}
	}
	return resp
}
