package clientapi

import (
	"encoding/json"
	"net/http"

	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/internal/authn"
	"github.com/myelin-chat/myelin/internal/mxhttp"
)

func (a *API) listDevices(w http.ResponseWriter, r *http.Request) error {
	dev := authn.FromContext(r.Context())
	list, err := a.Accounts.ListDevices(r.Context(), dev.UserID)
	if err != nil {
		return err
	}
	mxhttp.WriteJSON(w, http.StatusOK, map[string]any{"devices": list})
	return nil
}

func (a *API) getDevice(w http.ResponseWriter, r *http.Request) error {
	dev := authn.FromContext(r.Context())
	d, err := a.Accounts.GetDevice(r.Context(), dev.UserID, id.DeviceID(pathParam(r, "deviceId")))
	if err != nil {
		return err
	}
	mxhttp.WriteJSON(w, http.StatusOK, d)
	return nil
}

func (a *API) putDevice(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		DisplayName *string `json:"display_name"`
	}
	if err := mxhttp.ReadJSON(r, &req); err != nil {
		return err
	}
	dev := authn.FromContext(r.Context())
	deviceID := id.DeviceID(pathParam(r, "deviceId"))
	if req.DisplayName == nil { // nothing to change, but the device must exist
		if _, err := a.Accounts.GetDevice(r.Context(), dev.UserID, deviceID); err != nil {
			return err
		}
	} else if err := a.Accounts.SetDeviceDisplayName(r.Context(), dev.UserID, deviceID, *req.DisplayName); err != nil {
		return err
	}
	mxhttp.WriteJSON(w, http.StatusOK, mxhttp.Empty)
	return nil
}

func (a *API) deleteDevice(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Auth json.RawMessage `json:"auth"`
	}
	if err := mxhttp.ReadJSON(r, &req); err != nil {
		return err
	}
	if !a.requireUIA(w, r, req.Auth) {
		return nil
	}
	dev := authn.FromContext(r.Context())
	if err := a.Accounts.DeleteDevices(r.Context(), dev.UserID, []id.DeviceID{id.DeviceID(pathParam(r, "deviceId"))}); err != nil {
		return err
	}
	mxhttp.WriteJSON(w, http.StatusOK, mxhttp.Empty)
	return nil
}

func (a *API) deleteDevices(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Auth    json.RawMessage `json:"auth"`
		Devices []id.DeviceID   `json:"devices"`
	}
	if err := mxhttp.ReadJSON(r, &req); err != nil {
		return err
	}
	if req.Devices == nil {
		return mxhttp.MissingParam("devices is required")
	}
	if len(req.Devices) > 1000 {
		return mxhttp.InvalidParam("At most 1000 devices can be deleted at once")
	}
	if !a.requireUIA(w, r, req.Auth) {
		return nil
	}
	dev := authn.FromContext(r.Context())
	if err := a.Accounts.DeleteDevices(r.Context(), dev.UserID, req.Devices); err != nil {
		return err
	}
	mxhttp.WriteJSON(w, http.StatusOK, mxhttp.Empty)
	return nil
}

// recordSeen notes the authenticated device's last use (throttled in accounts).
func (a *API) recordSeen(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if dev := authn.FromContext(r.Context()); dev != nil {
			a.Accounts.Seen(r.Context(), dev.UserID, dev.DeviceID, clientIP(r))
		}
		next.ServeHTTP(w, r)
	})
}
