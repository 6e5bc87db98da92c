package clientapi

import (
	"net/http"

	"github.com/go-chi/chi/v5"
)

// syncRoutes is GET /sync (clientapi/syncv2).
func (a *API) syncRoutes(r chi.Router) {
	if a.Sync == nil {
		return
	}
	r.Method(http.MethodGet, "/sync", a.Sync)
}
