// Package userdirectory answers POST /user_directory/search: the users a
// searcher can see through rooms (a shared joined room, or a room with a
// public join rule or world-readable history), matched case-insensitively
// on user ID and display name; never the searcher themself. Remote
// directories are not queried (the spec only asks that they SHOULD be); that
// and the data-localization rule for member profiles come with federation.
package userdirectory

import (
	"context"

	"github.com/myelin-chat/myelin/internal/mxhttp"
	"github.com/myelin-chat/myelin/storage"
)

// Store is the directory query of the shared store.
type Store interface {
	SearchUserDirectory(ctx context.Context, searcher, term string, limit int) ([]storage.DirectoryUser, bool, error)
}

// Limits of one search.
const (
	DefaultLimit  = 10
	MaxLimit      = 100 // larger limits are lowered to this
	MaxTermLength = 256
)

// Scope tells whether a user may be listed (residency zones'
// user_directory_visible).
type Scope interface {
	Listed(userID string) bool
}

// Service is the user directory.
type Service struct {
	store Store
	scope Scope
}

// Options are what the user directory is built from.
type Options struct {
	Store Store
	// Scope leaves out the users it does not list (nil: every user).
	Scope Scope
}

// New returns the user directory.
func New(o Options) *Service { return &Service{store: o.Store, scope: o.Scope} }

// scopeSlack is how many more rows than asked a scoped search reads, so that
// users left out by the scope do not shorten the page much.
const scopeSlack = 4

// User is one result.
type User struct {
	UserID      string `json:"user_id"`
	DisplayName string `json:"display_name,omitempty"`
	AvatarURL   string `json:"avatar_url,omitempty"`
}

// Search returns up to limit users visible to searcher matching term, and
// whether more matched.
func (s *Service) Search(ctx context.Context, searcher, term string, limit int) ([]User, bool, error) {
	if limit <= 0 {
		return nil, false, mxhttp.InvalidParam("limit must be a positive integer")
	}
	if len(term) > MaxTermLength {
		return nil, false, mxhttp.InvalidParam("search_term is too long (at most %d bytes)", MaxTermLength)
	}
	limit = min(limit, MaxLimit)
	ask := limit
	if s.scope != nil {
		ask = limit * scopeSlack
	}
	rows, limited, err := s.store.SearchUserDirectory(ctx, searcher, term, ask)
	if err != nil {
		return nil, false, err
	}
	out := make([]User, 0, min(len(rows), limit))
	for _, r := range rows {
		if s.scope != nil && !s.scope.Listed(r.UserID) {
			continue
		}
		if len(out) == limit {
			limited = true
			break
		}
		out = append(out, User{UserID: r.UserID, DisplayName: r.DisplayName, AvatarURL: r.AvatarURL})
	}
	return out, limited, nil
}
