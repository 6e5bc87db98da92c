package clientapi

import (
	"encoding/json"
	"net/http"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/myelin-chat/myelin/ephemeral"
	"github.com/myelin-chat/myelin/internal/authn"
	"github.com/myelin-chat/myelin/internal/mxhttp"
)

func (a *API) receiptRoutes(r chi.Router) {
	r.Method(http.MethodPost, "/rooms/{roomId}/receipt/{receiptType}/{eventId}", mxhttp.JSON(a.postReceipt))
}

// postReceipt: POST /rooms/{roomId}/receipt/{receiptType}/{eventId} (receipts.yaml).
func (a *API) postReceipt(r *http.Request) (any, error) {
	dev := authn.FromRequest(r)
	roomID, typ, eventID := mxhttp.PathParam(r, "roomId"), mxhttp.PathParam(r, "receiptType"), mxhttp.PathParam(r, "eventId")
	body, err := mxhttp.ReadJSONObject(r)
	if err != nil {
		return nil, err
	}
	threadID := ""
	if raw, ok := body["thread_id"]; ok {
		if json.Unmarshal(raw, &threadID) != nil || threadID == "" {
			return nil, mxhttp.InvalidParam("thread_id field must be a non-empty string")
		}
	}
	if !strings.HasPrefix(eventID, "$") {
		return nil, mxhttp.InvalidParam("Invalid event ID")
	}
	switch typ {
	case ephemeral.ReceiptRead, ephemeral.ReceiptReadPrivate:
		err = a.Ephemeral.SendReceipt(r.Context(), roomID, dev.UserID.String(), typ, eventID, threadID)
	case ephemeral.FullyRead:
		if threadID != "" {
			return nil, mxhttp.InvalidParam("thread_id is not allowed for m.fully_read")
		}
		err = a.Ephemeral.SetReadMarkers(r.Context(), roomID, dev.UserID.String(), eventID, "", "")
	default:
		return nil, mxhttp.InvalidParam("Unknown receipt type %q", typ)
	}
	return mxhttp.EmptyOr(err)
}
