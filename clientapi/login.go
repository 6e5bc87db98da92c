package clientapi

import (
	"net/http"
	"strings"

	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/internal/authn"
	"github.com/myelin-chat/myelin/internal/mxhttp"
)

func (a *API) loginFlows(w http.ResponseWriter, r *http.Request) {
	mxhttp.WriteJSON(w, http.StatusOK, map[string]any{
		"flows": []map[string]any{{"type": "m.login.password"}},
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
	DeviceID                 string `json:"device_id"`
	InitialDeviceDisplayName string `json:"initial_device_display_name"`
	RefreshToken             bool   `json:"refresh_token"`
}

func (a *API) login(w http.ResponseWriter, r *http.Request) {
	var req loginRequest
	if err := mxhttp.ReadJSON(r, &req); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	if req.Type != "m.login.password" {
		mxhttp.WriteError(w, r, mxhttp.Unknown("Unknown login type %q", req.Type))
		return
	}
	user := req.User
	if req.Identifier != nil {
		if req.Identifier.Type != "m.id.user" {
			mxhttp.WriteError(w, r, mxhttp.Unknown("Unsupported identifier type %q", req.Identifier.Type))
			return
		}
		user = req.Identifier.User
	}
	userID := a.resolveUser(user)
	sess, err := a.Accounts.LoginPassword(r.Context(), userID, req.Password, req.DeviceID, req.InitialDeviceDisplayName, clientIP(r), req.RefreshToken)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, sessionResponse(sess, a.Config.BaseURL()))
}

// resolveUser accepts a full user ID or a bare localpart.
func (a *API) resolveUser(user string) id.UserID {
	if strings.HasPrefix(user, "@") {
		return id.UserID(user)
	}
	return a.Accounts.UserID(strings.ToLower(user))
}

func (a *API) whoami(w http.ResponseWriter, r *http.Request) {
	dev := authn.FromContext(r.Context())
	mxhttp.WriteJSON(w, http.StatusOK, map[string]any{
		"user_id":   dev.UserID,
		"device_id": dev.DeviceID,
		"is_guest":  false,
	})
}
