package stateres

import (
	"context"
	"fmt"
	"testing"

	"maunium.net/go/mautrix/id"
)

func member(i int) id.UserID { return id.UserID(fmt.Sprintf("@u%05d:example.org", i)) }

// buildTwoForks builds a public room with n members (plus Alice, the
// creator, and Evelyn, a moderator) and two concurrent forks:
//
//   - A: Alice demotes Evelyn, bans u00005, sets the topic; extra members join.
//   - B: Evelyn sets the topic, bans u00007, promotes u00009; others join.
//
// It returns the state after each fork.
func buildTwoForks(tb testing.TB, version id.RoomVersion, n, extraJoins int) (*testRoom, StateMap, StateMap) {
	tb.Helper()
	r := newTestRoom(tb, version)
	admin := []any{alice, 100}
	if version.PrivilegedRoomCreators() {
		admin = nil
	}
	r.state("CREATE", alice, typeCreate, "", nil)
	r.state("IMA", alice, typeMember, alice.String(), join(), "CREATE")
	r.state("IPOWER", alice, typePL, "", users(append(admin, evelyn, 50)...), "IMA")
	r.state("IJR", alice, typeJR, "", map[string]any{"join_rule": "public"}, "IPOWER")
	r.state("IME", evelyn, typeMember, evelyn.String(), join(), "IJR")
	members := make([]id.UserID, n)
	for i := range members {
		members[i] = member(i)
	}
	last := r.joinChain("IME", members)
	r.message("START", alice, last)

	r.state("A1", alice, typePL, "", users(admin...), "START")
	r.state("A2", alice, typeMember, member(5).String(), membership("ban"), "A1")
	r.state("A3", alice, typeTopic, "", map[string]any{"topic": "fork A"}, "A2")
	joinsA := make([]id.UserID, extraJoins)
	joinsB := make([]id.UserID, extraJoins)
	for i := range extraJoins {
		joinsA[i], joinsB[i] = member(n+i), member(n+extraJoins+i)
	}
	endA := r.joinChain("A3", joinsA)

	r.state("B1", evelyn, typeTopic, "", map[string]any{"topic": "fork B"}, "START")
	r.state("B2", evelyn, typeMember, member(7).String(), membership("ban"), "B1")
	r.state("B3", evelyn, typePL, "", users(append(admin, evelyn, 50, member(9), 50)...), "B2")
	endB := r.joinChain("B3", joinsB)
	return r, r.stateAfter(endA), r.stateAfter(endB)
}

// checkTwoForks: Alice's demotion of Evelyn is ordered before Evelyn's ban
// and power levels, which then fail; Alice's topic wins the mainline; the
// members who joined on either fork stay. Besides the members there are the
// create, power levels, join rules and topic events.
func checkTwoForks(tb testing.TB, r *testRoom, state StateMap, n, extraJoins int) {
	tb.Helper()
	r.assertWinner(state, plKey, "A1")
	r.assertWinner(state, topicKey, "A3")
	r.assertWinner(state, memberKey(member(5)), "A2")
	r.assertWinner(state, memberKey(member(7)), "J_"+member(7).Localpart())
	for i := n; i < n+2*extraJoins; i++ {
		r.assertWinner(state, memberKey(member(i)), "J_"+member(i).Localpart())
	}
	if want := n + 2*extraJoins + 6; len(state) != want {
		tb.Errorf("resolved state has %d entries, want %d", len(state), want)
	}
}

func TestTwoForksLargeRoom(t *testing.T) {
	const n, extra = 2000, 20
	for _, version := range []id.RoomVersion{id.RoomV11, id.RoomV12} {
		t.Run("v"+string(version), func(t *testing.T) {
			r, a, b := buildTwoForks(t, version, n, extra)
			r.calls = 0
			state, err := Resolve(context.Background(), version, []StateMap{a, b}, r)
			if err != nil {
				t.Fatal(err)
			}
			checkTwoForks(t, r, state, n, extra)
			// The provider is a database: the auth chain walks must fetch a
			// level at a time, not an event at a time.
			if r.calls > 20 {
				t.Errorf("%d provider calls, want at most 20", r.calls)
			}
			t.Logf("%d provider calls", r.calls)
		})
	}
}

// BenchmarkResolveTwoForks10kMembers resolves two forks of a room with
// 10,000 members, each with a few conflicting power level, ban and topic
// changes and 20 members joining on either side.
func BenchmarkResolveTwoForks10kMembers(b *testing.B) {
	const n, extra = 10_000, 20
	for _, version := range []id.RoomVersion{id.RoomV11, id.RoomV12} {
		b.Run("v"+string(version), func(b *testing.B) {
			r, forkA, forkB := buildTwoForks(b, version, n, extra)
			sets := []StateMap{forkA, forkB}
			want, err := Resolve(context.Background(), version, sets, r)
			if err != nil {
				b.Fatal(err)
			}
			checkTwoForks(b, r, want, n, extra)
			b.ReportAllocs()
			for b.Loop() {
				got, err := Resolve(context.Background(), version, sets, r)
				if err != nil {
					b.Fatal(err)
				}
				if len(got) != len(want) {
					b.Fatal("result changed between runs")
				}
			}
		})
	}
}
