package clientapi

import (
	"encoding/json"
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/myelin-chat/myelin/internal/authn"
	"github.com/myelin-chat/myelin/internal/mxhttp"
)

// loginRoutes are the unauthenticated account endpoints (rate-limited as logins).
func (a *API) loginRoutes(r chi.Router) {
	r.Get("/login", a.loginFlows)
	r.Post("/login", handle(a.login))
	r.Post("/refresh", handle(a.refresh))
	r.Post("/register", handle(a.register))
	r.Get("/register/available", handle(a.registerAvailable))
}

// loginRoutesV1 are the unauthenticated account endpoints under /v1.
func (a *API) loginRoutesV1(r chi.Router) {
	r.Get("/register/m.login.registration_token/validity", handle(a.registrationTokenValidity))
}

// accountRoutes are the authenticated account endpoints.
func (a *API) accountRoutes(r chi.Router) {
	r.Get("/account/whoami", a.whoami)
	r.Post("/logout", handle(a.logout))
	r.Post("/logout/all", handle(a.logoutAll))
	r.Post("/account/password", handle(a.changePassword))
	r.Post("/account/deactivate", handle(a.deactivate))
	r.Get("/account/3pid", a.threepids)
	r.Get("/capabilities", a.capabilities)

	r.Get("/devices", handle(a.listDevices))
	r.Get("/devices/{deviceId}", handle(a.getDevice))
	r.Put("/devices/{deviceId}", handle(a.putDevice))
	r.Delete("/devices/{deviceId}", handle(a.deleteDevice))
	r.Post("/delete_devices", handle(a.deleteDevices))

	r.Get("/profile/{userId}", handle(a.getProfile))
	r.Get("/profile/{userId}/{keyName}", handle(a.getProfileField))
	r.Put("/profile/{userId}/{keyName}", handle(a.putProfileField))
	r.Delete("/profile/{userId}/{keyName}", handle(a.deleteProfileField))

	r.Put("/user/{userId}/account_data/{type}", handle(a.putAccountData))
	r.Get("/user/{userId}/account_data/{type}", handle(a.getAccountData))
	r.Put("/user/{userId}/rooms/{roomId}/account_data/{type}", handle(a.putAccountData))
	r.Get("/user/{userId}/rooms/{roomId}/account_data/{type}", handle(a.getAccountData))

	r.Post("/user/{userId}/filter", handle(a.createFilter))
	r.Get("/user/{userId}/filter/{filterId}", handle(a.getFilter))
}

// accountRoutesV1 are the authenticated account endpoints under /v1.
func (a *API) accountRoutesV1(r chi.Router) {
	r.Post("/login/get_token", handle(a.getLoginToken))
}

func (a *API) changePassword(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Auth          json.RawMessage `json:"auth"`
		NewPassword   string          `json:"new_password"`
		LogoutDevices *bool           `json:"logout_devices"`
	}
	if err := mxhttp.ReadJSON(r, &req); err != nil {
		return err
	}
	if req.NewPassword == "" {
		return mxhttp.MissingParam("new_password is required")
	}
	if err := a.Accounts.CheckPasswordPolicy(req.NewPassword); err != nil {
		return err
	}
	if !a.requireUIA(w, r, req.Auth) {
		return nil
	}
	dev := authn.FromContext(r.Context())
	logout := req.LogoutDevices == nil || *req.LogoutDevices
	if err := a.Accounts.ChangePassword(r.Context(), dev.UserID, req.NewPassword, logout, dev.DeviceID); err != nil {
		return err
	}
	mxhttp.WriteJSON(w, http.StatusOK, mxhttp.Empty)
	return nil
}

func (a *API) deactivate(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Auth     json.RawMessage `json:"auth"`
		Erase    bool            `json:"erase"`
		IDServer string          `json:"id_server"`
	}
	if err := mxhttp.ReadJSON(r, &req); err != nil {
		return err
	}
	if !a.requireUIA(w, r, req.Auth) {
		return nil
	}
	dev := authn.FromContext(r.Context())
	if err := a.Accounts.Deactivate(r.Context(), dev.UserID, req.Erase); err != nil {
		return err
	}
	// No third-party identifiers exist here, so there was nothing to unbind.
	mxhttp.WriteJSON(w, http.StatusOK, map[string]string{"id_server_unbind_result": "success"})
	return nil
}
