package clientapi

import (
	"context"
	"encoding/json"

	"github.com/go-chi/chi/v5"
	"maunium.net/go/mautrix/pushrules"

	"github.com/myelin-chat/myelin/push"
)

// Push is what the push-rule, pusher and notification handlers need (the
// push module).
type Push interface {
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

// pushRoutes are push rules, pushers and notifications.
func (a *API) pushRoutes(r chi.Router) {
	if a.Push == nil {
		return
	}
	a.pushRuleRoutes(r)
	a.pusherRoutes(r)
	a.notificationRoutes(r)
}
