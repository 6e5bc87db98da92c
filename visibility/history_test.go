package roomserver

import "testing"

func TestMembershipAt(t *testing.T) {
	h := HistoryVisibility{Memberships: []Positioned{{Pos: 10, Value: "invite"}, {Pos: 20, Value: "join"}, {Pos: 30, Value: "ban"}, {Pos: 40, Value: "leave"}}}
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
	if got := (&HistoryVisibility{}).MembershipAt(5); got != "leave" {
		t.Errorf("never a member: %q, want leave", got)
	}
}
