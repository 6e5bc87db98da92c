package tests

import (
	"fmt"
	"testing"

	"github.com/myelin-chat/myelin/homeserver/testserver"
	"github.com/myelin-chat/myelin/internal/config"
)

// TestCreateRoomBounded: createRoom takes at most 100 invites and 200
// initial_state entries (400 M_INVALID_PARAM beyond, nothing created), and
// each user may create rooms at limits.create_room_per_second (429
// M_LIMIT_EXCEEDED past the burst, for that user only).
func TestCreateRoomBounded(t *testing.T) {
	opts := testserver.Options{Configure: func(c *config.Config) {
		c.Limits.CreateRoomPerSecond, c.Limits.CreateRoomBurst = 0.001, 3
	}}
	forEachBackendWith(t, opts, func(t *testing.T, srv *testserver.Server) {
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		const path = "/_matrix/client/v3/createRoom"
		state := func(n int) []any {
			out := make([]any, n)
			for i := range out {
				out[i] = map[string]any{"type": "org.example.state", "state_key": fmt.Sprint(i), "content": map[string]any{}}
			}
			return out
		}
		invites := func(n int) []any {
			out := make([]any, n)
			for i := range out {
				out[i] = fmt.Sprintf("@u%d:localhost", i)
			}
			return out
		}
		for _, tc := range []struct {
			name string
			body map[string]any
		}{
			{"201 initial_state", map[string]any{"initial_state": state(201)}},
			{"5000 initial_state", map[string]any{"initial_state": state(5000)}},
			{"101 invites", map[string]any{"invite": invites(101)}},
		} {
			if r := clientCall(t, alice, "POST", path, tc.body); r.Status != 400 || r.errcode() != "M_INVALID_PARAM" {
				t.Errorf("%s: %d %s, want 400 M_INVALID_PARAM", tc.name, r.Status, r.errcode())
			}
		}
		if rooms := must(alice.JoinedRooms(t.Context())); len(rooms.JoinedRooms) != 0 {
			t.Errorf("refused requests created rooms: %v", rooms.JoinedRooms)
		}
		// The refused requests spent 3 tokens of alice's burst of 3.
		if r := clientCall(t, alice, "POST", path, map[string]any{"initial_state": state(200)}); r.Status != 429 || r.errcode() != "M_LIMIT_EXCEEDED" {
			t.Errorf("alice past her burst: %d %s, want 429 M_LIMIT_EXCEEDED", r.Status, r.errcode())
		}
		// Bob has his own budget; 200 entries and 100 invites are accepted.
		if r := clientCall(t, bob, "POST", path, map[string]any{"initial_state": state(200), "invite": invites(100)}); r.Status != 200 {
			t.Errorf("bob's room at the bounds: %d %s", r.Status, r.Raw)
		}
	})
}
