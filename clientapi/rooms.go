package clientapi

import "github.com/go-chi/chi/v5"

// Rooms is what the room handlers need from the roomserver.
type Rooms interface{}

// roomRoutes are the room endpoints under /r0 and /v3.
func (a *API) roomRoutes(r chi.Router) {}

// roomRoutesV1 are the room endpoints under /v1 (relations, threads, hierarchy, ...).
func (a *API) roomRoutesV1(r chi.Router) {}
