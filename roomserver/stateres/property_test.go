package stateres

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/tidwall/gjson"

	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"
)

var propertyUsers = []id.UserID{alice, bob, charlie, evelyn, zara}

// randomRoom grows a room with many short-lived forks: every event cites one
// or two recent events, and its sender and action (topic, power levels,
// kicks, bans, joins, leaves, invites, join rules) are random. Events the auth
// rules reject stay in the DAG without changing the state, as they would on a
// real server. Every merge is itself resolved with Resolve.
func randomRoom(t *testing.T, version id.RoomVersion, seed uint64, steps int) *testRoom {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, seed^0x5eed))
	r := newTestRoom(t, version)
	r.tsFromDepth = true
	creatorLevels := []any{alice, 100}
	if version.PrivilegedRoomCreators() {
		creatorLevels = nil
	}
	r.state("CREATE", alice, typeCreate, "", nil)
	r.state("IMA", alice, typeMember, alice.String(), join(), "CREATE")
	r.state("IPOWER", alice, typePL, "", users(append(creatorLevels, bob, 50, charlie, 50)...), "IMA")
	r.state("IJR", alice, typeJR, "", map[string]any{"join_rule": "public"}, "IPOWER")
	names := []string{"IJR"}
	for _, u := range propertyUsers[1:] {
		name := "J_" + u.Localpart()
		r.state(name, u, typeMember, u.String(), join(), names[len(names)-1])
		names = append(names, name)
	}
	for i := range steps {
		recent := names[max(0, len(names)-8):]
		prevs := []string{recent[rng.IntN(len(recent))]}
		if other := recent[rng.IntN(len(recent))]; other != prevs[0] && rng.IntN(2) == 0 {
			prevs = append(prevs, other)
		}
		prevIDs := make([]id.EventID, len(prevs))
		for j, p := range prevs {
			prevIDs[j] = r.id(p)
		}
		sender := propertyUsers[rng.IntN(len(propertyUsers))]
		target := propertyUsers[rng.IntN(len(propertyUsers))]
		name := fmt.Sprintf("E%03d", i)
		spec := eventSpec{name: name, sender: sender, prevs: prevs, stateKey: sk("")}
		switch rng.IntN(8) {
		case 0, 1:
			spec.typ, spec.content = typeTopic, map[string]any{"topic": name}
		case 2:
			spec.typ = typePL
			spec.content = mutatePowerLevels(r, r.stateBefore(prevIDs), version, target, []int{0, 25, 50, 75}[rng.IntN(4)])
		case 3:
			spec.typ, spec.stateKey = typeMember, sk(target.String())
			spec.content = membership([]string{"ban", "leave", "invite"}[rng.IntN(3)])
		case 4, 5:
			spec.typ, spec.stateKey, spec.content = typeMember, sk(sender.String()), join()
		case 6:
			spec.typ, spec.stateKey, spec.content = typeMember, sk(sender.String()), membership("leave")
		case 7:
			spec.typ, spec.content = typeJR, map[string]any{"join_rule": []string{"public", "invite"}[rng.IntN(2)]}
		}
		r.add(spec)
		names = append(names, name)
	}
	return r
}

// mutatePowerLevels copies the current power levels, setting one user's level.
func mutatePowerLevels(r *testRoom, state StateMap, version id.RoomVersion, user id.UserID, level int) map[string]any {
	u := map[string]any{}
	if plID, ok := state[plKey]; ok {
		gjson.GetBytes(r.events[plID].Content, "users").ForEach(func(k, v gjson.Result) bool {
			u[k.Str] = v.Int()
			return true
		})
	}
	if !(version.PrivilegedRoomCreators() && user == alice) {
		u[user.String()] = level
	}
	return map[string]any{"users": u}
}

var propertyVersions = []id.RoomVersion{id.RoomV1, id.RoomV2, id.RoomV6, id.RoomV11, id.RoomV12}

// TestResolveProperties checks, on random forked rooms, that resolution does
// not depend on the order (or repetition) of the state sets, returns a single
// or repeated state set unchanged, and never picks a rejected event for a
// conflicted key.
func TestResolveProperties(t *testing.T) {
	ctx := context.Background()
	for _, version := range propertyVersions {
		for seed := range uint64(4) {
			t.Run(fmt.Sprintf("v%s/seed%d", version, seed), func(t *testing.T) {
				r := randomRoom(t, version, seed, 60)
				rng := rand.New(rand.NewPCG(seed, 42))
				var all []id.EventID
				for evtID := range r.after {
					all = append(all, evtID)
				}
				slices.Sort(all)
				rejected := 0
				for _, evt := range r.events {
					if evt.InternalMeta.Rejected {
						rejected++
					}
				}
				t.Logf("%d events, %d rejected", len(r.events), rejected)

				for trial := range 25 {
					n := 2 + rng.IntN(3)
					sets := make([]StateMap, n)
					for i := range sets {
						sets[i] = r.after[all[len(all)/3+rng.IntN(len(all)-len(all)/3)]]
					}
					want, err := Resolve(ctx, version, sets, r)
					if err != nil {
						t.Fatal(err)
					}
					for range 8 {
						shuffled := slices.Clone(sets)
						rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
						if rng.IntN(3) == 0 {
							shuffled = append(shuffled, shuffled[rng.IntN(len(shuffled))])
						}
						got, err := Resolve(ctx, version, shuffled, r)
						if err != nil {
							t.Fatal(err)
						}
						if !maps.Equal(got, want) {
							t.Fatalf("trial %d: result depends on the order of the state sets:\n got %s\nwant %s", trial, r.describe(got), r.describe(want))
						}
					}
					checkNoRejectedWinner(t, r, version, sets, want)
				}

				for _, evtID := range all[len(all)-10:] {
					s := r.after[evtID]
					for _, sets := range [][]StateMap{{s}, {s, s}, {s, s, s}} {
						got, err := Resolve(ctx, version, sets, r)
						if err != nil {
							t.Fatal(err)
						}
						if !maps.Equal(got, s) {
							t.Fatalf("resolving %d copies of a state changed it:\n got %s\nwant %s", len(sets), r.describe(got), r.describe(s))
						}
					}
				}
			})
		}
	}
}

// checkNoRejectedWinner fails if a conflicted key resolved to a rejected
// event.
func checkNoRejectedWinner(t *testing.T, r *testRoom, version id.RoomVersion, sets []StateMap, resolved StateMap) {
	t.Helper()
	var conflicted map[pdu.StateKey][]id.EventID
	if version.StateResVersion() == id.StateResV1 {
		_, conflicted = separateV1(sets)
	} else {
		_, conflicted = Separate(sets)
	}
	for key := range conflicted {
		if evtID, ok := resolved[key]; ok && r.events[evtID].InternalMeta.Rejected {
			t.Fatalf("rejected event %s won %s/%s", r.name(evtID), key.Type, key.StateKey)
		}
	}
}

// TestRejectedStateSetsProperty marks random events rejected after the room
// is built (as if the server had rejected them on receipt) and checks that
// none of them wins a conflict.
func TestRejectedStateSetsProperty(t *testing.T) {
	ctx := context.Background()
	for _, version := range propertyVersions {
		t.Run("v"+string(version), func(t *testing.T) {
			r := randomRoom(t, version, 7, 50)
			rng := rand.New(rand.NewPCG(7, 7))
			var candidates []id.EventID
			for evtID, evt := range r.events {
				if evt.StateKey != nil && r.name(evtID)[0] == 'E' {
					candidates = append(candidates, evtID)
				}
			}
			slices.Sort(candidates)
			for _, evtID := range candidates {
				if rng.IntN(3) == 0 {
					r.events[evtID].InternalMeta.Rejected = true
				}
			}
			var all []id.EventID
			for evtID := range r.after {
				all = append(all, evtID)
			}
			slices.Sort(all)
			for range 40 {
				sets := []StateMap{r.after[all[rng.IntN(len(all))]], r.after[all[rng.IntN(len(all))]], r.after[all[rng.IntN(len(all))]]}
				got, err := Resolve(ctx, version, sets, r)
				if err != nil {
					t.Fatal(err)
				}
				checkNoRejectedWinner(t, r, version, sets, got)
			}
		})
	}
}
