package clientapi

import (
	"encoding/json"
	"net/http"
	"strings"

	"github.com/myelin-chat/myelin/accounts"
	"github.com/myelin-chat/myelin/internal/config"
	"github.com/myelin-chat/myelin/internal/mxhttp"
)

type registerRequest struct {
	Auth                     json.RawMessage `json:"auth"`
	Username                 string          `json:"username"`
	Password                 string          `json:"password"`
	DeviceID                 string          `json:"device_id"`
	InitialDeviceDisplayName string          `json:"initial_device_display_name"`
	InhibitLogin             bool            `json:"inhibit_login"`
	RefreshToken             bool            `json:"refresh_token"`
}

func (a *API) register(r *http.Request) (any, error) {
	switch kind := r.URL.Query().Get("kind"); kind {
	case "", "user":
	case "guest":
		return nil, mxhttp.GuestAccessForbid("Guest access is disabled")
	default:
		return nil, mxhttp.InvalidParam("Unknown kind %q", kind)
	}
	if a.Config.Register.Mode == config.RegistrationClosed {
		return nil, mxhttp.Forbidden("Registration is disabled")
	}
	var req registerRequest
	if err := mxhttp.ReadJSON(r, &req); err != nil {
		return nil, err
	}
	ctx := r.Context()
	// Localparts are lower-cased, as Synapse does: "Alice" registers @alice.
	req.Username = strings.ToLower(req.Username)
	// Problems with the request itself are reported before any auth stage.
	if req.Username != "" {
		if err := a.Accounts.CheckUsernameAvailable(ctx, req.Username); err != nil {
			return nil, err
		}
	}
	if req.Password != "" {
		if err := a.Accounts.CheckPasswordPolicy(req.Password); err != nil {
			return nil, err
		}
	}
	res, err := a.Accounts.AuthenticateUIA(ctx, accounts.UIARequest{
		Operation: uiaOperation(r),
		Flows:     a.Accounts.RegistrationFlows(),
		Auth:      req.Auth,
	})
	if err != nil {
		return nil, err
	}
	// Authenticated: the session stays open until the account exists, so a
	// client can fix the request and retry in the same session.
	if req.Password == "" {
		return nil, mxhttp.MissingParam("password is required")
	}
	localpart := req.Username
	if localpart == "" {
		if localpart, err = a.Accounts.GenerateLocalpart(ctx); err != nil {
			return nil, err
		}
	}
	// Claim the session before creating the account, so that one completed
	// session (one registration-token use) creates one account at most.
	if err := a.Accounts.ClaimUIA(ctx, res); err != nil {
		return nil, err
	}
	userID, err := a.Accounts.CreateUser(ctx, localpart, req.Password, false)
	if settleErr := a.Accounts.SettleRegistration(ctx, res, err == nil); settleErr != nil && err == nil {
		err = settleErr
	}
	if err != nil {
		return nil, err
	}
	if req.InhibitLogin {
		return map[string]any{"user_id": userID}, nil
	}
	sess, err := a.Accounts.NewSession(ctx, userID, req.DeviceID, req.InitialDeviceDisplayName, clientIP(r), req.RefreshToken)
	if err != nil {
		return nil, err
	}
	return sessionResponse(sess, a.Config.BaseURL()), nil
}

// registerAvailable is GET /register/available?username=.
func (a *API) registerAvailable(r *http.Request) (any, error) {
	username := strings.ToLower(r.URL.Query().Get("username"))
	if username == "" {
		return nil, mxhttp.MissingParam("username is required")
	}
	if err := a.Accounts.CheckUsernameAvailable(r.Context(), username); err != nil {
		return nil, err
	}
	return map[string]bool{"available": true}, nil
}

// registrationTokenValidity is GET /v1/register/m.login.registration_token/validity.
func (a *API) registrationTokenValidity(r *http.Request) (any, error) {
	if a.Config.Register.Mode == config.RegistrationClosed {
		return nil, mxhttp.Forbidden("Registration is not enabled on this homeserver.")
	}
	token, ok := r.URL.Query()["token"]
	if !ok || len(token) == 0 {
		return nil, mxhttp.MissingParam("token is required")
	}
	valid, err := a.Accounts.RegistrationTokenValid(r.Context(), token[0])
	if err != nil {
		return nil, err
	}
	return map[string]bool{"valid": valid}, nil
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
