package homeserver

import (
	"context"

	"github.com/myelin-chat/myelin/federation"
	"github.com/myelin-chat/myelin/residency"
)

// buildResidency builds the data-localization policy (off unless
// residency.enabled): the modules at the boundary ask it per room and
// data kind; the transport asks it per server (residencyServers).
func (s *Server) buildResidency() {
	s.Residency = residency.New(residency.Options{Config: s.Config, Store: s.DB, Metrics: s.Metrics})
}

// residencyServers is the residency policy as the transport's server-level
// policy: with the policy on, a server in no zone is refused every purpose
// but key fetches and notary answers (which carry no user data, and let
// its requests be authenticated and then refused with a reason); profile
// disclosure follows the zone's profile setting. Room data is asked per
// room by the modules that hold it.
type residencyServers struct{ p *residency.Policy }

func (r residencyServers) AllowServer(ctx context.Context, server string, purpose federation.Purpose) bool {
	switch purpose {
	case federation.PurposeKeyFetch, federation.PurposeNotary:
		return true
	case federation.PurposeProfile:
		return r.p.Server(ctx, server, residency.Profile).Allowed
	}
	return r.p.Listed(ctx, server).Allowed
}
