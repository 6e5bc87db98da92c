package clientapi

import (
	"context"
	"encoding/json"
	"net/http"

	"github.com/go-chi/chi/v5"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/internal/authn"
	"github.com/myelin-chat/myelin/internal/mxhttp"
	"github.com/myelin-chat/myelin/roomview"
)

// RoomsSearch is server-side search (roomview.Service.Search).
type RoomsSearch interface {
	Search(ctx context.Context, user id.UserID, req roomview.SearchRequest) (*roomview.SearchResponse, error)
}

func (a *API) searchRoutes(r chi.Router) {
	if a.RoomView == nil {
		return
	}
	r.Method(http.MethodPost, "/search", mxhttp.JSON(a.search))
}

// searchBody is POST /search's body; only the room_events category exists.
type searchBody struct {
	SearchCategories *struct {
		RoomEvents *struct {
			SearchTerm   *string         `json:"search_term"`
			Keys         []string        `json:"keys"`
			Filter       json.RawMessage `json:"filter"`
			OrderBy      string          `json:"order_by"`
			EventContext *struct {
				BeforeLimit    *int `json:"before_limit"`
				AfterLimit     *int `json:"after_limit"`
				IncludeProfile bool `json:"include_profile"`
			} `json:"event_context"`
			IncludeState bool `json:"include_state"`
			Groupings    *struct {
				GroupBy []struct {
					Key string `json:"key"`
				} `json:"group_by"`
			} `json:"groupings"`
		} `json:"room_events"`
	} `json:"search_categories"`
}

func (a *API) search(r *http.Request) (any, error) {
	var body searchBody
	if err := mxhttp.ReadJSON(r, &body); err != nil {
		return nil, err
	}
	if body.SearchCategories == nil {
		return nil, mxhttp.MissingParam("Missing search_categories")
	}
	re := body.SearchCategories.RoomEvents
	if re == nil {
		return map[string]any{"search_categories": map[string]any{}}, nil
	}
	if re.SearchTerm == nil {
		return nil, mxhttp.MissingParam("Missing search_categories.room_events.search_term")
	}
	req := roomview.SearchRequest{Term: *re.SearchTerm, Keys: re.Keys, OrderBy: re.OrderBy,
		IncludeState: re.IncludeState, NextBatch: r.URL.Query().Get("next_batch")}
	if len(re.Filter) > 0 && string(re.Filter) != "null" {
		f, err := parseEventFilter(string(re.Filter))
		if err != nil {
			return nil, err
		}
		req.Filter = f
	}
	if c := re.EventContext; c != nil {
		req.Context = &roomview.SearchContextRequest{BeforeLimit: roomview.DefaultSearchContext,
			AfterLimit: roomview.DefaultSearchContext, IncludeProfile: c.IncludeProfile}
		if c.BeforeLimit != nil {
			req.Context.BeforeLimit = *c.BeforeLimit
		}
		if c.AfterLimit != nil {
			req.Context.AfterLimit = *c.AfterLimit
		}
	}
	if g := re.Groupings; g != nil {
		for _, k := range g.GroupBy {
			req.GroupBy = append(req.GroupBy, k.Key)
		}
	}
	res, err := a.RoomView.Search(readCtx(r), authn.FromRequest(r).UserID, req)
	if err != nil {
		return nil, roomError(err)
	}
	return map[string]any{"search_categories": map[string]any{"room_events": res}}, nil
}
