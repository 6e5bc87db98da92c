package tests

import (
	"net/http"
	"testing"

	"github.com/myelin-chat/myelin/homeserver/testserver"
	"github.com/myelin-chat/myelin/internal/config"
)

// TestResidencyRefusesUnlistedServers: with the policy on and no zone that
// b is in (zone "open" removed), b cannot make any request of a1 (403 at
// authentication), while a2, in zone a, can.
func TestResidencyRefusesUnlistedServers(t *testing.T) {
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) {
			n := newResidencyNet(t, backend, residencyPolicy(func(r *config.Residency) {
				r.Zones, r.Rooms.Rules = r.Zones[:1], nil
			}))
			fromB := n.net.client(t, "b.test", n.b.SigningKey)
			fromA2 := n.net.client(t, "a2.test", n.a2.SigningKey)
			if _, err := fromA2.QueryProfile(ctxT(t), "a1.test", n.a1.UserID("nobody")); errStatus(err) != http.StatusNotFound {
				t.Fatalf("a2 → a1 profile query: %v, want 404 (no such user)", err)
			}
			_, err := fromB.QueryProfile(ctxT(t), "a1.test", n.a1.UserID("nobody"))
			if got := errStatus(err); got != http.StatusForbidden {
				t.Fatalf("b → a1 profile query: status %d (%v), want 403", got, err)
			}
		})
	}
}
