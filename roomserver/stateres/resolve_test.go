package stateres

import (
	"context"
	"testing"

	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"
)

// v2Versions are the room versions using state resolution v2. "2" keeps the
// v1 event format (custom event IDs); the others use reference hashes.
var v2Versions = []id.RoomVersion{id.RoomV2, id.RoomV3, id.RoomV6, id.RoomV10, id.RoomV11}

// buildInitial creates the room every scenario starts from: Alice creates a
// public room with power levels {alice: 100}; Bob, Charlie and Zara join;
// START is a message after that.
func buildInitial(r *testRoom) {
	r.tb.Helper()
	r.state("CREATE", alice, typeCreate, "", nil)
	r.state("IMA", alice, typeMember, alice.String(), join(), "CREATE")
	r.state("IPOWER", alice, typePL, "", map[string]any{"users": map[string]any{alice.String(): 100}}, "IMA")
	r.state("IJR", alice, typeJR, "", map[string]any{"join_rule": "public"}, "IPOWER")
	r.state("IMB", bob, typeMember, bob.String(), join(), "IJR")
	r.state("IMC", charlie, typeMember, charlie.String(), join(), "IMB")
	r.state("IMZ", zara, typeMember, zara.String(), join(), "IMC")
	r.message("START", zara, "IMZ")
}

type scenarioEvent struct {
	name     string
	sender   id.UserID
	typ      string
	stateKey *string
	content  map[string]any
}

// scenario is a DAG in the style of Synapse's state resolution tests: edges
// are chains from newer to older events, and END stands for an event whose
// prev events are resolved. want lists the events expected in the state at
// END, besides the keys unchanged since START.
type scenario struct {
	name   string
	events []scenarioEvent
	edges  [][]string
	want   []string
}

func stateEvt(name string, sender id.UserID, typ, stateKey string, content map[string]any) scenarioEvent {
	return scenarioEvent{name: name, sender: sender, typ: typ, stateKey: sk(stateKey), content: content}
}

func users(levels ...any) map[string]any {
	u := map[string]any{}
	for i := 0; i < len(levels); i += 2 {
		u[levels[i].(id.UserID).String()] = levels[i+1]
	}
	return map[string]any{"users": u}
}

// classicScenarios are the scenarios of the Synapse and Dendrite state
// resolution v2 test suites.
var classicScenarios = []scenario{{
	// Alice bans Bob while Bob, concurrently, resends power levels.
	name: "ban vs power levels",
	events: []scenarioEvent{
		stateEvt("PA", alice, typePL, "", users(alice, 100, bob, 50)),
		stateEvt("MA", alice, typeMember, alice.String(), join()),
		stateEvt("MB", alice, typeMember, bob.String(), membership("ban")),
		stateEvt("PB", bob, typePL, "", users(alice, 100, bob, 50)),
	},
	edges: [][]string{{"END", "MB", "MA", "PA", "START"}, {"END", "PB", "PA"}},
	want:  []string{"PA", "MA", "MB"},
}, {
	// Evelyn joins while Alice concurrently makes the room private.
	name: "join rule evasion",
	events: []scenarioEvent{
		stateEvt("JR", alice, typeJR, "", map[string]any{"join_rule": "private"}),
		stateEvt("ME", evelyn, typeMember, evelyn.String(), join()),
	},
	edges: [][]string{{"END", "JR", "START"}, {"END", "ME", "START"}},
	want:  []string{"JR"},
}, {
	// Charlie's power levels come from Bob, whose own power comes from PA;
	// the other fork only has PA.
	name: "offtopic power levels",
	events: []scenarioEvent{
		stateEvt("PA", alice, typePL, "", users(alice, 100, bob, 50)),
		stateEvt("PB", bob, typePL, "", users(alice, 100, bob, 50, charlie, 50)),
		stateEvt("PC", charlie, typePL, "", users(alice, 100, bob, 50, charlie, 0)),
	},
	edges: [][]string{{"END", "PC", "PB", "PA", "START"}, {"END", "PA"}},
	want:  []string{"PC"},
}, {
	// Bob sets the topic after being given power in PA1, while Alice
	// concurrently demotes him in PA2: his power level change and topic lose.
	name: "topic by concurrently demoted user",
	events: []scenarioEvent{
		stateEvt("T1", alice, typeTopic, "", nil),
		stateEvt("PA1", alice, typePL, "", users(alice, 100, bob, 50)),
		stateEvt("T2", alice, typeTopic, "", nil),
		stateEvt("PA2", alice, typePL, "", users(alice, 100, bob, 0)),
		stateEvt("PB", bob, typePL, "", users(alice, 100, bob, 50)),
		stateEvt("T3", bob, typeTopic, "", nil),
	},
	edges: [][]string{{"END", "PA2", "T2", "PA1", "T1", "START"}, {"END", "T3", "PB", "PA1"}},
	want:  []string{"PA2", "T2"},
}, {
	// Bob's topic T2 must not survive his ban, even though the other fork
	// still has the older topic T1: the topic resets to T1.
	name: "topic reset",
	events: []scenarioEvent{
		stateEvt("T1", alice, typeTopic, "", nil),
		stateEvt("PA", alice, typePL, "", users(alice, 100, bob, 50)),
		stateEvt("T2", bob, typeTopic, "", nil),
		stateEvt("MB", alice, typeMember, bob.String(), membership("ban")),
	},
	edges: [][]string{{"END", "MB", "T2", "PA", "T1", "START"}, {"END", "T1"}},
	want:  []string{"T1", "MB", "PA"},
}, {
	// Both forks merge at MZ1; Alice's later topic T4 wins.
	name: "topic after merge",
	events: []scenarioEvent{
		stateEvt("T1", alice, typeTopic, "", nil),
		stateEvt("PA1", alice, typePL, "", users(alice, 100, bob, 50)),
		stateEvt("T2", alice, typeTopic, "", nil),
		stateEvt("PA2", alice, typePL, "", users(alice, 100, bob, 0)),
		stateEvt("PB", bob, typePL, "", users(alice, 100, bob, 50)),
		stateEvt("T3", bob, typeTopic, "", nil),
		{name: "MZ1", sender: zara, typ: typeMsg},
		stateEvt("T4", alice, typeTopic, "", nil),
	},
	edges: [][]string{{"END", "T4", "MZ1", "PA2", "T2", "PA1", "T1", "START"}, {"END", "MZ1", "T3", "PB", "PA1"}},
	want:  []string{"T4", "PA2"},
}, {
	// T3 is based on the newer power levels PA2, T4 on the older PA1 (via
	// PB, which loses), so T3 wins although T4 was sent later.
	name: "mainline ordering",
	events: []scenarioEvent{
		stateEvt("T1", alice, typeTopic, "", nil),
		stateEvt("PA1", alice, typePL, "", users(alice, 100, bob, 50)),
		stateEvt("T2", alice, typeTopic, "", nil),
		stateEvt("PA2", alice, typePL, "", map[string]any{
			"users":  map[string]any{alice.String(): 100, bob.String(): 50},
			"events": map[string]any{typePL: 100},
		}),
		stateEvt("PB", bob, typePL, "", users(alice, 100, bob, 50)),
		stateEvt("T3", bob, typeTopic, "", nil),
		stateEvt("T4", alice, typeTopic, "", nil),
	},
	edges: [][]string{{"END", "T3", "PA2", "T2", "PA1", "T1", "START"}, {"END", "T4", "PB", "PA1"}},
	want:  []string{"T3", "PA2"},
}}

// buildScenario builds the initial room plus the scenario's events and
// returns the state sets to resolve at END.
func buildScenario(r *testRoom, sc scenario) []StateMap {
	r.tb.Helper()
	buildInitial(r)
	return buildScenarioEvents(r, sc)
}

// buildScenarioEvents adds a scenario's events to a room that already has
// its initial events.
func buildScenarioEvents(r *testRoom, sc scenario) []StateMap {
	r.tb.Helper()
	prevs := map[string][]string{}
	for _, chain := range sc.edges {
		for i := 0; i+1 < len(chain); i++ {
			prevs[chain[i]] = append(prevs[chain[i]], chain[i+1])
		}
	}
	for _, e := range sc.events {
		r.add(eventSpec{name: e.name, sender: e.sender, typ: e.typ, stateKey: e.stateKey, content: e.content, prevs: prevs[e.name]})
		if r.rejected(e.name) {
			r.tb.Fatalf("scenario event %s was rejected when built", e.name)
		}
	}
	var sets []StateMap
	for _, p := range prevs["END"] {
		sets = append(sets, r.stateAfter(p))
	}
	return sets
}

func checkScenario(t *testing.T, r *testRoom, sc scenario, got StateMap) {
	t.Helper()
	want := copyState(r.stateAfter("START"))
	for _, name := range sc.want {
		evt := r.events[r.id(name)]
		want[pdu.StateKey{Type: evt.Type, StateKey: *evt.StateKey}] = r.id(name)
	}
	r.assertState(got, want)
}

func TestClassicScenarios(t *testing.T) {
	for _, version := range v2Versions {
		for _, sc := range classicScenarios {
			t.Run("v"+string(version)+"/"+sc.name, func(t *testing.T) {
				r := newTestRoom(t, version)
				sets := buildScenario(r, sc)
				got, err := Resolve(context.Background(), version, sets, r)
				if err != nil {
					t.Fatal(err)
				}
				checkScenario(t, r, sc, got)
			})
		}
	}
}

// TestSpecBanEvasionExample is the soft-failure example of the
// server-server spec: B bans X while X sets the topic in C. State resolution
// v2 prioritises the ban, so C is not in the resolved state.
func TestSpecBanEvasionExample(t *testing.T) {
	for _, version := range v2Versions {
		t.Run("v"+string(version), func(t *testing.T) {
			r := newTestRoom(t, version)
			buildInitial(r)
			// Give everyone enough power to set the topic.
			r.state("A", alice, typePL, "", map[string]any{"users": map[string]any{alice.String(): 100}, "state_default": 0}, "START")
			r.state("B", alice, typeMember, zara.String(), membership("ban"), "A")
			r.state("C", zara, typeTopic, "", map[string]any{"topic": "evading"}, "A")
			state := r.resolve("B", "C")
			r.assertWinner(state, memberKey(zara), "B")
			r.assertWinner(state, topicKey, "")
		})
	}
}

// TestSpecNameExample is the example of the server-server spec's state
// resolution section: two branches set the room name; both are authorised,
// and the one based on the same power levels sent earlier wins per mainline
// ordering (origin_server_ts breaks the tie).
func TestSpecNameExample(t *testing.T) {
	for _, version := range v2Versions {
		t.Run("v"+string(version), func(t *testing.T) {
			r := newTestRoom(t, version)
			buildInitial(r)
			nameKey := pdu.StateKey{Type: "m.room.name"}
			r.state("E1", alice, "m.room.name", "", map[string]any{"name": "one"}, "START")
			r.message("E2", bob, "E1")
			r.state("E3", alice, "m.room.name", "", map[string]any{"name": "three"}, "E2")
			r.state("E4", alice, "m.room.name", "", map[string]any{"name": "four"}, "E1")
			state := r.resolve("E3", "E4")
			// Both are in mainline position of IPOWER; E4 was sent later, and
			// later events are applied later, so E4 wins.
			r.assertWinner(state, nameKey, "E4")
		})
	}
}

// TestTieBreaksByEventID: concurrent events with equal power and
// origin_server_ts are ordered by event ID, so the larger ID is applied last
// and wins; this holds for both the power ordering and the mainline ordering.
func TestTieBreaksByEventID(t *testing.T) {
	for _, version := range v2Versions {
		t.Run("v"+string(version), func(t *testing.T) {
			r := newTestRoom(t, version)
			r.tsFromDepth = true
			buildInitial(r)
			r.state("TX", alice, typeTopic, "", map[string]any{"topic": "x"}, "START")
			r.state("TY", alice, typeTopic, "", map[string]any{"topic": "y"}, "START")
			r.state("PX", alice, typePL, "", users(alice, 100, bob, 10), "START")
			r.state("PY", alice, typePL, "", users(alice, 100, bob, 20), "START")
			last := func(a, b string) string {
				if r.id(a) > r.id(b) {
					return a
				}
				return b
			}
			r.assertWinner(r.resolve("TX", "TY"), topicKey, last("TX", "TY"))
			r.assertWinner(r.resolve("TY", "TX"), topicKey, last("TX", "TY"))
			r.assertWinner(r.resolve("PX", "PY"), plKey, last("PX", "PY"))
			r.assertWinner(r.resolve("PY", "PX"), plKey, last("PX", "PY"))
		})
	}
}

// TestPowerSortFollowsAuthEdges: in the reverse topological power ordering,
// an event comes after its auth ancestors even when its own key (sender
// power, origin_server_ts, event ID) would put it first. Here one fork
// changes the power levels twice, P2 citing P1 as its power levels auth
// event; the other fork does not touch them. P2 must be applied after P1 and
// win; ordering by the keys alone applies P1 last and picks it.
func TestPowerSortFollowsAuthEdges(t *testing.T) {
	cases := []struct {
		name string
		// build adds P1 and then P2 on top of START and returns the name of
		// the other fork's head.
		build func(r *testRoom) string
	}{{
		// Both by Alice; P2's clock is behind, so its timestamp is older.
		name: "older timestamp",
		build: func(r *testRoom) string {
			r.state("P1", alice, typePL, "", users(alice, 100, bob, 10), "START")
			r.ts -= 1000
			r.state("P2", alice, typePL, "", users(alice, 100, bob, 20), "P1")
			r.ts += 2000
			return r.name(r.message("OTHER", zara, "START"))
		},
	}, {
		// P1 by Bob (power 50), P2 by the more powerful Alice.
		name: "more powerful sender",
		build: func(r *testRoom) string {
			r.state("PA", alice, typePL, "", users(alice, 100, bob, 50), "START")
			r.state("P1", bob, typePL, "", users(alice, 100, bob, 50, charlie, 10), "PA")
			r.state("P2", alice, typePL, "", users(alice, 100, bob, 50, charlie, 20), "P1")
			return r.name(r.message("OTHER", zara, "PA"))
		},
	}}
	for _, version := range v2Versions {
		for _, tc := range cases {
			t.Run("v"+string(version)+"/"+tc.name, func(t *testing.T) {
				r := newTestRoom(t, version)
				buildInitial(r)
				other := tc.build(r)
				r.assertWinner(r.resolve("P2", other), plKey, "P2")
				r.assertWinner(r.resolve(other, "P2"), plKey, "P2")
			})
		}
	}
}
