package federation

import (
	"context"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/myelin-chat/myelin/internal/config"
	"github.com/myelin-chat/myelin/internal/serverpattern"
)

// Purpose says why the server is about to exchange data with another
// server; policies may answer differently per purpose (the data-localization
// policy will grow per-room and per-data-kind rules on this).
type Purpose string

// Purposes checked today.
const (
	PurposeInbound  Purpose = "inbound"   // an authenticated request from the server
	PurposeKeyFetch Purpose = "key_fetch" // fetching the server's signing keys (directly or through a notary)
	PurposeNotary   Purpose = "notary"    // answering a notary query about the server
	PurposeProfile  Purpose = "profile"   // disclosing a local profile to the server
	PurposeOutbound Purpose = "outbound"  // any other outbound request (the client's backstop)
	PurposeSend     Purpose = "send"      // sending the server our room events (federationsender)
	PurposeInvite   Purpose = "invite"    // asking the server to sign our invite of one of its users (remotejoin)
)

// Policy decides whether the server may exchange data with another server.
type Policy interface {
	AllowServer(ctx context.Context, server string, purpose Purpose) bool
}

// AllowAll is the default policy: every server, every purpose.
type AllowAll struct{}

// AllowServer always allows.
func (AllowAll) AllowServer(context.Context, string, Purpose) bool { return true }

// AllOf allows what every one of its policies allows.
type AllOf []Policy

// AllowServer asks each policy in turn; the first refusal decides.
func (a AllOf) AllowServer(ctx context.Context, server string, purpose Purpose) bool {
	for _, p := range a {
		if !p.AllowServer(ctx, server, purpose) {
			return false
		}
	}
	return true
}

// PolicyHost is the form of a server name that policy decisions are made
// on (serverpattern.Host): the host without its port, lowercased, without
// trailing dots.
func PolicyHost(server string) string { return serverpattern.Host(server) }

// ServerListPolicy allows servers by pattern: when Allowed is not empty only
// matching servers pass, and a server matching Denied never does. Patterns
// are matched as m.room.server_acl matches: case-insensitively against the
// host without port (PolicyHost), with * for any run of characters and ?
// for one.
type ServerListPolicy struct {
	Allowed []string
	Denied  []string
}

// AllowServer applies the lists, whatever the purpose.
func (p ServerListPolicy) AllowServer(_ context.Context, server string, _ Purpose) bool {
	host := PolicyHost(server)
	if matchAny(p.Denied, host) {
		return false
	}
	return len(p.Allowed) == 0 || matchAny(p.Allowed, host)
}

// MatchesAny reports whether host (a PolicyHost) matches one of the
// patterns as m.room.server_acl entries match (serverpattern.MatchesAny).
func MatchesAny(patterns []string, host string) bool { return serverpattern.MatchesAny(patterns, host) }

func matchAny(patterns []string, host string) bool { return serverpattern.MatchesAny(patterns, host) }

// CountingPolicy wraps a policy: every refusal is logged and counted in
// myelin_federation_policy_refusals_total{purpose}. The server name is in
// the log, not in a label, so a flood of names cannot blow up the metric.
type CountingPolicy struct {
	Policy   Policy
	refusals *prometheus.CounterVec
}

// NewCountingPolicy wraps p and registers its counter with reg (nil: unregistered).
func NewCountingPolicy(p Policy, reg prometheus.Registerer) *CountingPolicy {
	c := &CountingPolicy{Policy: p, refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "myelin_federation_policy_refusals_total",
		Help: "Exchanges with other servers refused by the federation policy, by purpose.",
	}, []string{"purpose"})}
	if reg != nil {
		reg.MustRegister(c.refusals)
	}
	return c
}

// AllowServer asks the wrapped policy about PolicyHost(server) and records
// a refusal. A name outside the server-name grammar is always refused: no
// policy can tell what it would name.
func (c *CountingPolicy) AllowServer(ctx context.Context, server string, purpose Purpose) bool {
	if config.ValidateServerName(server) == nil && c.Policy.AllowServer(ctx, PolicyHost(server), purpose) {
		return true
	}
	c.refusals.WithLabelValues(string(purpose)).Inc()
	slog.WarnContext(ctx, "federation policy refused a server", "server", server, "purpose", string(purpose))
	return false
}

// Explainer is a Policy that can say why it refuses a server a purpose, in
// words the other server's operator can act on (the data-localization
// policy's reason). Policies that cannot are answered with a generic message.
type Explainer interface {
	Explain(ctx context.Context, server string, purpose Purpose) string
}

// Explain is p's reason for refusing server purpose, "" when p gives none.
func Explain(ctx context.Context, p Policy, server string, purpose Purpose) string {
	if e, ok := p.(Explainer); ok {
		return e.Explain(ctx, server, purpose)
	}
	return ""
}

// Explain is the reason of the first policy that refuses.
func (a AllOf) Explain(ctx context.Context, server string, purpose Purpose) string {
	for _, p := range a {
		if !p.AllowServer(ctx, server, purpose) {
			return Explain(ctx, p, server, purpose)
		}
	}
	return ""
}

// Explain asks the wrapped policy about PolicyHost(server).
func (c *CountingPolicy) Explain(ctx context.Context, server string, purpose Purpose) string {
	if config.ValidateServerName(server) != nil {
		return ""
	}
	return Explain(ctx, c.Policy, PolicyHost(server), purpose)
}

// RefusalHook is told of each inbound request the policy refused (the
// audit trail, filled in by homeserver; it bounds what it records). server
// is the origin the request names: at authentication, before its signature
// is checked.
type RefusalHook func(ctx context.Context, server string, purpose Purpose)

// refusedMessage is the 403's text: the policy's reason, else fallback.
func refusedMessage(ctx context.Context, p Policy, server string, purpose Purpose, fallback string) string {
	if reason := Explain(ctx, p, server, purpose); reason != "" {
		return reason
	}
	return fallback
}
