package stateres

import (
	"bytes"
	"context"
	"crypto/sha1"
	"errors"
	"testing"

	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"
)

// TestV1BanEvasion: the spec notes that in the original algorithm the topic
// set by a concurrently banned user stays in the resolved state. The ban wins
// the membership conflict, and the topic, present in one state only, is not
// a conflict at all in v1.
func TestV1BanEvasion(t *testing.T) {
	r := newTestRoom(t, id.RoomV1)
	buildInitial(r)
	r.state("A", alice, typePL, "", map[string]any{"users": map[string]any{alice.String(): 100}, "state_default": 0}, "START")
	r.state("B", alice, typeMember, zara.String(), membership("ban"), "A")
	r.state("C", zara, typeTopic, "", map[string]any{"topic": "evading"}, "A")
	state := r.resolve("B", "C")
	r.assertWinner(state, memberKey(zara), "B")
	r.assertWinner(state, topicKey, "C")
}

// TestV1PowerLevelsStopAtFirstFailure: the power levels conflict adds the
// shallowest event, then deeper ones while they pass auth.
func TestV1PowerLevelsStopAtFirstFailure(t *testing.T) {
	r := newTestRoom(t, id.RoomV1)
	buildInitial(r)
	r.state("P0", alice, typePL, "", users(alice, 100, bob, 50), "START")
	// Shallow fork: Alice takes Bob's power away.
	r.state("PA", alice, typePL, "", users(alice, 100, bob, 0), "P0")
	// Deeper forks: Bob, still a moderator there, promotes Charlie; later
	// Alice changes the power levels again.
	r.message("M1", bob, "P0")
	r.message("M2", bob, "M1")
	r.state("PB", bob, typePL, "", users(alice, 100, bob, 50, charlie, 50), "M2")
	r.message("M3", bob, "M2")
	r.state("PC", alice, typePL, "", users(alice, 100, bob, 50, zara, 10), "M3")

	state := r.resolve("PA", "PB", "PC")
	// PA is shallowest and goes in first; PB then fails (Bob has no power
	// under PA), so Alice's PC, though it would pass, is never considered.
	r.assertWinner(state, plKey, "PA")
}

// TestV1OtherEventsDeepestAllowedWins: for events that do not affect
// authorisation, the deepest candidate that passes auth wins.
func TestV1OtherEventsDeepestAllowedWins(t *testing.T) {
	r := newTestRoom(t, id.RoomV1)
	buildInitial(r)
	r.state("P0", alice, typePL, "", users(alice, 100, bob, 50), "START")
	r.state("TA", alice, typeTopic, "", map[string]any{"topic": "alice"}, "P0")
	r.state("PA", alice, typePL, "", users(alice, 100, bob, 0), "TA")
	r.message("M1", bob, "P0")
	r.message("M2", bob, "M1")
	r.state("TB", bob, typeTopic, "", map[string]any{"topic": "bob"}, "M2")

	state := r.resolve("PA", "TB")
	r.assertWinner(state, plKey, "PA")
	// TB is deeper but Bob lost his power in PA.
	r.assertWinner(state, topicKey, "TA")
}

// TestV1DepthTieBrokenBySHA1: between equally deep candidates the one with
// the lowest sha1(event_id) wins.
func TestV1DepthTieBrokenBySHA1(t *testing.T) {
	r := newTestRoom(t, id.RoomV1)
	buildInitial(r)
	r.state("T_x", alice, typeTopic, "", map[string]any{"topic": "x"}, "START")
	r.state("T_y", alice, typeTopic, "", map[string]any{"topic": "y"}, "START")
	state := r.resolve("T_x", "T_y")
	want := "T_x"
	hx, hy := sha1.Sum([]byte(r.id("T_x"))), sha1.Sum([]byte(r.id("T_y")))
	if bytes.Compare(hy[:], hx[:]) < 0 {
		want = "T_y"
	}
	r.assertWinner(state, topicKey, want)
}

// TestV1MembersResolvedIndependently: several member conflicts resolve
// against the same state, whatever order the keys come in.
func TestV1MembersResolvedIndependently(t *testing.T) {
	r := newTestRoom(t, id.RoomV1)
	buildInitial(r)
	r.state("KICK_C", alice, typeMember, charlie.String(), membership("leave"), "START")
	r.state("LEAVE_Z", zara, typeMember, zara.String(), membership("leave"), "KICK_C")
	r.state("BAN_B", alice, typeMember, bob.String(), membership("ban"), "START")
	want := r.resolve("LEAVE_Z", "BAN_B")
	r.assertWinner(want, memberKey(charlie), "KICK_C")
	r.assertWinner(want, memberKey(zara), "LEAVE_Z")
	r.assertWinner(want, memberKey(bob), "BAN_B")
	for range 20 {
		r.assertState(r.resolve("BAN_B", "LEAVE_Z"), want)
	}
}

func TestV1NeedsInternalEventIDs(t *testing.T) {
	r := newTestRoom(t, id.RoomV1)
	buildInitial(r)
	r.state("T1", alice, typeTopic, "", nil, "START")
	r.state("T2", alice, typeTopic, "", nil, "START")
	pdu.UseInternalMetaForGetEventID = false // restored by the room's cleanup
	_, err := Resolve(context.Background(), id.RoomV1, []StateMap{r.stateAfter("T1"), r.stateAfter("T2")}, r)
	if !errors.Is(err, ErrNeedsInternalEventIDs) {
		t.Fatalf("got %v, want ErrNeedsInternalEventIDs", err)
	}
	// Without conflicts no auth check is needed, so no flag either.
	if _, err = Resolve(context.Background(), id.RoomV1, []StateMap{r.stateAfter("T1"), r.stateAfter("T1")}, r); err != nil {
		t.Fatal(err)
	}
}
