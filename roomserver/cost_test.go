package roomserver

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
)

// TestKeyframeCostLinear: as a room's state grows by one entry per event to
// 20,000 entries, the snapshot rows written stay linear in the number of
// events (a keyframe every 100 changes wrote ~n²/200), and reading any state
// costs at most 1.5 times its size plus the keyframe interval.
func TestKeyframeCostLinear(t *testing.T) {
	const n = 20000
	rows, chain := 0, 0
	for size := 1; size <= n; size++ {
		if size == 1 || needKeyframe(chain, size) {
			rows += size
			chain = 0
		} else {
			rows++
			chain++
		}
		if chain > size/2+keyframeInterval {
			t.Fatalf("chain of %d deltas over a state of %d entries", chain, size)
		}
	}
	if rows > 4*n {
		t.Fatalf("%d snapshot rows for %d state events", rows, n)
	}
	// Steady state (a room whose state no longer grows): about 1 + 2 rows a change.
	rows, chain = 0, 0
	for i := 0; i < n; i++ {
		if needKeyframe(chain, 1000) {
			rows += 1000
			chain = 0
		} else {
			rows++
			chain++
		}
	}
	if rows > 4*n {
		t.Fatalf("%d snapshot rows for %d changes of a 1,000-entry state", rows, n)
	}
}

// BenchmarkCreateRoomMaxInitialState measures createRoom at its bound of
// MaxCreateInitialState initial_state entries (embedded SQLite).
func BenchmarkCreateRoomMaxInitialState(b *testing.B) {
	s := newTestServer(b)
	ctx := context.Background()
	state := make([]InitialStateEvent, MaxCreateInitialState)
	for i := range state {
		state[i] = InitialStateEvent{Type: "org.example.state", StateKey: fmt.Sprint(i), Content: json.RawMessage(`{}`)}
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := s.CreateRoom(ctx, user("owner"), &CreateRoomRequest{InitialState: state}); err != nil {
			b.Fatal(err)
		}
	}
}
