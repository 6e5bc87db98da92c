package clientapi

import (
	"net/http"

	"github.com/myelin-chat/myelin/internal/mxhttp"
)

// versions lists the spec versions whose endpoints we actually serve.
// v1.7 added async media uploads (media.go). v1.10 is not claimed yet (no
// recursion on /relations), nor v1.11 (no unsigned.membership); authenticated
// media (v1.11's MSC3916) is announced the way MSC3916 provides for servers
// not yet at v1.11: the org.matrix.msc3916.stable flag, which Element and the
// Matrix SDKs check.
func (a *API) versions(w http.ResponseWriter, r *http.Request) {
	mxhttp.WriteJSON(w, http.StatusOK, map[string]any{
		"versions": []string{
			"r0.6.1", "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9",
		},
		"unstable_features": map[string]bool{
			"org.matrix.msc3916.stable":     a.Media != nil,
			"org.matrix.simplified_msc3575": a.SlidingSync != nil,
		},
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
