package clientapi

import (
	"net/http"
	"strconv"

	"github.com/go-chi/chi/v5"

	"github.com/myelin-chat/myelin/internal/authn"
	"github.com/myelin-chat/myelin/internal/mxhttp"
)

func (a *API) notificationRoutes(r chi.Router) {
	r.Method(http.MethodGet, "/notifications", mxhttp.JSON(a.getNotifications))
}

// getNotifications: GET /notifications (notifications.yaml).
func (a *API) getNotifications(r *http.Request) (any, error) {
	dev := authn.FromRequest(r)
	q := r.URL.Query()
	var before int64
	if from := q.Get("from"); from != "" {
		n, err := strconv.ParseInt(from, 10, 64)
		if err != nil || n <= 0 {
			return nil, mxhttp.InvalidParam("Invalid from token")
		}
		before = n
	}
	limit := 20
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n <= 0 {
			return nil, mxhttp.InvalidParam("limit must be a positive integer")
		}
		limit = min(n, 100)
	}
	only := q.Get("only")
	if only != "" && only != "highlight" {
		return nil, mxhttp.InvalidParam("only must be \"highlight\"")
	}
	list, next, err := a.Push.Notifications(r.Context(), dev.UserID.String(), before, limit, only == "highlight")
	if err != nil {
		return nil, err
	}
	resp := map[string]any{"notifications": list}
	if next > 0 {
		resp["next_token"] = strconv.FormatInt(next, 10)
	}
	return resp, nil
}
