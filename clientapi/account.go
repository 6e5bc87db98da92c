package clientapi

import (
	"encoding/json"
	"net/http"

	"github.com/go-chi/chi/v5"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/internal/authn"
	"github.com/myelin-chat/myelin/internal/mxhttp"
)

// loginRoutes are the unauthenticated account endpoints (rate-limited as logins).
func (a *API) loginRoutes(r chi.Router) {
	r.Get("/login", a.loginFlows)
	r.Method(http.MethodPost, "/login", mxhttp.JSON(a.login))
	r.Method(http.MethodPost, "/refresh", mxhttp.JSON(a.refresh))
	r.Method(http.MethodPost, "/register", mxhttp.JSON(a.register))
	r.Method(http.MethodGet, "/register/available", mxhttp.JSON(a.registerAvailable))
}

// loginRoutesV1 are the unauthenticated account endpoints under /v1.
func (a *API) loginRoutesV1(r chi.Router) {
	r.Method(http.MethodGet, "/register/m.login.registration_token/validity", mxhttp.JSON(a.registrationTokenValidity))
}

// accountRoutes are the authenticated account endpoints.
func (a *API) accountRoutes(r chi.Router) {
	r.Get("/account/whoami", a.whoami)
	r.Method(http.MethodPost, "/logout", mxhttp.JSON(a.logout))
	r.Method(http.MethodPost, "/logout/all", mxhttp.JSON(a.logoutAll))
	r.Method(http.MethodPost, "/account/password", mxhttp.JSON(a.changePassword))
	r.Method(http.MethodPost, "/account/deactivate", mxhttp.JSON(a.deactivate))
	r.Get("/account/3pid", a.threepids)
	r.Get("/capabilities", a.capabilities)

	r.Method(http.MethodGet, "/devices", mxhttp.JSON(a.listDevices))
	r.Method(http.MethodGet, "/devices/{deviceId}", mxhttp.JSON(a.getDevice))
	r.Method(http.MethodPut, "/devices/{deviceId}", mxhttp.JSON(a.putDevice))
	r.Method(http.MethodDelete, "/devices/{deviceId}", mxhttp.JSON(a.deleteDevice))
	r.Method(http.MethodPost, "/delete_devices", mxhttp.JSON(a.deleteDevices))

	r.Method(http.MethodPut, "/profile/{userId}/{keyName}", mxhttp.JSON(a.putProfileField))
	r.Method(http.MethodDelete, "/profile/{userId}/{keyName}", mxhttp.JSON(a.deleteProfileField))

	r.Method(http.MethodPut, "/user/{userId}/account_data/{type}", mxhttp.JSON(a.putAccountData))
	r.Method(http.MethodGet, "/user/{userId}/account_data/{type}", mxhttp.JSON(a.getAccountData))
	r.Method(http.MethodPut, "/user/{userId}/rooms/{roomId}/account_data/{type}", mxhttp.JSON(a.putAccountData))
	r.Method(http.MethodGet, "/user/{userId}/rooms/{roomId}/account_data/{type}", mxhttp.JSON(a.getAccountData))

	r.Method(http.MethodPost, "/user/{userId}/openid/request_token", mxhttp.JSON(a.requestOpenIDToken))

	r.Method(http.MethodPost, "/user/{userId}/filter", mxhttp.JSON(a.createFilter))
	r.Method(http.MethodGet, "/user/{userId}/filter/{filterId}", mxhttp.JSON(a.getFilter))
}

// accountRoutesV1 are the authenticated account endpoints under /v1.
func (a *API) accountRoutesV1(r chi.Router) {
	r.Method(http.MethodPost, "/login/get_token", mxhttp.JSON(a.getLoginToken))
}

// requestOpenIDToken is POST /user/{userId}/openid/request_token: a token a
// third party exchanges for the user's ID over federation (the body is an
// empty object, reserved for the future).
func (a *API) requestOpenIDToken(r *http.Request) (any, error) {
	if _, err := mxhttp.ReadJSONObject(r); err != nil {
		return nil, err
	}
	return a.Accounts.RequestOpenIDToken(r.Context(), authn.FromRequest(r).UserID, id.UserID(mxhttp.PathParam(r, "userId")))
}

func (a *API) changePassword(r *http.Request) (any, error) {
	var req struct {
		Auth          json.RawMessage `json:"auth"`
		NewPassword   string          `json:"new_password"`
		LogoutDevices *bool           `json:"logout_devices"`
	}
	if err := mxhttp.ReadJSON(r, &req); err != nil {
		return nil, err
	}
	if req.NewPassword == "" {
		return nil, mxhttp.MissingParam("new_password is required")
	}
	if err := a.Accounts.CheckPasswordPolicy(req.NewPassword); err != nil {
		return nil, err
	}
	if err := a.requireUIA(r, req.Auth); err != nil {
		return nil, err
	}
	dev := authn.FromRequest(r)
	logout := req.LogoutDevices == nil || *req.LogoutDevices
	return mxhttp.EmptyOr(a.Accounts.ChangePassword(r.Context(), dev.UserID, req.NewPassword, logout, dev.DeviceID))
}

func (a *API) deactivate(r *http.Request) (any, error) {
	var req struct {
		Auth     json.RawMessage `json:"auth"`
		Erase    bool            `json:"erase"`
		IDServer string          `json:"id_server"`
	}
	if err := mxhttp.ReadJSON(r, &req); err != nil {
		return nil, err
	}
	if err := a.requireUIA(r, req.Auth); err != nil {
		return nil, err
	}
	if err := a.Accounts.Deactivate(r.Context(), authn.FromRequest(r).UserID, req.Erase); err != nil {
		return nil, err
	}
	// No third-party identifiers exist here, so there was nothing to unbind.
	return map[string]string{"id_server_unbind_result": "success"}, nil
}
