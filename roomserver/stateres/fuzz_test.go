package stateres

import (
	"context"
	"fmt"
	"maps"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/internal/metrics"
	"github.com/myelin-chat/myelin/internal/recovery"
)

var fuzzVersions = []id.RoomVersion{id.RoomV1, id.RoomV2, id.RoomV9, id.RoomV10, id.RoomV11, id.RoomV12}

// fuzzBytes reads a fuzz input one small choice at a time; exhausted, it
// answers 0.
type fuzzBytes []byte

func (b *fuzzBytes) next(n int) int {
	if len(*b) == 0 {
		return 0
	}
	v := int((*b)[0]) % n
	*b = (*b)[1:]
	return v
}

// fuzzPowerLevels copies the current power levels and changes one thing:
// a user's level, removing a user's entry (the change mautrix v0.32 could
// not judge), or a top-level level.
func fuzzPowerLevels(r *testRoom, state StateMap, version id.RoomVersion, b *fuzzBytes) map[string]any {
	content := map[string]any{}
	usersContent := map[string]any{}
	if plID, ok := state[plKey]; ok {
		gjson.GetBytes(r.events[plID].Content, "users").ForEach(func(k, v gjson.Result) bool {
			usersContent[k.Str] = v.Int()
			return true
		})
		for _, key := range []string{"state_default", "ban", "kick", "invite", "users_default"} {
			if v := gjson.GetBytes(r.events[plID].Content, key); v.Exists() {
				content[key] = v.Int()
			}
		}
	}
	content["users"] = usersContent
	user := propertyUsers[b.next(len(propertyUsers))]
	level := []int{0, 25, 50, 75, 100}[b.next(5)]
	switch b.next(3) {
	case 0:
		if !(version.PrivilegedRoomCreators() && user == alice) {
			usersContent[user.String()] = level
		}
	case 1:
		delete(usersContent, user.String())
	case 2:
		content[[]string{"state_default", "ban", "kick", "invite", "users_default"}[b.next(5)]] = level
	}
	return content
}

// fuzzRoom grows a small room history from the input: like randomRoom, but
// every choice (room version, prev events, sender, action, target, levels,
// clock) comes from the fuzzer.
func fuzzRoom(t *testing.T, data []byte) (*testRoom, []string) {
	b := fuzzBytes(data)
	version := fuzzVersions[b.next(len(fuzzVersions))]
	r := newTestRoom(t, version)
	r.tsFromDepth = b.next(2) == 0 // concurrent events tie: event ID tie-breaks
	creatorLevels := []any{alice, 100}
	if version.PrivilegedRoomCreators() {
		creatorLevels = nil
	}
	r.state("CREATE", alice, typeCreate, "", nil)
	r.state("IMA", alice, typeMember, alice.String(), join(), "CREATE")
	r.state("IPOWER", alice, typePL, "", users(append(creatorLevels, bob, 50, charlie, 50, evelyn, 100)...), "IMA")
	r.state("IJR", alice, typeJR, "", map[string]any{"join_rule": "public"}, "IPOWER")
	names := []string{"IJR"}
	for _, u := range propertyUsers[1:] {
		name := "J_" + u.Localpart()
		r.state(name, u, typeMember, u.String(), join(), names[len(names)-1])
		names = append(names, name)
	}
	for i := 0; len(b) > 0 && i < 40; i++ {
		recent := names[max(0, len(names)-6):]
		prevs := []string{recent[b.next(len(recent))]}
		if other := recent[b.next(len(recent))]; other != prevs[0] {
			prevs = append(prevs, other)
		}
		prevIDs := make([]id.EventID, len(prevs))
		for j, p := range prevs {
			prevIDs[j] = r.id(p)
		}
		sender := propertyUsers[b.next(len(propertyUsers))]
		target := propertyUsers[b.next(len(propertyUsers))]
		name := fmt.Sprintf("E%02d", i)
		spec := eventSpec{name: name, sender: sender, prevs: prevs, stateKey: sk("")}
		switch b.next(8) {
		case 0:
			spec.typ, spec.content = typeTopic, map[string]any{"topic": name}
		case 1, 2:
			spec.typ = typePL
			spec.content = fuzzPowerLevels(r, r.stateBefore(prevIDs), version, &b)
		case 3:
			spec.typ, spec.stateKey = typeMember, sk(target.String())
			spec.content = membership([]string{"ban", "leave", "invite"}[b.next(3)])
		case 4:
			spec.typ, spec.stateKey, spec.content = typeMember, sk(sender.String()), join()
		case 5:
			spec.typ, spec.stateKey, spec.content = typeMember, sk(sender.String()), membership("leave")
		case 6:
			spec.typ, spec.content = typeJR, map[string]any{"join_rule": []string{"public", "invite"}[b.next(2)]}
		case 7:
			spec.typ, spec.stateKey, spec.content = typeMsg, nil, map[string]any{"body": name}
		}
		r.add(spec)
		names = append(names, name)
	}
	return r, names
}

// FuzzResolve builds small random histories, resolves the states after a few
// of their events, and checks that nothing panics (not even inside the auth
// rules, where authrules would recover it), that the answer does not depend
// on the order of the state sets, and that resolving again gives it again.
func FuzzResolve(f *testing.F) {
	for seed := range 16 {
		data := make([]byte, 96)
		x := uint32(seed*2654435761 + 1)
		for i := range data {
			x ^= x << 13
			x ^= x >> 17
			x ^= x << 5
			data[i] = byte(x)
		}
		f.Add(data)
	}
	ctx := context.Background()
	authPanics := metrics.PanicsRecovered.WithLabelValues(recovery.EventAuth)
	f.Fuzz(func(t *testing.T, data []byte) {
		before := testutil.ToFloat64(authPanics)
		r, names := fuzzRoom(t, data)
		// The states after the last few events (the forks' heads).
		var sets []StateMap
		for _, name := range names[max(0, len(names)-3):] {
			sets = append(sets, r.stateAfter(name))
		}
		want, err := Resolve(ctx, r.version, sets, r)
		if err != nil {
			t.Fatal(err)
		}
		for _, order := range [][]int{{2, 1, 0}, {1, 2, 0}, {0, 2, 1}, {0, 1, 2}} {
			var shuffled []StateMap
			for _, i := range order {
				if i < len(sets) {
					shuffled = append(shuffled, sets[i])
				}
			}
			got, err := Resolve(ctx, r.version, shuffled, r)
			if err != nil {
				t.Fatal(err)
			}
			if !maps.Equal(got, want) {
				t.Fatalf("order %v changes the answer:\n got %s\nwant %s", order, r.describe(got), r.describe(want))
			}
		}
		checkNoRejectedWinner(t, r, r.version, sets, want)
		if d := testutil.ToFloat64(authPanics) - before; d != 0 {
			t.Fatalf("the auth rules panicked %v times (recovered); see the log", d)
		}
	})
}
