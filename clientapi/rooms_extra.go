package clientapi

import "github.com/go-chi/chi/v5"

// RoomsExtras is what the remaining room endpoints need.
type RoomsExtras interface{}

func (a *API) roomExtraRoutes(r chi.Router)   {}
func (a *API) roomExtraRoutesV1(r chi.Router) {}
