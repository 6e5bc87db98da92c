package roomserver

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/tidwall/gjson"
)

// TestMessagesSkipsHiddenHistory: paging /messages backwards in a room with
// joined history does not read the history from before the user joined
// batch by batch: the pagination that reaches it costs a few queries,
// however long that history is.
func TestMessagesSkipsHiddenHistory(t *testing.T) {
	s := newTestServer(t)
	ctx := context.Background()
	owner, bob := user("owner"), user("bob")
	room, err := s.CreateRoom(ctx, owner, &CreateRoomRequest{Preset: "public_chat", InitialState: []InitialStateEvent{
		{Type: "m.room.history_visibility", Content: json.RawMessage(`{"history_visibility":"joined"}`)},
	}})
	if err != nil {
		t.Fatal(err)
	}
	send := func(i int) {
		if _, err := s.Send(ctx, SendRequest{Sender: owner, RoomID: room, Type: "m.room.message",
			Content: []byte(fmt.Sprintf(`{"msgtype":"m.text","body":"%d"}`, i))}); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 300; i++ {
		send(i)
	}
	if _, err := s.Join(ctx, bob, string(room), ""); err != nil {
		t.Fatal(err)
	}
	send(300)

	var seen []string
	from := ""
	for page := 0; ; page++ {
		if page > 20 {
			t.Fatal("pagination does not end")
		}
		reads0 := s.db.Reads()
		resp, err := s.Messages(ctx, bob, room, MessagesRequest{From: from, Dir: "b", Limit: 1})
		if err != nil {
			t.Fatal(err)
		}
		if reads := s.db.Reads() - reads0; reads > 20 {
			t.Errorf("page %d took %d queries", page, reads)
		}
		for _, e := range resp.Chunk {
			seen = append(seen, gjson.GetBytes(e, "type").Str)
		}
		if resp.End == "" {
			break
		}
		from = resp.End
	}
	// The message after bob's join, his join, and the room's creation (sent
	// before history_visibility was joined), never the hidden messages.
	if len(seen) < 2 || seen[0] != "m.room.message" || seen[1] != "m.room.member" {
		t.Fatalf("bob saw %v", seen)
	}
	for _, typ := range seen[2:] {
		if typ == "m.room.message" {
			t.Fatalf("bob saw a hidden message: %v", seen)
		}
	}
}

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
