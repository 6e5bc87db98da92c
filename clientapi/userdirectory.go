package clientapi

import (
	"context"
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/myelin-chat/myelin/internal/authn"
	"github.com/myelin-chat/myelin/internal/mxhttp"
	"github.com/myelin-chat/myelin/userdirectory"
)

// UserDirectory searches the users visible to the searcher (userdirectory.Service).
type UserDirectory interface {
	Search(ctx context.Context, searcher, term string, limit int) ([]userdirectory.User, bool, error)
}

func (a *API) userDirectoryRoutes(r chi.Router) {
	if a.UserDirectory == nil {
		return
	}
	r.Method(http.MethodPost, "/user_directory/search", mxhttp.JSON(a.searchUserDirectory))
}

func (a *API) searchUserDirectory(r *http.Request) (any, error) {
	var req struct {
		SearchTerm *string `json:"search_term"`
		Limit      *int    `json:"limit"`
	}
	if err := mxhttp.ReadJSON(r, &req); err != nil {
		return nil, err
	}
	if req.SearchTerm == nil {
		return nil, mxhttp.MissingParam("Missing search_term")
	}
	limit := userdirectory.DefaultLimit
	if req.Limit != nil {
		limit = *req.Limit
	}
	users, limited, err := a.UserDirectory.Search(r.Context(), authn.FromRequest(r).UserID.String(), *req.SearchTerm, limit)
	if err != nil {
		return nil, err
	}
	if users == nil {
		users = []userdirectory.User{}
	}
	return map[string]any{"results": users, "limited": limited}, nil
}
