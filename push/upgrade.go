package push

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"maunium.net/go/mautrix/id"
	"maunium.net/go/mautrix/pushrules"

	"github.com/myelin-chat/myelin/internal/mxhttp"
	"github.com/myelin-chat/myelin/storage"
)

// UpgradeFollower names the follower (internal/follower) that runs
// CopyPushRulesOnUpgrade; it is the key of its cursor in the store.
const UpgradeFollower = "push_rules_room_upgrade"

// CopyPushRulesOnUpgrade follows new room events. When a room is replaced
// (an m.room.tombstone, sent by POST /upgrade or by hand), its joined members
// keep their notification settings for it in the replacement room, as Synapse
// does on upgrade. It runs shortly after the tombstone's commit, outside the
// room writer: the members are those joined when it runs, and the client sees
// the copied rules arrive in /sync as an m.push_rules change. Copying is
// idempotent (rules already there are kept), as a follower must be. It fails
// (and the follower retries the page) when the store fails; a user whose
// rules can never be copied (errCannotCopy) is logged and skipped.
func (s *Service) CopyPushRulesOnUpgrade(ctx context.Context, events []*storage.Event) error {
	for _, ev := range events {
		if ev.Type != "m.room.tombstone" || ev.StateKey == nil || *ev.StateKey != "" {
			continue
		}
		var pdu struct {
			Content struct {
				Replacement string `json:"replacement_room"`
			} `json:"content"`
		}
		if json.Unmarshal(ev.JSON, &pdu) != nil {
			continue
		}
		if err := s.copyToReplacement(ctx, ev.RoomID, pdu.Content.Replacement); err != nil {
			return err
		}
	}
	return nil
}

func (s *Service) copyToReplacement(ctx context.Context, roomID, replacement string) error {
	if replacement == roomID {
		return nil
	}
	if sigil, local, _ := id.ParseCommonIdentifier(replacement); sigil != '!' || local == "" {
		return nil
	}
	// Read only the rules that name the room, not every member's (one query,
	// however large the room).
	candidates, err := s.db.UsersWithPushRulesMentioning(ctx, roomID)
	if err != nil {
		return fmt.Errorf("copying push rules from %s: %w", roomID, err)
	}
	if len(candidates) == 0 {
		return nil
	}
	members, err := s.rooms.JoinedMembers(ctx, roomID)
	if err != nil {
		return fmt.Errorf("copying push rules from %s: %w", roomID, err)
	}
	named := make(map[string]bool, len(candidates))
	for _, u := range candidates {
		named[u] = true
	}
	for _, u := range members {
		if !named[u] {
			continue
		}
		err := s.CopyRoomPushRules(ctx, u, roomID, replacement)
		if errors.Is(err, errCannotCopy) {
			slog.WarnContext(ctx, "push rules not carried over to the replacement room", "room", roomID, "user", u, "err", err)
		} else if err != nil {
			return fmt.Errorf("copying the push rules of %s from %s: %w", u, roomID, err)
		}
	}
	return nil
}

// errCannotCopy marks a user whose rules no retry would copy: their stored
// rules do not parse, or the copies would take them past the size bound.
var errCannotCopy = errors.New("push rules cannot be copied")

// CopyRoomPushRules gives userID's own rules about room from to room to: the
// room rule, and override and underride rules whose ID names the room (what
// clients create to mute a room), with their room_id conditions moved over.
// Rules the user already has for to are kept. Users without rules of their
// own (remote users among them) cost one read. Store errors are returned as
// they are; errCannotCopy wraps what no retry would mend.
func (s *Service) CopyRoomPushRules(ctx context.Context, userID, from, to string) error {
	raw, _, err := s.db.PushRules(ctx, userID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	st, err := parseStored(raw)
	if err != nil {
		return fmt.Errorf("%w: %w", errCannotCopy, err)
	}
	if !copyRoomRules(st, from, to) {
		return nil // nothing to copy: no stream position spent
	}
	err = s.modify(ctx, userID, func(st *storedRules, _ Rules) error {
		copyRoomRules(st, from, to)
		return nil
	})
	var bound *mxhttp.Error // modify's only answer of its own: the size bound
	if errors.As(err, &bound) {
		return fmt.Errorf("%w: %w", errCannotCopy, err)
	}
	return err
}

// copyRoomRules adds to st the copies CopyRoomPushRules describes, each just
// before its original, and reports whether it added any.
func copyRoomRules(st *storedRules, from, to string) bool {
	added := false
	for _, kind := range RuleKinds {
		var out []*pushrules.PushRule
		for _, r := range st.User[kind] {
			if cp := roomRuleCopy(kind, r, from, to); cp != nil && indexOf(st.User[kind], cp.RuleID) < 0 {
				out = append(out, cp)
				added = true
			}
			out = append(out, r)
		}
		st.User[kind] = out
	}
	return added
}

// roomRuleCopy is r moved from room from to room to, or nil when r is not
// about from.
func roomRuleCopy(kind string, r *pushrules.PushRule, from, to string) *pushrules.PushRule {
	switch kind {
	case "room":
		if r.RuleID != from {
			return nil
		}
	case "override", "underride":
		if !strings.Contains(r.RuleID, from) {
			return nil
		}
	default:
		return nil
	}
	cp := *r
	cp.RuleID = strings.ReplaceAll(r.RuleID, from, to)
	cp.Actions = slices.Clone(r.Actions)
	cp.Conditions = make([]*pushrules.PushCondition, len(r.Conditions))
	for i, c := range r.Conditions {
		cc := *c
		if cc.Kind == pushrules.KindEventMatch && cc.Key == "room_id" && cc.Pattern == from {
			cc.Pattern = to
		}
		cp.Conditions[i] = &cc
	}
	if kind == "room" {
		cp.Conditions = nil
	}
	return &cp
}
