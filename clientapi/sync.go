package clientapi

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"
	"maunium.net/go/mautrix/pushrules"

	"github.com/myelin-chat/myelin/ephemeral"
	"github.com/myelin-chat/myelin/push"
)

// Sync is what the sync-related handlers need: GET /sync itself (an
// http.Handler from clientapi/syncv2), typing, receipts and presence (the
// ephemeral module), push rules, pushers and notifications (the push module).
type Sync interface {
	http.Handler // GET /sync

	SetTyping(ctx context.Context, roomID, userID string, typing bool, timeout time.Duration) error
	SendReceipt(ctx context.Context, roomID, userID, receiptType, eventID, threadID string) error
	SetReadMarkers(ctx context.Context, roomID, userID, fullyRead, read, readPrivate string) error
	SetPresence(ctx context.Context, userID, state string, statusMsg *string, setMsg bool) error
	GetPresence(ctx context.Context, requester, target string) (*ephemeral.PresenceContent, error)
	PushRules(ctx context.Context, userID string) (push.Rules, int64, error)
	PushRule(ctx context.Context, userID, kind, ruleID string) (*pushrules.PushRule, error)
	SetPushRule(ctx context.Context, userID, kind, ruleID, before, after string, rule *pushrules.PushRule) error
	DeletePushRule(ctx context.Context, userID, kind, ruleID string) error
	SetPushRuleEnabled(ctx context.Context, userID, kind, ruleID string, enabled bool) error
	SetPushRuleActions(ctx context.Context, userID, kind, ruleID string, actions pushrules.PushActionArray) error
	SetPusher(ctx context.Context, userID, deviceID string, req push.PusherRequest) error
	Pushers(ctx context.Context, userID string) ([]json.RawMessage, error)
	Notifications(ctx context.Context, userID string, before int64, limit int, onlyHighlight bool) ([]push.Notification, int64, error)
}

// syncRoutes are /sync, typing, receipts, presence, push rules and pushers.
func (a *API) syncRoutes(r chi.Router) {
	if a.Sync == nil {
		return
	}
	r.Method(http.MethodGet, "/sync", a.Sync)
	a.typingRoutes(r)
	a.receiptRoutes(r)
	a.readMarkerRoutes(r)
	a.presenceRoutes(r)
	a.pushRuleRoutes(r)
	a.pusherRoutes(r)
	a.notificationRoutes(r)
}
