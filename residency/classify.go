package residency

import (
	"fmt"
	"slices"
	"strings"

	"github.com/myelin-chat/myelin/internal/serverpattern"
)

// RoomFacts is what a room is classified by.
type RoomFacts struct {
	Creator  string   // the creator's user ID
	RoomType string   // m.room.create's type ("" for none)
	Aliases  []string // the alias asked for at creation, or the canonical alias and alt_aliases
	// Choice is the zone the creator asked for at creation ("" for none);
	// only rooms created here have one.
	Choice string
}

// Classification is the zone a room is resident in and what decided it.
type Classification struct {
	Zone   string
	Rule   string // residency.rooms.rules[N], residency.rooms.default_zone, or a choice's rule
	Reason string
}

// ChoiceError is a creator's explicit choice of zone that the rules do not
// permit.
type ChoiceError struct {
	Choice  string
	Allowed []string
}

func (e *ChoiceError) Error() string {
	if len(e.Allowed) == 0 {
		return fmt.Sprintf("the data-localization policy does not let you choose zone %q for this room", e.Choice)
	}
	return fmt.Sprintf("the data-localization policy does not let you choose zone %q for this room; you may choose %s",
		e.Choice, strings.Join(e.Allowed, ", "))
}

// Classify gives the zone of a room: the first rule whose conditions all
// hold, else the default zone; an explicit choice replaces it when that
// zone is the rule's, one the matching rule's may_choose lists, or one
// residency.rooms.may_choose lists (a *ChoiceError otherwise).
func (r *Rules) Classify(f RoomFacts) (Classification, error) {
	c := Classification{Zone: r.rooms.DefaultZone, Rule: "residency.rooms.default_zone",
		Reason: "no rule of residency.rooms matches the room, so it is in the default zone " + r.rooms.DefaultZone}
	var matched *roomRule
	for i := range r.roomRules {
		if r.roomRules[i].matches(f) {
			matched = &r.roomRules[i]
			c = Classification{Zone: matched.Zone, Rule: fmt.Sprintf("residency.rooms.rules[%d]", matched.index),
				Reason: fmt.Sprintf("residency.rooms.rules[%d] matches the room (%s)", matched.index, matched.describe())}
			break
		}
	}
	if f.Choice == "" || f.Choice == c.Zone {
		return c, nil
	}
	allowed := []string{c.Zone}
	if matched != nil {
		allowed = append(allowed, matched.MayChoose...)
	}
	allowed = append(allowed, r.rooms.MayChoose...)
	slices.Sort(allowed)
	allowed = slices.Compact(allowed)
	if !slices.Contains(allowed, f.Choice) {
		return Classification{}, &ChoiceError{Choice: f.Choice, Allowed: allowed}
	}
	by := "residency.rooms.may_choose"
	if matched != nil && slices.Contains(matched.MayChoose, f.Choice) {
		by = fmt.Sprintf("residency.rooms.rules[%d].may_choose", matched.index)
	}
	return Classification{Zone: f.Choice, Rule: by,
		Reason: fmt.Sprintf("the creator chose zone %s, which %s permits", f.Choice, by)}, nil
}

func (rr *roomRule) matches(f RoomFacts) bool {
	if len(rr.Creators) > 0 && !globAny(rr.Creators, f.Creator) {
		return false
	}
	if len(rr.Aliases) > 0 {
		ok := false
		for _, a := range f.Aliases {
			if globAny(rr.Aliases, a) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	if len(rr.RoomTypes) > 0 && !slices.Contains(rr.RoomTypes, f.RoomType) {
		return false
	}
	return true
}

func (rr *roomRule) describe() string {
	var parts []string
	if len(rr.Creators) > 0 {
		parts = append(parts, "creator "+strings.Join(rr.Creators, " or "))
	}
	if len(rr.Aliases) > 0 {
		parts = append(parts, "alias "+strings.Join(rr.Aliases, " or "))
	}
	if len(rr.RoomTypes) > 0 {
		parts = append(parts, fmt.Sprintf("room type %q", rr.RoomTypes))
	}
	if len(parts) == 0 {
		return "every room"
	}
	return strings.Join(parts, ", ")
}

// globAny matches a Matrix ID against patterns, case-insensitively.
func globAny(patterns []string, s string) bool {
	s = strings.ToLower(s)
	for _, p := range patterns {
		if serverpattern.Glob(strings.ToLower(p), s) {
			return true
		}
	}
	return false
}
