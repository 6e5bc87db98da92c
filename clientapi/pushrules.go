package clientapi

import (
	"encoding/json"
	"net/http"

	"github.com/go-chi/chi/v5"
	"maunium.net/go/mautrix/pushrules"

	"github.com/myelin-chat/myelin/internal/authn"
	"github.com/myelin-chat/myelin/internal/mxhttp"
	"github.com/myelin-chat/myelin/push"
)

func (a *API) pushRuleRoutes(r chi.Router) {
	r.Method(http.MethodGet, "/pushrules/", mxhttp.JSON(a.getPushRules))
	r.Method(http.MethodGet, "/pushrules", mxhttp.JSON(a.getPushRules))
	r.Method(http.MethodGet, "/pushrules/global/", mxhttp.JSON(a.getGlobalPushRules))
	r.Route("/pushrules/{scope}/{kind}/{ruleId}", func(r chi.Router) {
		r.Method(http.MethodGet, "/", mxhttp.JSON(a.getPushRule))
		r.Method(http.MethodPut, "/", mxhttp.JSON(a.putPushRule))
		r.Method(http.MethodDelete, "/", mxhttp.JSON(a.deletePushRule))
		r.Method(http.MethodGet, "/enabled", mxhttp.JSON(a.getPushRuleEnabled))
		r.Method(http.MethodPut, "/enabled", mxhttp.JSON(a.putPushRuleEnabled))
		r.Method(http.MethodGet, "/actions", mxhttp.JSON(a.getPushRuleActions))
		r.Method(http.MethodPut, "/actions", mxhttp.JSON(a.putPushRuleActions))
	})
}

func (a *API) getPushRules(r *http.Request) (any, error) {
	rules, _, err := a.Push.PushRules(r.Context(), authn.FromRequest(r).UserID.String())
	if err != nil {
		return nil, err
	}
	return map[string]any{"global": rules}, nil
}

func (a *API) getGlobalPushRules(r *http.Request) (any, error) {
	rules, _, err := a.Push.PushRules(r.Context(), authn.FromRequest(r).UserID.String())
	return rules, err
}

// ruleParams checks the path: only the "global" scope exists.
func ruleParams(r *http.Request) (user, kind, ruleID string, err error) {
	if mxhttp.PathParam(r, "scope") != "global" {
		return "", "", "", mxhttp.NotFound("Unknown push rule scope")
	}
	return authn.FromRequest(r).UserID.String(), mxhttp.PathParam(r, "kind"), mxhttp.PathParam(r, "ruleId"), nil
}

// pushRule is the rule the path names.
func (a *API) pushRule(r *http.Request) (*pushrules.PushRule, error) {
	user, kind, ruleID, err := ruleParams(r)
	if err != nil {
		return nil, err
	}
	return a.Push.PushRule(r.Context(), user, kind, ruleID)
}

func (a *API) getPushRule(r *http.Request) (any, error) {
	rule, err := a.pushRule(r)
	if err != nil {
		return nil, err
	}
	return push.WireRule{Rule: rule, Kind: mxhttp.PathParam(r, "kind")}, nil
}

func (a *API) putPushRule(r *http.Request) (any, error) {
	user, kind, ruleID, err := ruleParams(r)
	if err != nil {
		return nil, err
	}
	var body struct {
		Actions    *pushrules.PushActionArray `json:"actions"`
		Conditions []*pushrules.PushCondition `json:"conditions"`
		Pattern    string                     `json:"pattern"`
	}
	if err := mxhttp.ReadJSON(r, &body); err != nil {
		return nil, err
	}
	if body.Actions == nil {
		return nil, mxhttp.BadJSON("actions is required")
	}
	rule := &pushrules.PushRule{Actions: *body.Actions, Conditions: body.Conditions, Pattern: body.Pattern}
	q := r.URL.Query()
	return mxhttp.EmptyOr(a.Push.SetPushRule(r.Context(), user, kind, ruleID, q.Get("before"), q.Get("after"), rule))
}

func (a *API) deletePushRule(r *http.Request) (any, error) {
	user, kind, ruleID, err := ruleParams(r)
	if err != nil {
		return nil, err
	}
	return mxhttp.EmptyOr(a.Push.DeletePushRule(r.Context(), user, kind, ruleID))
}

func (a *API) getPushRuleEnabled(r *http.Request) (any, error) {
	rule, err := a.pushRule(r)
	if err != nil {
		return nil, err
	}
	return map[string]bool{"enabled": rule.Enabled}, nil
}

func (a *API) putPushRuleEnabled(r *http.Request) (any, error) {
	user, kind, ruleID, err := ruleParams(r)
	if err != nil {
		return nil, err
	}
	var body struct {
		Enabled *bool `json:"enabled"`
	}
	if err := mxhttp.ReadJSON(r, &body); err != nil {
		return nil, err
	}
	if body.Enabled == nil {
		return nil, mxhttp.BadJSON("enabled is required")
	}
	return mxhttp.EmptyOr(a.Push.SetPushRuleEnabled(r.Context(), user, kind, ruleID, *body.Enabled))
}

func (a *API) getPushRuleActions(r *http.Request) (any, error) {
	rule, err := a.pushRule(r)
	if err != nil {
		return nil, err
	}
	return map[string]any{"actions": push.WireActions(rule.Actions)}, nil
}

func (a *API) putPushRuleActions(r *http.Request) (any, error) {
	user, kind, ruleID, err := ruleParams(r)
	if err != nil {
		return nil, err
	}
	var body struct {
		Actions *json.RawMessage `json:"actions"`
	}
	if err := mxhttp.ReadJSON(r, &body); err != nil {
		return nil, err
	}
	if body.Actions == nil {
		return nil, mxhttp.BadJSON("actions is required")
	}
	var actions pushrules.PushActionArray
	if err := json.Unmarshal(*body.Actions, &actions); err != nil {
		return nil, mxhttp.BadJSON("actions must be an array of actions")
	}
	return mxhttp.EmptyOr(a.Push.SetPushRuleActions(r.Context(), user, kind, ruleID, actions))
}
