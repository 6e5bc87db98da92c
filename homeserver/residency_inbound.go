package homeserver

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"time"

	"github.com/myelin-chat/myelin/audit"
	"github.com/myelin-chat/myelin/federation"
	"github.com/myelin-chat/myelin/residency"
)

// Inbound enforcement of the data-localization policy: what other servers
// send us or ask of us (federationapi, ingest, the transport's
// authentication and profile queries).

// Explain is the policy's reason for refusing server purpose (the 403's
// text at authentication and on profile queries).
func (r residencyServers) Explain(ctx context.Context, server string, purpose federation.Purpose) string {
	switch purpose {
	case federation.PurposeKeyFetch, federation.PurposeNotary:
		return ""
	case federation.PurposeProfile:
		return r.p.Server(ctx, server, residency.Profile).Reason
	}
	return r.p.Listed(ctx, server).Reason
}

// maxRefusedOriginsPerMinute bounds the refusal records authentication
// writes in a minute: one per origin and purpose, and at most this many
// origins (the origin is as the request names it, before its signature is
// checked: anyone can name many). What is left unrecorded is still counted
// (myelin_federation_policy_refusals_total) and logged.
const maxRefusedOriginsPerMinute = 100

// inboundRefusals records the transport's refusals of inbound requests in
// the audit trail, rate-limited (federation.Authenticator.Refused).
type inboundRefusals struct {
	policy     *residency.Policy
	log        *audit.Log
	serverName string
	now        func() time.Time

	mu     sync.Mutex
	window time.Time
	seen   map[string]bool
}

func (i *inboundRefusals) refused(ctx context.Context, server string, purpose federation.Purpose) {
	host := federation.PolicyHost(server)
	if !i.first(host + " " + string(purpose)) {
		return
	}
	var kind residency.Kind
	d := i.policy.Listed(ctx, host)
	if purpose == federation.PurposeProfile {
		kind = residency.Profile
		d = i.policy.Server(ctx, host, kind)
	}
	if d.Allowed { // refused by the federation allow/deny lists, not residency
		d = residency.Decision{Rule: audit.RuleFederationPolicy}
	}
	i.log.Refusal(i.serverName, audit.ResidencyRefusal(d, audit.Inbound, host, string(purpose), kind, ""))
}

// first reports whether key is the first of the current minute (and within
// its bound of keys).
func (i *inboundRefusals) first(key string) bool {
	now := i.now()
	i.mu.Lock()
	defer i.mu.Unlock()
	if now.Sub(i.window) >= time.Minute || i.seen == nil {
		i.window, i.seen = now, map[string]bool{}
	}
	if i.seen[key] || len(i.seen) >= maxRefusedOriginsPerMinute {
		return false
	}
	i.seen[key] = true
	return true
}

// watchInboundRefusals has the transport record its refusals.
func (s *Server) watchInboundRefusals(t *federation.Transport) {
	if s.Audit == nil || t.Auth == nil {
		return
	}
	r := &inboundRefusals{policy: s.Residency, log: s.Audit, serverName: s.Config.ServerName, now: time.Now}
	t.Auth.Refused = r.refused
}

// profileServed records a profile answered to another server.
func (s *Server) profileServed(origin, endpoint string, items int) {
	if s.Audit == nil {
		return
	}
	s.Audit.Flow(s.Config.ServerName, audit.Flow{Direction: audit.Outbound, Server: origin, Endpoint: endpoint,
		Data: map[string]int{audit.DataProfile: items}})
}

// inboundResidency is the policy as federationapi asks it: Server, Room and
// Join as they are, and invites of our users to rooms we may hold nothing of.
type inboundResidency struct{ *residency.Policy }

// Invited: a room we know is decided by its recorded zone (Room, events);
// one we hold nothing of is classified by the rules from the invite's
// stripped state. That classification is not recorded: the stripped state
// is the inviting server's word, and recording it would let a server choose
// the zone of a room hosted elsewhere before our users see its real state
// (the join classifies it from the state it brings).
func (p inboundResidency) Invited(ctx context.Context, roomID, server string, stripped []json.RawMessage) residency.Decision {
	rules := p.Rules()
	if !rules.Enabled() {
		return residency.Decision{Allowed: true, Rule: residency.RuleDisabled}
	}
	if _, err := p.RoomZone(ctx, roomID); !errors.Is(err, residency.ErrUnknownRoom) {
		return p.Room(ctx, roomID, server, residency.Events)
	}
	c, err := rules.Classify(strippedFacts(stripped))
	if err != nil {
		return residency.Decision{Rule: "residency.rooms", Reason: "this server cannot tell which zone the room of this invite is resident in: " + err.Error()}
	}
	return rules.Admits(c.Zone, server, residency.Events)
}

// strippedFacts are what the rules classify a room by, read from an
// invite's stripped state: the creator and room type (m.room.create) and
// the aliases (m.room.canonical_alias).
func strippedFacts(stripped []json.RawMessage) residency.RoomFacts {
	var f residency.RoomFacts
	for _, raw := range stripped {
		var ev struct {
			Type     string  `json:"type"`
			StateKey *string `json:"state_key"`
			Sender   string  `json:"sender"`
			Content  struct {
				Creator    string   `json:"creator"`
				Type       string   `json:"type"`
				Alias      string   `json:"alias"`
				AltAliases []string `json:"alt_aliases"`
			} `json:"content"`
		}
		if json.Unmarshal(raw, &ev) != nil || ev.StateKey == nil || *ev.StateKey != "" {
			continue
		}
		switch ev.Type {
		case "m.room.create":
			f.Creator, f.RoomType = ev.Sender, ev.Content.Type
			if ev.Content.Creator != "" {
				f.Creator = ev.Content.Creator
			}
		case "m.room.canonical_alias":
			if ev.Content.Alias != "" {
				f.Aliases = append(f.Aliases, ev.Content.Alias)
			}
			f.Aliases = append(f.Aliases, ev.Content.AltAliases...)
		}
	}
	if len(f.Aliases) > 20 {
		f.Aliases = f.Aliases[:20]
	}
	return f
}
