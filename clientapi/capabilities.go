package clientapi

import (
	"net/http"

	"github.com/myelin-chat/myelin/internal/mxhttp"
)

// stableRoomVersions are the room versions this server supports.
var stableRoomVersions = []string{"1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12"}

func (a *API) capabilities(w http.ResponseWriter, r *http.Request) {
	available := make(map[string]string, len(stableRoomVersions))
	for _, v := range stableRoomVersions {
		available[v] = "stable"
	}
	enabled := func(b bool) map[string]bool { return map[string]bool{"enabled": b} }
	mxhttp.WriteJSON(w, http.StatusOK, map[string]any{"capabilities": map[string]any{
		"m.change_password": enabled(true),
		"m.room_versions":   map[string]any{"default": a.Config.Rooms.DefaultVersion, "available": available},
		"m.set_displayname": enabled(true),
		"m.set_avatar_url":  enabled(true),
		"m.profile_fields":  enabled(true),
		"m.3pid_changes":    enabled(false),
		"m.get_login_token": enabled(true),
	}})
}

// threepids is GET /account/3pid: this server does not manage third-party
// identifiers (m.3pid_changes is false), so there are never any.
func (a *API) threepids(w http.ResponseWriter, r *http.Request) {
	mxhttp.WriteJSON(w, http.StatusOK, map[string]any{"threepids": []any{}})
}
