package stateres

import (
	"context"
	"errors"
	"testing"

	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"
)

// TestAuthDifferenceIncludesTheStateEvents: for A ← B ← C (each citing the
// previous as auth event) and the state sets {A, B} and {C}, the full auth
// chains are {A, B} and {C, B, A}, so the auth difference is {C}. Like
// Synapse, the full auth chain of a state set contains its own events (read
// literally the spec would give {A} and {B, A}, and so {B}).
func TestAuthDifferenceIncludesTheStateEvents(t *testing.T) {
	r := newTestRoom(t, id.RoomV11)
	buildInitial(r)
	r.add(eventSpec{name: "A", sender: alice, typ: "a", stateKey: sk(""), prevs: []string{"START"}, authOverride: []string{}})
	r.add(eventSpec{name: "B", sender: alice, typ: "b", stateKey: sk(""), prevs: []string{"A"}, authOverride: []string{"A"}})
	r.add(eventSpec{name: "C", sender: alice, typ: "c", stateKey: sk(""), prevs: []string{"B"}, authOverride: []string{"B"}})
	sets := []StateMap{
		{{Type: "a"}: r.id("A"), {Type: "b"}: r.id("B")},
		{{Type: "c"}: r.id("C")},
	}
	diff, err := AuthDifference(context.Background(), sets, r)
	if err != nil {
		t.Fatal(err)
	}
	assertNames(t, r, "auth difference", diff, "C")
}

// TestAuthDifferenceOfForks: the auth difference holds what one fork's auth
// chains have and the other's lack, whatever is shared stays out.
func TestAuthDifferenceOfForks(t *testing.T) {
	r := newTestRoom(t, id.RoomV11)
	buildInitial(r)
	r.state("PA", alice, typePL, "", users(alice, 100, bob, 50), "START")
	r.state("TB", bob, typeTopic, "", nil, "PA") // cites PA and Bob's join
	r.state("TA", alice, typeTopic, "", nil, "START")
	diff, err := AuthDifference(context.Background(), []StateMap{r.stateAfter("TB"), r.stateAfter("TA")}, r)
	if err != nil {
		t.Fatal(err)
	}
	// The conflicted events: only TB's fork has PA (and TB), only the other
	// has TA. Bob's join IMB, cited by PA on one side only, is state in both
	// sets and so in both full auth chains.
	assertNames(t, r, "auth difference", diff, "PA", "TA", "TB")
}

type failingProvider struct{ err error }

func (p failingProvider) Events(context.Context, []id.EventID) (map[id.EventID]*pdu.PDU, error) {
	return nil, p.err
}

func TestProviderErrorsAreReturned(t *testing.T) {
	r := newTestRoom(t, id.RoomV11)
	buildInitial(r)
	r.state("T1", alice, typeTopic, "", nil, "START")
	r.state("T2", alice, typeTopic, "", nil, "START")
	dbErr := errors.New("database on fire")
	for _, version := range []id.RoomVersion{id.RoomV11, id.RoomV12} {
		_, err := Resolve(context.Background(), version, []StateMap{r.stateAfter("T1"), r.stateAfter("T2")}, failingProvider{dbErr})
		if !errors.Is(err, dbErr) {
			t.Errorf("v%s: got %v, want the provider's error", version, err)
		}
	}
}

// TestUnknownEventsTakeNoPart: an event the provider does not know cannot be
// authorised, so it cannot win a conflict; unconflicted entries are kept.
func TestUnknownEventsTakeNoPart(t *testing.T) {
	for _, version := range []id.RoomVersion{id.RoomV1, id.RoomV11, id.RoomV12} {
		t.Run("v"+string(version), func(t *testing.T) {
			r := buildTopicRace(t, version)
			ghost := id.EventID("$ghost")
			withGhost := copyState(r.stateAfter("T2"))
			withGhost[topicKey] = ghost
			withGhost[pdu.StateKey{Type: "m.room.name"}] = ghost
			other := copyState(r.stateAfter("T1"))
			other[pdu.StateKey{Type: "m.room.name"}] = ghost
			state := resolveSets(t, r, other, withGhost)
			r.assertWinner(state, topicKey, "T1")
			if state[pdu.StateKey{Type: "m.room.name"}] != ghost {
				t.Error("unconflicted unknown event was dropped")
			}
		})
	}
}

func TestResolveEdgeCases(t *testing.T) {
	ctx := context.Background()
	got, err := Resolve(ctx, id.RoomV11, nil, failingProvider{})
	if err != nil || len(got) != 0 {
		t.Errorf("no state sets: got %v, %v", got, err)
	}
	if _, err = Resolve(ctx, "9000", []StateMap{{}, {}}, failingProvider{}); !errors.Is(err, id.ErrUnknownRoomVersion) {
		t.Errorf("unknown room version: got %v", err)
	}
	one := StateMap{topicKey: "$t"}
	got, err = Resolve(ctx, id.RoomV11, []StateMap{one}, failingProvider{})
	if err != nil || len(got) != 1 || got[topicKey] != "$t" {
		t.Errorf("single state set: got %v, %v", got, err)
	}
	got[topicKey] = "$changed"
	if one[topicKey] != "$t" {
		t.Error("the result aliases the input")
	}
}

func TestSeparate(t *testing.T) {
	a := StateMap{topicKey: "$t1", plKey: "$p", jrKey: "$j"}
	b := StateMap{topicKey: "$t2", plKey: "$p"}
	c := StateMap{topicKey: "$t1", plKey: "$p", jrKey: "$j"}
	unconflicted, conflicted := Separate([]StateMap{a, b, c})
	if len(unconflicted) != 1 || unconflicted[plKey] != "$p" {
		t.Errorf("unconflicted: got %v", unconflicted)
	}
	if got := conflicted[topicKey]; len(got) != 2 || got[0] != "$t1" || got[1] != "$t2" {
		t.Errorf("conflicted topic: got %v", got)
	}
	// A key missing from one set is conflicted in v2, not in v1.
	if got := conflicted[jrKey]; len(got) != 1 || got[0] != "$j" {
		t.Errorf("conflicted join rules: got %v", got)
	}
	unconflictedV1, _ := separateV1([]StateMap{a, b, c})
	if unconflictedV1[jrKey] != "$j" {
		t.Errorf("v1 unconflicted: got %v", unconflictedV1)
	}
}
