package clientapi

import "github.com/go-chi/chi/v5"

// Keys is what the end-to-end encryption handlers need from the keyserver.
type Keys interface{}

// keyRoutes are /keys/*, /sendToDevice, /room_keys/* and dehydrated devices.
func (a *API) keyRoutes(r chi.Router) {}
