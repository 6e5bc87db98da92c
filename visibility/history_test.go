package visibility

import (
	"math/rand/v2"
	"testing"
)

func TestMembershipAt(t *testing.T) {
	h := History{Memberships: []Positioned{{Pos: 10, Value: "invite"}, {Pos: 20, Value: "join"}, {Pos: 30, Value: "ban"}, {Pos: 40, Value: "leave"}}}
	for _, tc := range []struct {
		pos  int64
		want string
	}{
		{1, "leave"}, {10, "invite"}, {15, "invite"}, {20, "join"}, {25, "join"}, {30, "ban"}, {35, "ban"}, {40, "leave"}, {99, "leave"},
	} {
		if got := h.MembershipAt(tc.pos); got != tc.want {
			t.Errorf("MembershipAt(%d) = %q, want %q", tc.pos, got, tc.want)
		}
	}
	if got := (&History{}).MembershipAt(5); got != "leave" {
		t.Errorf("never a member: %q, want leave", got)
	}
}

// TestVisibleRangesCoverCanSee: for random membership and visibility
// histories, every position CanSee allows is inside VisibleRanges; with few
// changes (no merging) the ranges hold exactly those positions.
func TestVisibleRangesCoverCanSee(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	memberships := []string{"join", "leave", "invite", "ban", "knock"}
	visibilities := []string{"joined", "shared", "invited", "world_readable"}
	for iter := 0; iter < 2000; iter++ {
		var h History
		pos := -int64(rng.IntN(30)) // backfilled history sits below 0
		changes := rng.IntN(40)
		for i := 0; i < changes; i++ {
			pos += 1 + rng.Int64N(5)
			if rng.IntN(3) == 0 {
				h.Visibility = append(h.Visibility, Positioned{Pos: pos, Value: visibilities[rng.IntN(len(visibilities))]})
			} else {
				h.Memberships = append(h.Memberships, Positioned{Pos: pos, Value: memberships[rng.IntN(len(memberships))]})
			}
		}
		ranges := h.VisibleRanges()
		in := func(p int64) bool {
			for _, r := range ranges {
				if r[0] <= p && p <= r[1] {
					return true
				}
			}
			return false
		}
		exact := len(ranges) < maxVisibleRanges
		for p := int64(-35); p <= pos+3; p++ {
			if h.CanSee(p) && !in(p) {
				t.Fatalf("history %+v: CanSee(%d) but not in ranges %v", h, p, ranges)
			}
			if exact && !h.CanSee(p) && in(p) {
				t.Fatalf("history %+v: %d hidden but in ranges %v", h, p, ranges)
			}
		}
		if h.CanSee(pos+1) != in(1<<61) {
			t.Fatalf("history %+v: the open end disagrees with CanSee: ranges %v", h, ranges)
		}
	}
}

// TestBackfilledHistoryDefault: before the room's first history_visibility
// event we know, backfilled history (negative positions) takes that event's
// value, not "shared": a room that was "joined" when we joined it does not
// show a later member what came before their join; local history from 0 on
// keeps the spec's default.
func TestBackfilledHistoryDefault(t *testing.T) {
	h := History{Memberships: []Positioned{{Pos: 20, Value: "join"}}, Visibility: []Positioned{{Pos: 5, Value: "joined"}}}
	if h.CanSee(-10) {
		t.Error("backfilled event before a joined room's visibility event is visible to a later joiner")
	}
	if !h.CanSee(3) {
		t.Error("local event before the first visibility event: shared, visible to a later joiner")
	}
	for _, r := range h.VisibleRanges() {
		if r[0] <= -10 && -10 <= r[1] {
			t.Errorf("ranges %v hold -10", h.VisibleRanges())
		}
	}
	shared := History{Memberships: []Positioned{{Pos: 20, Value: "join"}}, Visibility: []Positioned{{Pos: 5, Value: "shared"}}}
	if !shared.CanSee(-10) || len(shared.VisibleRanges()) == 0 || shared.VisibleRanges()[0][0] > -10 {
		t.Errorf("shared: backfilled history hidden: ranges %v", shared.VisibleRanges())
	}
}
