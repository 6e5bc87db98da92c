package roomserver

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/tidwall/gjson"
)

// The auth chain of a room's state is deduplicated and closed under
// auth_events, holds no event twice however many events share an ancestor,
// and a walk past the cap fails with ErrTooLarge instead of answering part.
func TestAuthChainClosedAndCapped(t *testing.T) {
	s := newTestServer(t)
	ctx := context.Background()
	roomID, err := s.CreateRoom(ctx, user("owner"), &CreateRoomRequest{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"a", "b", "c"} {
		if _, err := s.Join(ctx, user(u), string(roomID), ""); err != nil {
			t.Fatal(err)
		}
	}
	row, err := s.db.GetRoom(ctx, string(roomID))
	if err != nil {
		t.Fatal(err)
	}
	state, err := s.StateIDsAt(ctx, roomID, row.Extremities[0])
	if err != nil {
		t.Fatal(err)
	}
	chain, err := s.AuthChain(ctx, state)
	if err != nil {
		t.Fatal(err)
	}
	in := map[string]bool{}
	for _, e := range chain {
		if in[e.EventID] {
			t.Fatalf("%s twice in the auth chain", e.EventID)
		}
		in[e.EventID] = true
	}
	all, err := s.Events(ctx, append(slices.Clone(state), row.Extremities...))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range append(all, chain...) {
		for _, a := range gjson.GetBytes(e.JSON, "auth_events").Array() {
			if !in[a.Str] {
				t.Fatalf("auth chain misses %s, an auth event of %s", a.Str, e.EventID)
			}
		}
	}
	if len(chain) < 3 {
		t.Fatalf("auth chain of %d events", len(chain))
	}

	authChainCap = len(chain) - 1
	defer func() { authChainCap = MaxAuthChain }()
	if _, err := s.AuthChain(ctx, state); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("past the cap: %v, want ErrTooLarge", err)
	}
}
