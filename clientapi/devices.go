package clientapi

import (
	"encoding/json"
	"net/http"

	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/internal/authn"
	"github.com/myelin-chat/myelin/internal/mxhttp"
)

func (a *API) listDevices(r *http.Request) (any, error) {
	list, err := a.Accounts.ListDevices(r.Context(), authn.FromRequest(r).UserID)
	if err != nil {
		return nil, err
	}
	return map[string]any{"devices": list}, nil
}

func (a *API) getDevice(r *http.Request) (any, error) {
	return a.Accounts.GetDevice(r.Context(), authn.FromRequest(r).UserID, id.DeviceID(mxhttp.PathParam(r, "deviceId")))
}

func (a *API) putDevice(r *http.Request) (any, error) {
	var req struct {
		DisplayName *string `json:"display_name"`
	}
	if err := mxhttp.ReadJSON(r, &req); err != nil {
		return nil, err
	}
	user, deviceID := authn.FromRequest(r).UserID, id.DeviceID(mxhttp.PathParam(r, "deviceId"))
	if req.DisplayName == nil { // nothing to change, but the device must exist
		_, err := a.Accounts.GetDevice(r.Context(), user, deviceID)
		return mxhttp.EmptyOr(err)
	}
	return mxhttp.EmptyOr(a.Accounts.SetDeviceDisplayName(r.Context(), user, deviceID, *req.DisplayName))
}

func (a *API) deleteDevice(r *http.Request) (any, error) {
	if err := a.requireUIABody(r); err != nil {
		return nil, err
	}
	devices := []id.DeviceID{id.DeviceID(mxhttp.PathParam(r, "deviceId"))}
	return mxhttp.EmptyOr(a.Accounts.DeleteDevices(r.Context(), authn.FromRequest(r).UserID, devices))
}

func (a *API) deleteDevices(r *http.Request) (any, error) {
	var req struct {
		Auth    json.RawMessage `json:"auth"`
		Devices []id.DeviceID   `json:"devices"`
	}
	if err := mxhttp.ReadJSON(r, &req); err != nil {
		return nil, err
	}
	if req.Devices == nil {
		return nil, mxhttp.MissingParam("devices is required")
	}
	if len(req.Devices) > 1000 {
		return nil, mxhttp.InvalidParam("At most 1000 devices can be deleted at once")
	}
	if err := a.requireUIA(r, req.Auth); err != nil {
		return nil, err
	}
	return mxhttp.EmptyOr(a.Accounts.DeleteDevices(r.Context(), authn.FromRequest(r).UserID, req.Devices))
}

// recordSeen notes the authenticated device's last use (throttled in accounts).
func (a *API) recordSeen(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if dev := authn.FromRequest(r); dev != nil {
			a.Accounts.Seen(r.Context(), dev.UserID, dev.DeviceID, clientIP(r))
		}
		next.ServeHTTP(w, r)
	})
}
