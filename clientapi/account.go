package clientapi

import "github.com/go-chi/chi/v5"

// loginRoutes are the unauthenticated account endpoints.
func (a *API) loginRoutes(r chi.Router) {
	r.Get("/login", a.loginFlows)
	r.Post("/login", a.login)
	r.Post("/register", a.register)
}

// accountRoutes are the authenticated account endpoints.
func (a *API) accountRoutes(r chi.Router) {
	r.Get("/account/whoami", a.whoami)
}
