package push

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"slices"
	"strings"

	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"
	"maunium.net/go/mautrix/pushrules"

	"github.com/myelin-chat/myelin/storage"
)

// OnRoomEvent is told about every new room event. When a room is
// replaced (an m.room.tombstone, sent by POST /upgrade or by hand), its
// joined members keep their notification settings for it in the replacement
// room, as Synapse does on upgrade. The homeserver calls it from the room
// writer's hook, before the tombstone's sender gets the answer, so the rules
// are there when the client moves on.
func (s *Service) OnRoomEvent(ctx context.Context, ev *pdu.PDU) {
	if ev.Type != "m.room.tombstone" || ev.StateKey == nil || *ev.StateKey != "" {
		return
	}
	var c struct {
		Replacement string `json:"replacement_room"`
	}
	if json.Unmarshal(ev.Content, &c) != nil || c.Replacement == string(ev.RoomID) {
		return
	}
	if sigil, local, _ := id.ParseCommonIdentifier(c.Replacement); sigil != '!' || local == "" {
		return
	}
	// This runs in the room's worker: read only the rules that name the room,
	// not every member's (one query, however large the room).
	candidates, err := s.db.UsersWithPushRulesMentioning(ctx, string(ev.RoomID))
	if err != nil || len(candidates) == 0 {
		if err != nil {
			slog.WarnContext(ctx, "push rules not carried over to the replacement room", "room", ev.RoomID, "err", err)
		}
		return
	}
	members, err := s.rooms.JoinedMembers(ctx, string(ev.RoomID))
	if err != nil {
		slog.WarnContext(ctx, "push rules not carried over to the replacement room", "room", ev.RoomID, "err", err)
		return
	}
	named := make(map[string]bool, len(candidates))
	for _, u := range candidates {
		named[u] = true
	}
	for _, u := range members {
		if !named[u] {
			continue
		}
		if err := s.CopyRoomPushRules(ctx, u, string(ev.RoomID), c.Replacement); err != nil {
			slog.WarnContext(ctx, "push rules not carried over to the replacement room", "room", ev.RoomID, "user", u, "err", err)
		}
	}
}

// CopyRoomPushRules gives userID's own rules about room from to room to: the
// room rule, and override and underride rules whose ID names the room (what
// clients create to mute a room), with their room_id conditions moved over.
// Rules the user already has for to are kept. Users without rules of their
// own (remote users among them) cost one read.
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
		return err
	}
	if !copyRoomRules(st, from, to) {
		return nil // nothing to copy: no stream position spent
	}
	return s.modify(ctx, userID, func(st *storedRules, _ Rules) error {
		copyRoomRules(st, from, to)
		return nil
	})
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
