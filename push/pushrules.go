package push

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"maunium.net/go/mautrix/pushrules"

	"github.com/myelin-chat/myelin/internal/mxhttp"
	"github.com/myelin-chat/myelin/storage"
)

// The server-default push rules of the spec (v1.19, "Predefined Rules"), with
// "[the user's Matrix ID]" and "[the local part of the user's Matrix ID]"
// substituted per user. Like Synapse, they keep the legacy body-mention rules
// that v1.17 removed (.m.rule.contains_display_name, .m.rule.roomnotif and
// .m.rule.contains_user_name, in their v1.16 places): clients that do not send
// m.mentions (nheko 0.11, bridges, bots) still mention people by name, and
// the evaluation (mautrix) skips those rules for events with m.mentions.
//
//go:embed default_pushrules.json
var defaultRulesJSON string

// RuleKinds are the push rule kinds in evaluation order.
var RuleKinds = []string{"override", "content", "room", "sender", "underride"}

// storedRules is what the push_rules table holds for a user: their own rules
// per kind in priority order, and their changes to server-default rules.
type storedRules struct {
	User     map[string][]*pushrules.PushRule `json:"user"`
	Defaults map[string]defaultChange         `json:"defaults,omitempty"`
}

type defaultChange struct {
	Enabled *bool                      `json:"enabled,omitempty"`
	Actions *pushrules.PushActionArray `json:"actions,omitempty"`
}

// Rules is a user's effective ruleset: per kind, the rules in priority order.
type Rules map[string][]*pushrules.PushRule

// Ruleset converts the rules for evaluation with mautrix pushrules.
func (r Rules) Ruleset() *pushrules.PushRuleset {
	return &pushrules.PushRuleset{
		Override:  pushrules.PushRuleArray(r["override"]).SetType(pushrules.OverrideRule),
		Content:   pushrules.PushRuleArray(r["content"]).SetType(pushrules.ContentRule),
		Room:      pushrules.PushRuleArray(r["room"]).SetTypeAndMap(pushrules.RoomRule),
		Sender:    pushrules.PushRuleArray(r["sender"]).SetTypeAndMap(pushrules.SenderRule),
		Underride: pushrules.PushRuleArray(r["underride"]).SetType(pushrules.UnderrideRule),
	}
}

// MarshalJSON writes every kind, empty kinds as [] rather than null, and the
// rules as WireRule.
func (r Rules) MarshalJSON() ([]byte, error) {
	out := make(map[string][]WireRule, len(RuleKinds))
	for _, k := range RuleKinds {
		out[k] = make([]WireRule, 0, len(r[k]))
		for _, rule := range r[k] {
			out[k] = append(out[k], WireRule{Rule: rule, Kind: k})
		}
	}
	return json.Marshal(out)
}

// WireRule is a push rule of kind Kind as served to clients, in the spec's
// shape. mautrix's own marshalling drifts from it in ways clients notice
// (nheko 0.11 rejected the whole m.push_rules event and ran with no rules):
// it drops an empty "pattern" (the tombstone and server_acl conditions match
// state_key ""), an empty "conditions" list, and writes tweaks without a
// value as "value": null (see WireActions).
type WireRule struct {
	Rule *pushrules.PushRule
	Kind string
}

// MarshalJSON writes the fields the rule's kind has: conditions for override
// and underride rules, a pattern for content rules, neither for room and
// sender rules.
func (w WireRule) MarshalJSON() ([]byte, error) {
	out := map[string]any{"rule_id": w.Rule.RuleID, "default": w.Rule.Default, "enabled": w.Rule.Enabled,
		"actions": WireActions(w.Rule.Actions)}
	switch w.Kind {
	case "content":
		out["pattern"] = w.Rule.Pattern
	case "override", "underride":
		conds := make([]wireCondition, len(w.Rule.Conditions))
		for i, c := range w.Rule.Conditions {
			conds[i] = wireCondition{c}
		}
		out["conditions"] = conds
	}
	return json.Marshal(out)
}

// wireCondition writes a condition with the parameters its kind defines,
// empty ones included.
type wireCondition struct{ c *pushrules.PushCondition }

func (w wireCondition) MarshalJSON() ([]byte, error) {
	c := w.c
	switch c.Kind {
	case pushrules.KindEventMatch:
		return json.Marshal(map[string]any{"kind": c.Kind, "key": c.Key, "pattern": c.Pattern})
	case pushrules.KindEventPropertyIs, pushrules.KindEventPropertyContains:
		return json.Marshal(map[string]any{"kind": c.Kind, "key": c.Key, "value": c.Value})
	case pushrules.KindContainsDisplayName:
		return json.Marshal(map[string]any{"kind": c.Kind})
	case pushrules.KindRoomMemberCount:
		return json.Marshal(map[string]any{"kind": c.Kind, "is": c.MemberCountCondition})
	case pushrules.KindSenderNotificationPermission:
		return json.Marshal(map[string]any{"kind": c.Kind, "key": c.Key})
	}
	return json.Marshal(c) // kinds the spec does not define: as mautrix keeps them
}

// WireActions are push actions as served to clients. mautrix writes a
// set_tweak without a value as "value": null, and clients read a present
// value as given (matrix-js-sdk: a null highlight tweak is no highlight),
// whereas the spec's {"set_tweak": "highlight"} means true; nil is [], not
// null.
type WireActions pushrules.PushActionArray

// MarshalJSON writes the actions, leaving out absent tweak values.
func (a WireActions) MarshalJSON() ([]byte, error) {
	out := make([]any, 0, len(a))
	for _, act := range a {
		if act.Action == pushrules.ActionSetTweak && act.Value == nil {
			out = append(out, map[string]any{"set_tweak": act.Tweak})
			continue
		}
		out = append(out, act)
	}
	return json.Marshal(out)
}

func defaultRules(userID string) map[string][]*pushrules.PushRule {
	localpart, _, _ := strings.Cut(strings.TrimPrefix(userID, "@"), ":")
	raw := strings.NewReplacer("[the user's Matrix ID]", jsonString(userID),
		"[the local part of the user's Matrix ID]", jsonString(localpart)).Replace(defaultRulesJSON)
	var rules map[string][]*pushrules.PushRule
	if err := json.Unmarshal([]byte(raw), &rules); err != nil {
		panic("push: bad default push rules: " + err.Error())
	}
	return rules
}

// jsonString is s escaped for use inside a JSON string literal.
func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b[1 : len(b)-1])
}

func validKind(kind string) bool {
	for _, k := range RuleKinds {
		if k == kind {
			return true
		}
	}
	return false
}

func parseStored(raw string) (*storedRules, error) {
	st := &storedRules{}
	if raw != "" {
		if err := json.Unmarshal([]byte(raw), st); err != nil {
			return nil, fmt.Errorf("decoding stored push rules: %w", err)
		}
	}
	if st.User == nil {
		st.User = map[string][]*pushrules.PushRule{}
	}
	if st.Defaults == nil {
		st.Defaults = map[string]defaultChange{}
	}
	return st, nil
}

// effective merges the server defaults with the user's rules: .m.rule.master
// first, then user rules before the server-default rules of each kind.
func (st *storedRules) effective(userID string) Rules {
	defs := defaultRules(userID)
	for _, rules := range defs {
		for _, r := range rules {
			if ch, ok := st.Defaults[r.RuleID]; ok {
				if ch.Enabled != nil {
					r.Enabled = *ch.Enabled
				}
				if ch.Actions != nil {
					r.Actions = *ch.Actions
				}
			}
		}
	}
	out := Rules{}
	for _, k := range RuleKinds {
		var list []*pushrules.PushRule
		d := defs[k]
		if k == "override" && len(d) > 0 && d[0].RuleID == ".m.rule.master" {
			list = append(list, d[0])
			d = d[1:]
		}
		list = append(list, st.User[k]...)
		list = append(list, d...)
		out[k] = list
	}
	return out
}

// cachedRules is a user's effective rules, ready for evaluation. The module
// is the only writer of push rules, so the cache is exact: modify drops the
// entry and bumps the user's generation, so that a load racing with a change
// never stores the old rules.
type cachedRules struct {
	rules   Rules
	ruleset *pushrules.PushRuleset
	pos     int64
}

const maxCachedRules = 100_000

func (s *Service) userRules(ctx context.Context, userID string) (*cachedRules, error) {
	s.rulesMu.Lock()
	c, gen := s.rules[userID], s.rulesGen[userID]
	s.rulesMu.Unlock()
	if c != nil {
		return c, nil
	}
	raw, pos, err := s.db.PushRules(ctx, userID)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return nil, err
	}
	st, err := parseStored(raw)
	if err != nil {
		return nil, err
	}
	rules := st.effective(userID)
	c = &cachedRules{rules: rules, ruleset: rules.Ruleset(), pos: pos}
	s.rulesMu.Lock()
	if s.rulesGen[userID] == gen {
		if len(s.rules) >= maxCachedRules {
			s.rules = map[string]*cachedRules{}
		}
		s.rules[userID] = c
	}
	s.rulesMu.Unlock()
	return c, nil
}

// PushRules returns the user's effective rules and the stream position of
// their last change (0: never changed). The rules are shared: do not modify.
func (s *Service) PushRules(ctx context.Context, userID string) (Rules, int64, error) {
	c, err := s.userRules(ctx, userID)
	if err != nil {
		return nil, 0, err
	}
	return c.rules, c.pos, nil
}

// PushRuleset is PushRules ready for evaluation with mautrix pushrules.
func (s *Service) PushRuleset(ctx context.Context, userID string) (*pushrules.PushRuleset, int64, error) {
	c, err := s.userRules(ctx, userID)
	if err != nil {
		return nil, 0, err
	}
	return c.ruleset, c.pos, nil
}

// PushRule returns one rule; M_NOT_FOUND when there is none.
func (s *Service) PushRule(ctx context.Context, userID, kind, ruleID string) (*pushrules.PushRule, error) {
	rules, _, err := s.PushRules(ctx, userID)
	if err != nil {
		return nil, err
	}
	if r := find(rules[kind], ruleID); r != nil {
		return r, nil
	}
	return nil, mxhttp.NotFound("The push rule was not found.")
}

func find(rules []*pushrules.PushRule, ruleID string) *pushrules.PushRule {
	for _, r := range rules {
		if r.RuleID == ruleID {
			return r
		}
	}
	return nil
}

func indexOf(rules []*pushrules.PushRule, ruleID string) int {
	for i, r := range rules {
		if r.RuleID == ruleID {
			return i
		}
	}
	return -1
}

// modify applies change to the user's stored rules in one transaction at a new
// stream position, and notifies the user (m.push_rules account data changed).
func (s *Service) modify(ctx context.Context, userID string, change func(st *storedRules, effective Rules) error) error {
	pos, finish, err := s.stream.Allocate()
	if err != nil {
		return err
	}
	err = s.db.UpdatePushRules(ctx, userID, pos, func(current string) (string, error) {
		st, err := parseStored(current)
		if err != nil {
			return "", err
		}
		if err := change(st, st.effective(userID)); err != nil {
			return "", err
		}
		b, err := json.Marshal(st)
		if err == nil && len(b) > maxPushRulesBytes && len(b) > len(current) {
			return "", mxhttp.TooLarge("A user's push rules may hold at most %d bytes", maxPushRulesBytes)
		}
		return string(b), err
	})
	finish()
	s.rulesMu.Lock()
	delete(s.rules, userID)
	s.rulesGen[userID]++
	s.rulesMu.Unlock()
	if err != nil {
		return err
	}
	s.notifier.Notify(pos, userID)
	return nil
}

// Bounds on push rules. Every event in a user's rooms is matched against all
// their rules (conditions and glob patterns), the whole set is rewritten on
// each change and sent as m.push_rules account data: without bounds one user
// could store megabytes of patterns (20,000 conditions were accepted in one
// rule) and make every message in their rooms cost seconds of CPU. Clients'
// rules are a few hundred bytes; a user with per-room settings in thousands
// of rooms stays well under the total.
const (
	maxPushRuleBytes  = 8 * 1024    // one rule as stored (conditions, pattern, actions)
	maxPushRulesBytes = 1024 * 1024 // all of a user's rules
	maxRuleIDBytes    = 255
)

// SetPushRule creates or updates a user-defined rule (PUT /pushrules/global/{kind}/{ruleId}).
func (s *Service) SetPushRule(ctx context.Context, userID, kind, ruleID, before, after string, rule *pushrules.PushRule) error {
	if !validKind(kind) {
		return mxhttp.InvalidParam("Unknown push rule kind %q", kind)
	}
	if ruleID == "" || strings.HasPrefix(ruleID, ".") || strings.ContainsAny(ruleID, `/\`) {
		return mxhttp.InvalidParam("Invalid rule_id: it must not be empty, start with '.', or contain slashes")
	}
	if len(ruleID) > maxRuleIDBytes {
		return mxhttp.InvalidParam("rule_id exceeds %d bytes", maxRuleIDBytes)
	}
	switch kind {
	case "content":
		if rule.Pattern == "" {
			return mxhttp.MissingParam("Content rules need a pattern")
		}
		rule.Conditions = nil
	case "override", "underride":
		rule.Pattern = ""
		if rule.Conditions == nil {
			rule.Conditions = []*pushrules.PushCondition{}
		}
	default:
		rule.Pattern, rule.Conditions = "", nil
	}
	if kind == "room" || kind == "sender" {
		sigil := byte('!')
		if kind == "sender" {
			sigil = '@'
		}
		if ruleID[0] != sigil {
			return mxhttp.InvalidParam("A %s rule's rule_id must be a %s ID", kind, kind)
		}
	}
	rule.RuleID, rule.Default, rule.Enabled = ruleID, false, true
	if b, err := json.Marshal(rule); err != nil || len(b) > maxPushRuleBytes {
		return mxhttp.TooLarge("A push rule may hold at most %d bytes", maxPushRuleBytes)
	}
	return s.modify(ctx, userID, func(st *storedRules, _ Rules) error {
		list := st.User[kind]
		if i := indexOf(list, ruleID); i >= 0 {
			if before == "" && after == "" {
				rule.Enabled = list[i].Enabled // an update keeps its place and enabled flag
				list[i] = rule
				st.User[kind] = list
				return nil
			}
			list = append(list[:i:i], list[i+1:]...)
		}
		at := 0 // new rules go first among the user's rules
		switch {
		case before != "":
			if at = indexOf(list, before); at < 0 {
				return mxhttp.Unknown("before/after rule not found: %s", before)
			}
		case after != "":
			if at = indexOf(list, after); at < 0 {
				return mxhttp.Unknown("before/after rule not found: %s", after)
			}
			at++
		}
		list = append(list[:at], append([]*pushrules.PushRule{rule}, list[at:]...)...)
		st.User[kind] = list
		return nil
	})
}

// DeletePushRule deletes a user-defined rule.
func (s *Service) DeletePushRule(ctx context.Context, userID, kind, ruleID string) error {
	if !validKind(kind) {
		return mxhttp.InvalidParam("Unknown push rule kind %q", kind)
	}
	return s.modify(ctx, userID, func(st *storedRules, eff Rules) error {
		i := indexOf(st.User[kind], ruleID)
		if i < 0 {
			if find(eff[kind], ruleID) != nil {
				return mxhttp.Forbidden("Server-default push rules cannot be deleted")
			}
			return mxhttp.NotFound("The push rule was not found.")
		}
		st.User[kind] = append(st.User[kind][:i], st.User[kind][i+1:]...)
		return nil
	})
}

// SetPushRuleEnabled enables or disables a rule (user-defined or server-default).
func (s *Service) SetPushRuleEnabled(ctx context.Context, userID, kind, ruleID string, enabled bool) error {
	return s.modifyRule(ctx, userID, kind, ruleID,
		func(r *pushrules.PushRule) { r.Enabled = enabled },
		func(c *defaultChange) { c.Enabled = &enabled })
}

// SetPushRuleActions replaces a rule's actions.
func (s *Service) SetPushRuleActions(ctx context.Context, userID, kind, ruleID string, actions pushrules.PushActionArray) error {
	if actions == nil {
		actions = pushrules.PushActionArray{}
	}
	if b, err := json.Marshal(actions); err != nil || len(b) > maxPushRuleBytes {
		return mxhttp.TooLarge("A push rule may hold at most %d bytes", maxPushRuleBytes)
	}
	return s.modifyRule(ctx, userID, kind, ruleID,
		func(r *pushrules.PushRule) { r.Actions = actions },
		func(c *defaultChange) { c.Actions = &actions })
}

// modifyRule changes one rule: with user when the user defined it, else with
// def on the stored change to a server-default rule; M_NOT_FOUND otherwise.
func (s *Service) modifyRule(ctx context.Context, userID, kind, ruleID string, user func(*pushrules.PushRule), def func(*defaultChange)) error {
	return s.modify(ctx, userID, func(st *storedRules, eff Rules) error {
		if i := indexOf(st.User[kind], ruleID); i >= 0 {
			user(st.User[kind][i])
			return nil
		}
		if r := find(eff[kind], ruleID); r != nil && r.Default {
			ch := st.Defaults[ruleID]
			def(&ch)
			st.Defaults[ruleID] = ch
			return nil
		}
		return mxhttp.NotFound("The push rule was not found.")
	})
}
