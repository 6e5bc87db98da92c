package clientapi

import (
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/myelin-chat/myelin/internal/authn"
	"github.com/myelin-chat/myelin/internal/mxhttp"
)

func (a *API) typingRoutes(r chi.Router) {
	r.Method(http.MethodPut, "/rooms/{roomId}/typing/{userId}", mxhttp.JSON(a.putTyping))
}

// putTyping: PUT /rooms/{roomId}/typing/{userId} (typing.yaml).
func (a *API) putTyping(r *http.Request) (any, error) {
	dev := authn.FromRequest(r)
	if mxhttp.PathParam(r, "userId") != dev.UserID.String() {
		return nil, mxhttp.Forbidden("You may only set your own typing state")
	}
	var body struct {
		Typing  *bool  `json:"typing"`
		Timeout *int64 `json:"timeout"`
	}
	if err := mxhttp.ReadJSON(r, &body); err != nil {
		return nil, err
	}
	if body.Typing == nil {
		return nil, mxhttp.BadJSON("typing is required")
	}
	timeout := 30 * time.Second
	if body.Timeout != nil {
		if *body.Timeout < 0 {
			return nil, mxhttp.BadJSON("timeout must not be negative")
		}
		timeout = time.Duration(*body.Timeout) * time.Millisecond
	}
	return mxhttp.EmptyOr(a.Ephemeral.SetTyping(r.Context(), mxhttp.PathParam(r, "roomId"), dev.UserID.String(), *body.Typing, timeout))
}
