package clientapi

import (
	"net/http"

	"github.com/myelin-chat/myelin/internal/mxhttp"
)

// versions lists the spec versions whose endpoints we actually serve.
func (a *API) versions(w http.ResponseWriter, r *http.Request) {
	mxhttp.WriteJSON(w, http.StatusOK, map[string]any{
		"versions": []string{
			"r0.6.1", "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6",
		},
		"unstable_features": map[string]bool{},
	})
}

func (a *API) wellKnownClient(w http.ResponseWriter, r *http.Request) {
	mxhttp.WriteJSON(w, http.StatusOK, map[string]any{
		"m.homeserver": map[string]string{"base_url": a.Config.BaseURL()},
	})
}

func (a *API) wellKnownServer(w http.ResponseWriter, r *http.Request) {
	mxhttp.WriteJSON(w, http.StatusOK, map[string]string{"m.server": a.Config.ServerName})
}
