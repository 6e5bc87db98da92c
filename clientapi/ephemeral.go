package clientapi

import (
	"context"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/myelin-chat/myelin/ephemeral"
)

// Ephemeral is what the typing, receipt, read-marker and presence handlers
// need (the ephemeral module).
type Ephemeral interface {
	SetTyping(ctx context.Context, roomID, userID string, typing bool, timeout time.Duration) error
	SendReceipt(ctx context.Context, roomID, userID, receiptType, eventID, threadID string) error
	SetReadMarkers(ctx context.Context, roomID, userID, fullyRead, read, readPrivate string) error
	SetPresence(ctx context.Context, userID, state string, statusMsg *string, setMsg bool) error
	GetPresence(ctx context.Context, requester, target string) (*ephemeral.PresenceContent, error)
}

// ephemeralRoutes are typing, receipts, read markers and presence.
func (a *API) ephemeralRoutes(r chi.Router) {
	if a.Ephemeral == nil {
		return
	}
	a.typingRoutes(r)
	a.receiptRoutes(r)
	a.readMarkerRoutes(r)
	a.presenceRoutes(r)
}
