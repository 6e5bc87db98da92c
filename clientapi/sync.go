package clientapi

import "github.com/go-chi/chi/v5"

// Sync is what the sync-related handlers need (the handler itself lives in clientapi/sync).
type Sync interface{}

// syncRoutes are /sync, typing, receipts, presence, push rules and pushers.
func (a *API) syncRoutes(r chi.Router) {}
