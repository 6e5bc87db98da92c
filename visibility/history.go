// Package visibility holds the spec's room history visibility rules, which
// every API that serves room events to a client applies: /messages,
// /context, /event, relations, search, /sync, sliding sync and notifications.
package visibility

import (
	"slices"

	"github.com/myelin-chat/myelin/storage"
)

// Positioned is a membership or history_visibility value taking effect at a
// stream position (the position of the event that set it).
type Positioned = storage.PositionedValue

// History applies the spec's history visibility rules
// (client-server API, "Room History Visibility", server behaviour) for one
// user in one room. /messages, /context, /event, relations and /sync all
// decide with it, so every API shows a user the same events.
type History struct {
	// Memberships are the user's membership events in the room, ascending by position.
	Memberships []Positioned
	// Visibility are the room's m.room.history_visibility events (their
	// content.history_visibility), ascending by position.
	Visibility []Positioned
}

// before returns the last value set strictly before pos, and the value set
// by the event at pos itself (equal to the former when none is).
func before(list []Positioned, pos int64, dflt string) (prior, at string) {
	prior = dflt
	for _, p := range list {
		if p.Pos >= pos {
			if p.Pos == pos {
				return prior, p.Value
			}
			break
		}
		prior = p.Value
	}
	return prior, prior
}

func normalVisibility(v string) string {
	switch v {
	case "world_readable", "shared", "invited", "joined":
		return v
	}
	return "shared" // unset or not understood
}

// JoinedAt reports whether the user was joined when the event at pos was
// sent (or the event is their own join or leave after having joined): then
// the event is visible whatever the history visibility, so callers can skip
// loading Visibility.
func (h *History) JoinedAt(pos int64) bool {
	prior, at := before(h.Memberships, pos, "leave")
	return prior == "join" || at == "join"
}

// MembershipAt is the user's membership in the room at the event at stream
// position pos, the event's own effect included (MSC4115's
// unsigned.membership): "leave" before they were ever invited or joined.
// Stream order stands for the DAG's: a membership event of the user at a
// lower position is taken to precede the event.
func (h *History) MembershipAt(pos int64) string {
	_, at := before(h.Memberships, pos, "leave")
	return at
}

// CanSee reports whether the user may see the event at stream position pos.
// The rules apply to the state before the event; for the room's
// history_visibility events and the user's own membership events, the state
// after the event may allow it too (both are in the lists at pos).
func (h *History) CanSee(pos int64) bool {
	visPrior, visAt := before(h.Visibility, pos, h.defaultVisibility(pos))
	memPrior, memAt := before(h.Memberships, pos, "leave")
	if h.allowed(normalVisibility(visPrior), memPrior, pos) {
		return true
	}
	return (visAt != visPrior || memAt != memPrior) && h.allowed(normalVisibility(visAt), memAt, pos)
}

// defaultVisibility is the visibility before the room's first
// history_visibility event: unset, "shared". But backfilled history (negative
// positions, storage.InsertHistoricalEvents) may precede every
// history_visibility event we have only because the one that applied to it
// was stored earlier, in the state of a room joined over federation, at a
// position that does not reflect the DAG: there the earliest value we know
// applies, the conservative reading (never more visible than the room was
// when we joined it).
func (h *History) defaultVisibility(pos int64) string {
	if pos < 0 && len(h.Visibility) > 0 {
		return h.Visibility[0].Value
	}
	return "shared"
}

// maxVisibleRanges bounds VisibleRanges' answer (past it, ranges merge).
const maxVisibleRanges = 16

// VisibleRanges returns inclusive stream position ranges, ascending, that
// hold every position the user may see (CanSee): a reader can skip what lies
// outside them in SQL instead of reading and dropping hidden events. Past
// maxVisibleRanges, neighbouring ranges are merged, so the ranges may hold
// some hidden positions too: CanSee still decides each event. Empty when
// the user may see nothing.
func (h *History) VisibleRanges() [][2]int64 {
	const end = int64(1) << 62
	// CanSee only changes at the positions of the user's membership events
	// and of the room's history_visibility events: it is constant between them.
	cuts := []int64{0} // the default visibility changes at 0 (defaultVisibility)
	for _, list := range [][]Positioned{h.Memberships, h.Visibility} {
		for _, p := range list {
			cuts = append(cuts, p.Pos)
		}
	}
	slices.Sort(cuts)
	cuts = slices.Compact(cuts)
	var out [][2]int64
	add := func(lo, hi int64) {
		if lo > hi {
			return
		}
		if n := len(out); n > 0 && out[n-1][1]+1 >= lo {
			out[n-1][1] = max(out[n-1][1], hi)
			return
		}
		out = append(out, [2]int64{lo, hi})
	}
	prev := -end // the last cut handled; backfilled history has negative positions
	for _, c := range append(cuts, end) {
		if prev+1 <= c-1 && h.CanSee(prev+1) { // the positions strictly between
			add(prev+1, c-1)
		}
		if c != end && h.CanSee(c) {
			add(c, c)
		}
		prev = c
	}
	for len(out) > maxVisibleRanges {
		// Merge the two ranges with the smallest gap between them.
		best := 0
		for i := 1; i+1 < len(out); i++ {
			if out[i+1][0]-out[i][1] < out[best+1][0]-out[best][1] {
				best = i
			}
		}
		out[best][1] = out[best+1][1]
		out = slices.Delete(out, best+1, best+2)
	}
	return out
}

func (h *History) allowed(vis, membership string, pos int64) bool {
	switch {
	case vis == "world_readable", membership == "join":
		return true
	case vis == "shared":
		// The user joined at some point after the event was sent.
		for _, m := range h.Memberships {
			if m.Pos >= pos && m.Value == "join" {
				return true
			}
		}
	case vis == "invited":
		return membership == "invite"
	}
	return false
}
