package stateres

import (
	"testing"

	"maunium.net/go/mautrix/id"
)

var allResolutionVersions = []id.RoomVersion{id.RoomV1, id.RoomV2, id.RoomV6, id.RoomV11, id.RoomV12}

// buildTopicRace: after START, Alice sets the topic on two forks; T2 is
// sent later and, being equal otherwise, would win.
func buildTopicRace(t *testing.T, version id.RoomVersion) *testRoom {
	r := newTestRoom(t, version)
	if version.PrivilegedRoomCreators() {
		buildScenarioV12(r, scenario{})
	} else {
		buildInitial(r)
	}
	r.state("T1", alice, typeTopic, "", map[string]any{"topic": "one"}, "START")
	r.message("M", zara, "START")
	r.state("T2", alice, typeTopic, "", map[string]any{"topic": "two"}, "M")
	return r
}

// TestRejectedEventNeverWins: an event marked rejected (say, when it was
// received) loses a conflict it would otherwise win.
func TestRejectedEventNeverWins(t *testing.T) {
	for _, version := range allResolutionVersions {
		t.Run("v"+string(version), func(t *testing.T) {
			r := buildTopicRace(t, version)
			r.assertWinner(r.resolve("T1", "T2"), topicKey, "T2")

			r.events[r.id("T2")].InternalMeta.Rejected = true
			r.assertWinner(r.resolve("T1", "T2"), topicKey, "T1")
			r.assertWinner(r.resolve("T2", "T1"), topicKey, "T1")
		})
	}
}

// TestRejectedOnlyCandidateLeavesKeyEmpty: in v2 a key missing from one state
// set is conflicted, so a rejected event as the only candidate drops out.
func TestRejectedOnlyCandidateLeavesKeyEmpty(t *testing.T) {
	for _, version := range allResolutionVersions[1:] {
		t.Run("v"+string(version), func(t *testing.T) {
			r := buildTopicRace(t, version)
			r.events[r.id("T2")].InternalMeta.Rejected = true
			r.assertWinner(r.resolve("M", "T2"), topicKey, "")
		})
	}
}

// TestRejectedEventInStateIsNotAnAuthEvent: both state sets carry power
// levels that were rejected (they would strip Bob's power). Bob's topic is
// checked against its own, valid, power levels instead.
func TestRejectedEventInStateIsNotAnAuthEvent(t *testing.T) {
	r := newTestRoom(t, id.RoomV11)
	buildInitial(r)
	r.state("PGOOD", alice, typePL, "", users(alice, 100, bob, 50), "START")
	r.state("TB", bob, typeTopic, "", map[string]any{"topic": "bob"}, "PGOOD")
	r.state("PBAD", alice, typePL, "", users(alice, 100, bob, 0), "PGOOD")
	r.events[r.id("PBAD")].InternalMeta.Rejected = true

	withTopic := copyState(r.stateAfter("TB"))
	withTopic[plKey] = r.id("PBAD")
	without := r.stateAfter("PBAD")
	state := resolveSets(t, r, withTopic, without)
	r.assertWinner(state, topicKey, "TB")
	// Unconflicted entries are kept as they are, rejected or not.
	r.assertWinner(state, plKey, "PBAD")

	// Control: the same power levels, not rejected, do strip Bob's power.
	r.events[r.id("PBAD")].InternalMeta.Rejected = false
	r.assertWinner(resolveSets(t, r, withTopic, without), topicKey, "")
}

func resolveSets(t *testing.T, r *testRoom, sets ...StateMap) StateMap {
	t.Helper()
	state, err := Resolve(t.Context(), r.version, sets, r)
	if err != nil {
		t.Fatal(err)
	}
	return state
}
