package clientapi

import (
	"net/http"

	"github.com/myelin-chat/myelin/internal/mxhttp"
)

// versions lists the spec versions whose endpoints we actually serve.
// v1.7 added async media uploads (media.go); v1.10 recursion on /relations
// (roomview.MaxRelationsDepth); v1.11 unsigned.membership on every client
// event and authenticated media, so v1.11 is claimed only when the media
// module is on. org.matrix.msc3916.stable stays: clients still check it.
// Authentication is optional here (v1.10, MSC4026): a token is ignored.
func (a *API) versions(w http.ResponseWriter, r *http.Request) {
	versions := []string{"r0.6.1", "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9", "v1.10"}
	if a.Media != nil {
		versions = append(versions, "v1.11")
	}
	mxhttp.WriteJSON(w, http.StatusOK, map[string]any{
		"versions": versions,
		"unstable_features": map[string]bool{
			"org.matrix.msc3916.stable":     a.Media != nil,
			"org.matrix.simplified_msc3575": a.SlidingSync != nil,
		},
	})
}

func (a *API) wellKnownClient(w http.ResponseWriter, r *http.Request) {
	doc := map[string]any{"m.homeserver": map[string]string{"base_url": a.Config.BaseURL()}}
	if foci := a.Config.Calls.RTCFoci; len(foci) > 0 {
		doc["org.matrix.msc4143.rtc_foci"] = foci // MSC4143: where Element Call finds its SFU
	}
	mxhttp.WriteJSON(w, http.StatusOK, doc)
}

func (a *API) wellKnownServer(w http.ResponseWriter, r *http.Request) {
	mxhttp.WriteJSON(w, http.StatusOK, map[string]string{"m.server": a.Config.ServerName})
}

// wellKnownSupport serves the config's support section (spec v1.10,
// MSC1929); 404 when none is configured, as a server without the file.
func (a *API) wellKnownSupport(w http.ResponseWriter, r *http.Request) {
	if !a.Config.Support.Set() {
		mxhttp.WriteError(w, r, mxhttp.NotFound("No support information is configured"))
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, a.Config.Support)
}
