package stateres

import (
	"context"
	"testing"

	"maunium.net/go/mautrix/id"
)

// v12Users builds power level content for room v12, where creators must not
// be listed.
func v12Users(levels ...any) map[string]any { return users(levels...) }

// TestV12CreatorsHaveInfinitePower: Charlie (power 100) bans Zara while
// Alice, the creator, concurrently demotes Charlie. Alice's power is
// infinite, so her power levels are applied first and the ban fails, even
// though the ban was sent earlier and a creator is not listed in "users".
func TestV12CreatorsHaveInfinitePower(t *testing.T) {
	r := newTestRoom(t, id.RoomV12)
	r.state("CREATE", alice, typeCreate, "", nil)
	r.state("IMA", alice, typeMember, alice.String(), join(), "CREATE")
	r.state("IPOWER", alice, typePL, "", v12Users(charlie, 100), "IMA")
	r.state("IJR", alice, typeJR, "", map[string]any{"join_rule": "public"}, "IPOWER")
	r.state("IMC", charlie, typeMember, charlie.String(), join(), "IJR")
	r.state("IMZ", zara, typeMember, zara.String(), join(), "IMC")
	r.state("BAN", charlie, typeMember, zara.String(), membership("ban"), "IMZ")
	r.state("DEMOTE", alice, typePL, "", v12Users(charlie, 0), "IMZ")

	state := r.resolve("BAN", "DEMOTE")
	r.assertWinner(state, plKey, "DEMOTE")
	r.assertWinner(state, memberKey(zara), "IMZ")
}

// TestV12AdditionalCreators: Bob is an additional creator and demotes
// Charlie while Charlie kicks Zara; Bob's infinite power orders his change
// first.
func TestV12AdditionalCreators(t *testing.T) {
	r := newTestRoom(t, id.RoomV12)
	r.state("CREATE", alice, typeCreate, "", map[string]any{"additional_creators": []string{bob.String()}})
	r.state("IMA", alice, typeMember, alice.String(), join(), "CREATE")
	r.state("IPOWER", alice, typePL, "", v12Users(charlie, 100), "IMA")
	r.state("IJR", alice, typeJR, "", map[string]any{"join_rule": "public"}, "IPOWER")
	r.state("IMB", bob, typeMember, bob.String(), join(), "IJR")
	r.state("IMC", charlie, typeMember, charlie.String(), join(), "IMB")
	r.state("IMZ", zara, typeMember, zara.String(), join(), "IMC")
	r.state("KICK", charlie, typeMember, zara.String(), membership("leave"), "IMZ")
	r.state("DEMOTE", bob, typePL, "", v12Users(charlie, 0), "IMZ")

	state := r.resolve("KICK", "DEMOTE")
	r.assertWinner(state, plKey, "DEMOTE")
	r.assertWinner(state, memberKey(zara), "IMZ")

	// The same room in which Bob is not a creator cannot even build DEMOTE.
	r2 := newTestRoom(t, id.RoomV12)
	r2.state("CREATE", alice, typeCreate, "", nil)
	r2.state("IMA", alice, typeMember, alice.String(), join(), "CREATE")
	r2.state("IPOWER", alice, typePL, "", v12Users(charlie, 100), "IMA")
	r2.state("IJR", alice, typeJR, "", map[string]any{"join_rule": "public"}, "IPOWER")
	r2.state("IMB", bob, typeMember, bob.String(), join(), "IJR")
	r2.add(eventSpec{name: "DEMOTE", sender: bob, typ: typePL, stateKey: sk(""), content: v12Users(charlie, 0), prevs: []string{"IMB"}})
	if !r2.rejected("DEMOTE") {
		t.Fatal("a non-creator without power could demote Charlie")
	}
}

// buildProblemA is MSC4297's problem A: Alice sets the join rules twice and
// leaves. One state set is correct; the other (as from a faulty /state
// response) carries the outdated join rules JR1. Both agree Alice has left.
func buildProblemA(t *testing.T, version id.RoomVersion) (*testRoom, StateMap, StateMap) {
	r := newTestRoom(t, version)
	r.state("CREATE", alice, typeCreate, "", nil)
	r.state("IMA", alice, typeMember, alice.String(), join(), "CREATE")
	if version.PrivilegedRoomCreators() {
		r.state("IPOWER", alice, typePL, "", v12Users(bob, 100), "IMA")
	} else {
		r.state("IPOWER", alice, typePL, "", users(alice, 100, bob, 100), "IMA")
	}
	r.state("JR1", alice, typeJR, "", map[string]any{"join_rule": "public"}, "IPOWER")
	r.state("IMB", bob, typeMember, bob.String(), join(), "JR1")
	r.state("JR2", alice, typeJR, "", map[string]any{"join_rule": "invite"}, "IMB")
	r.state("LEAVE", alice, typeMember, alice.String(), membership("leave"), "JR2")
	correct := r.stateAfter("LEAVE")
	outdated := copyState(correct)
	outdated[jrKey] = r.id("JR1")
	return r, correct, outdated
}

// TestV12StartsFromEmptyState: v2 replays the conflicting join rules on top
// of the unconflicted state, where Alice has left, so both fail and the room
// loses its join rules. v2.1 starts from nothing and authorises them by their
// own auth events.
func TestV12StartsFromEmptyState(t *testing.T) {
	ctx := context.Background()
	r, correct, outdated := buildProblemA(t, id.RoomV12)
	state, err := Resolve(ctx, id.RoomV12, []StateMap{correct, outdated}, r)
	if err != nil {
		t.Fatal(err)
	}
	r.assertWinner(state, jrKey, "JR2")
	r.assertWinner(state, memberKey(alice), "LEAVE")

	r11, correct11, outdated11 := buildProblemA(t, id.RoomV11)
	state, err = Resolve(ctx, id.RoomV11, []StateMap{correct11, outdated11}, r11)
	if err != nil {
		t.Fatal(err)
	}
	r11.assertWinner(state, jrKey, "") // the v2 state reset v2.1 fixes
}

// buildProblemB is MSC4297's problem B: Alice promotes Bob (P1), Bob promotes
// Charlie (P2); Zara's join cites P1, so both state sets' auth chains contain
// it. One state set carries the outdated power levels P0.
func buildProblemB(t *testing.T, version id.RoomVersion) (*testRoom, StateMap, StateMap) {
	r := newTestRoom(t, version)
	r.state("CREATE", alice, typeCreate, "", nil)
	r.state("IMA", alice, typeMember, alice.String(), join(), "CREATE")
	creator := []any{alice, 100}
	if version.PrivilegedRoomCreators() {
		creator = nil
	}
	r.state("P0", alice, typePL, "", users(creator...), "IMA")
	r.state("IJR", alice, typeJR, "", map[string]any{"join_rule": "public"}, "P0")
	r.state("IMB", bob, typeMember, bob.String(), join(), "IJR")
	r.state("IMC", charlie, typeMember, charlie.String(), join(), "IMB")
	r.state("P1", alice, typePL, "", users(append(creator, bob, 50)...), "IMC")
	r.state("IMZ", zara, typeMember, zara.String(), join(), "P1")
	r.state("P2", bob, typePL, "", users(append(creator, bob, 50, charlie, 50)...), "IMZ")
	correct := r.stateAfter("P2")
	outdated := copyState(correct)
	outdated[plKey] = r.id("P0")
	return r, correct, outdated
}

// TestV12ConflictedStateSubgraph: P1 is in every auth chain, so it is not in
// the auth difference; without it Bob's P2 fails and the power levels reset
// to P0. v2.1 replays the conflicted state subgraph P0 → P1 → P2.
func TestV12ConflictedStateSubgraph(t *testing.T) {
	ctx := context.Background()
	r, correct, outdated := buildProblemB(t, id.RoomV12)
	state, err := Resolve(ctx, id.RoomV12, []StateMap{correct, outdated}, r)
	if err != nil {
		t.Fatal(err)
	}
	r.assertWinner(state, plKey, "P2")

	// P1 is in both auth chains (Zara's join cites it), so the auth
	// difference is only the conflicted P2 (P0 is cited by P1): P1 only comes
	// in through the subgraph. (Bob's join IMB is state in both sets.)
	diff, err := AuthDifference(ctx, []StateMap{correct, outdated}, r)
	if err != nil {
		t.Fatal(err)
	}
	assertNames(t, r, "auth difference", diff, "P2")
	g := newEventGraph(r)
	sub, err := g.conflictedSubgraph(ctx, g.internAll([]id.EventID{r.id("P0"), r.id("P2")}))
	if err != nil {
		t.Fatal(err)
	}
	var subIDs []id.EventID
	for _, n := range sub {
		subIDs = append(subIDs, g.nodes[n].id)
	}
	// Every path P2 → … → P0: through P1, and through Bob's join, which cites
	// P0 directly and via the join rules.
	assertNames(t, r, "conflicted subgraph", subIDs, "P1", "IMB", "IJR")

	r11, correct11, outdated11 := buildProblemB(t, id.RoomV11)
	state, err = Resolve(ctx, id.RoomV11, []StateMap{correct11, outdated11}, r11)
	if err != nil {
		t.Fatal(err)
	}
	r11.assertWinner(state, plKey, "P0") // the v2 state reset v2.1 fixes
}

// TestV12ClassicScenarios runs the classic scenarios adapted to v12: Alice,
// the creator, cannot appear in power levels but outranks everyone.
func TestV12ClassicScenarios(t *testing.T) {
	for _, sc := range classicScenarios {
		t.Run(sc.name, func(t *testing.T) {
			r := newTestRoom(t, id.RoomV12)
			adapted := sc
			adapted.events = make([]scenarioEvent, len(sc.events))
			for i, e := range sc.events {
				if e.typ == typePL {
					e.content = withoutUser(e.content, alice)
				}
				adapted.events[i] = e
			}
			sets := buildScenarioV12(r, adapted)
			got, err := Resolve(context.Background(), id.RoomV12, sets, r)
			if err != nil {
				t.Fatal(err)
			}
			checkScenario(t, r, adapted, got)
		})
	}
}

func withoutUser(content map[string]any, user id.UserID) map[string]any {
	out := map[string]any{}
	for k, v := range content {
		if k == "users" {
			u := map[string]any{}
			for uid, level := range v.(map[string]any) {
				if uid != user.String() {
					u[uid] = level
				}
			}
			v = u
		}
		out[k] = v
	}
	return out
}

// buildScenarioV12 is buildScenario with an initial power levels event valid
// in v12.
func buildScenarioV12(r *testRoom, sc scenario) []StateMap {
	r.tb.Helper()
	r.state("CREATE", alice, typeCreate, "", nil)
	r.state("IMA", alice, typeMember, alice.String(), join(), "CREATE")
	r.state("IPOWER", alice, typePL, "", users(), "IMA")
	r.state("IJR", alice, typeJR, "", map[string]any{"join_rule": "public"}, "IPOWER")
	r.state("IMB", bob, typeMember, bob.String(), join(), "IJR")
	r.state("IMC", charlie, typeMember, charlie.String(), join(), "IMB")
	r.state("IMZ", zara, typeMember, zara.String(), join(), "IMC")
	r.message("START", zara, "IMZ")
	return buildScenarioEvents(r, sc)
}
