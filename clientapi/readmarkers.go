package clientapi

import (
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/myelin-chat/myelin/internal/authn"
	"github.com/myelin-chat/myelin/internal/mxhttp"
)

func (a *API) readMarkerRoutes(r chi.Router) {
	r.Method(http.MethodPost, "/rooms/{roomId}/read_markers", mxhttp.JSON(a.postReadMarkers))
}

// postReadMarkers: POST /rooms/{roomId}/read_markers (read_markers.yaml).
func (a *API) postReadMarkers(r *http.Request) (any, error) {
	dev := authn.FromRequest(r)
	var body struct {
		FullyRead   string `json:"m.fully_read"`
		Read        string `json:"m.read"`
		ReadPrivate string `json:"m.read.private"`
	}
	if err := mxhttp.ReadJSON(r, &body); err != nil {
		return nil, err
	}
	return mxhttp.EmptyOr(a.Ephemeral.SetReadMarkers(r.Context(), mxhttp.PathParam(r, "roomId"), dev.UserID.String(), body.FullyRead, body.Read, body.ReadPrivate))
}
