// Package residency is the data-localization policy: named zones of
// servers, the zone each room is resident in, which data kinds may go to
// each zone, and the consortium trust list that places partner servers in
// zones (docs/federation-policy.md). Rules is the pure, compiled form of the
// config and the trust list; Policy answers the boundary modules' questions
// over it and the store's record of each room's zone.
//
// Every answer is a Decision that names the rule that decided and a reason a
// person can act on; refusals become 403 M_FORBIDDEN with that reason and an
// audit record with that rule.
package residency

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/myelin-chat/myelin/internal/config"
	"github.com/myelin-chat/myelin/internal/serverpattern"
)

// Kind is a kind of data that may cross the boundary (config.DataKinds; the
// audit trail counts flows by the same names).
type Kind string

// The data kinds.
const (
	Events     Kind = "events"      // PDUs, and the room reads other servers make (state, backfill, event fetch)
	Typing     Kind = "typing"      // m.typing
	Receipts   Kind = "receipts"    // m.receipt
	Presence   Kind = "presence"    // m.presence
	ToDevice   Kind = "to_device"   // m.direct_to_device
	DeviceKeys Kind = "device_keys" // m.device_list_update, m.signing_key_update, /user/devices
	Media      Kind = "media"       // media served to or fetched from another server
	Profile    Kind = "profile"     // profile queries
	Directory  Kind = "directory"   // aliases, public rooms, space hierarchy
	Keys       Kind = "keys"        // end-to-end key queries and claims
)

// Kinds lists every kind, in config.DataKinds order.
var Kinds = []Kind{Events, Typing, Receipts, Presence, ToDevice, DeviceKeys, Media, Profile, Directory, Keys}

// Rule names, as refusals and explanations carry them. Zone-specific rules
// are built by the functions below (e.g. residency.zones.eu.share.presence).
const (
	RuleDisabled       = "residency.disabled"        // the policy is off: everything allowed
	RuleOurServer      = "residency.our_server"      // our own server takes part in every room
	RuleUnlistedServer = "residency.unlisted_server" // the server is in no zone
)

// RuleIncludes is the rule that admits (or does not admit) a server's zone
// to the rooms resident in roomZone.
func RuleIncludes(roomZone string) string { return "residency.zones." + roomZone + ".includes" }

// RuleShare is the rule that lets (or does not let) kind go to servers of zone.
func RuleShare(zone string, kind Kind) string {
	return "residency.zones." + zone + ".share." + string(kind)
}

// RuleRequireEncryption is the rule that keeps other servers out of an
// unencrypted room resident in zone.
func RuleRequireEncryption(zone string) string {
	return "residency.zones." + zone + ".require_encryption"
}

// Decision is the policy's answer about one server and one kind of data.
type Decision struct {
	Allowed bool
	// Rule names what decided (the Rule… constants and functions).
	Rule string
	// Reason says why, for the person refused and for the audit trail.
	Reason string
	// ServerZone is the server's zone ("" when in none) and ZoneSource what
	// placed it there (trust_list, residency.zones[N].servers, our server).
	ServerZone string
	ZoneSource string
	// RoomZone is the room's zone, for questions about a room.
	RoomZone string
}

// Rules is the compiled policy: the config's zones and room rules, and the
// trust list's placements. It never changes once built; Policy swaps in a
// new one when the trust list changes.
type Rules struct {
	enabled   bool
	ourServer string // Host form
	ourZone   string
	zones     []zone
	byName    map[string]*zone
	trust     map[string]string // Host → zone, from the trust list
	trustVer  int64
	rooms     config.ResidencyRooms
	roomRules []roomRule

	// placed caches ServerZone by host (bounded: a flood of names stops
	// being cached, not being answered).
	placed     sync.Map // host → placement
	placedSize atomic.Int64
}

type placement struct{ zone, source string }

const maxPlacedCache = 100_000

type zone struct {
	config.ResidencyZone
	index    int
	admitted map[string]bool // zone names whose servers may hold this zone's rooms' data
}

type roomRule struct {
	config.ResidencyRule
	index int
}

// Compile builds Rules from the config (already validated by
// config.Validate) and the trust list (nil: none). Trust list entries that
// name a zone the config does not define are ignored and returned, so the
// caller can log them.
func Compile(cfg *config.Config, tl *TrustList) (*Rules, []string) {
	rc := cfg.Residency
	r := &Rules{enabled: rc.Enabled, ourServer: serverpattern.Host(cfg.ServerName), ourZone: rc.Zone,
		byName: map[string]*zone{}, trust: map[string]string{}, rooms: rc.Rooms}
	r.zones = make([]zone, len(rc.Zones))
	for i, z := range rc.Zones {
		r.zones[i] = zone{ResidencyZone: z, index: i, admitted: map[string]bool{z.Name: true}}
		for _, inc := range z.Includes {
			r.zones[i].admitted[inc] = true
		}
		r.byName[z.Name] = &r.zones[i]
	}
	for i, rule := range rc.Rooms.Rules {
		r.roomRules = append(r.roomRules, roomRule{ResidencyRule: rule, index: i})
	}
	var ignored []string
	if tl != nil {
		r.trustVer = tl.Version
		for server, z := range tl.Servers {
			if r.byName[z] == nil {
				ignored = append(ignored, fmt.Sprintf("%s (zone %q is not defined here)", server, z))
				continue
			}
			r.trust[serverpattern.Host(server)] = z
		}
	}
	slices.Sort(ignored)
	return r, ignored
}

// Enabled reports whether the policy is on.
func (r *Rules) Enabled() bool { return r.enabled }

// OurZone is the zone our server is in.
func (r *Rules) OurZone() string { return r.ourZone }

// Zone returns the config of the zone called name.
func (r *Rules) Zone(name string) (config.ResidencyZone, bool) {
	z := r.byName[name]
	if z == nil {
		return config.ResidencyZone{}, false
	}
	return z.ResidencyZone, true
}

// ZoneNames lists the zones in config order.
func (r *Rules) ZoneNames() []string {
	out := make([]string, len(r.zones))
	for i, z := range r.zones {
		out[i] = z.Name
	}
	return out
}

// TrustListVersion is the version of the trust list in force (0: none).
func (r *Rules) TrustListVersion() int64 { return r.trustVer }

// ServerZone places a server: our own server in our zone; a server the
// trust list names in its zone; otherwise the first zone whose patterns
// match. zone is "" when the server is in none; source says what placed it.
func (r *Rules) ServerZone(server string) (zoneName, source string) {
	host := serverpattern.Host(server)
	if p, ok := r.placed.Load(host); ok {
		pl := p.(placement)
		return pl.zone, pl.source
	}
	zoneName, source = r.place(host)
	if r.placedSize.Load() < maxPlacedCache {
		if _, loaded := r.placed.LoadOrStore(host, placement{zoneName, source}); !loaded {
			r.placedSize.Add(1)
		}
	}
	return zoneName, source
}

func (r *Rules) place(host string) (zoneName, source string) {
	if host == r.ourServer {
		return r.ourZone, "our server"
	}
	if z, ok := r.trust[host]; ok {
		return z, "trust_list"
	}
	for _, z := range r.zones {
		if serverpattern.MatchesAny(z.Servers, host) {
			return z.Name, fmt.Sprintf("residency.zones[%d].servers", z.index)
		}
	}
	return "", ""
}

// Shares decides whether kind may go to (or be exchanged with) server,
// whatever the room: the server must be in a zone that shares the kind.
func (r *Rules) Shares(server string, kind Kind) Decision {
	if !r.enabled {
		return Decision{Allowed: true, Rule: RuleDisabled}
	}
	zn, src := r.ServerZone(server)
	d := Decision{ServerZone: zn, ZoneSource: src}
	if src == "our server" {
		d.Allowed, d.Rule = true, RuleOurServer
		return d
	}
	if zn == "" {
		d.Rule = RuleUnlistedServer
		d.Reason = fmt.Sprintf("%s is in no zone of this server's data-localization policy, so no %s may be exchanged with it",
			serverpattern.Host(server), kindPhrase(kind))
		return d
	}
	d.Rule = RuleShare(zn, kind)
	if shared, listed := r.byName[zn].Share[string(kind)]; listed && !shared {
		d.Reason = fmt.Sprintf("the data-localization policy does not let %s go to servers of zone %s, such as %s",
			kindPhrase(kind), zn, serverpattern.Host(server))
		return d
	}
	d.Allowed = true
	return d
}

// Admits decides whether server may hold (or ask for) kind of the data of a
// room resident in roomZone: its zone must be the room's or one the room's
// zone includes, and share the kind. Our own server is always admitted.
func (r *Rules) Admits(roomZone, server string, kind Kind) Decision {
	d := r.Shares(server, kind)
	d.RoomZone = roomZone
	if !d.Allowed || d.Rule == RuleOurServer || d.Rule == RuleDisabled {
		return d
	}
	rz := r.byName[roomZone]
	if rz == nil || !rz.admitted[d.ServerZone] {
		d.Allowed, d.Rule = false, RuleIncludes(roomZone)
		d.Reason = fmt.Sprintf("the room is resident in zone %s, whose data may only go to servers of zone%s %s; %s is in zone %s",
			roomZone, plural(len(r.admittedNames(roomZone))), strings.Join(r.admittedNames(roomZone), ", "),
			serverpattern.Host(server), d.ServerZone)
		return d
	}
	return d
}

func (r *Rules) admittedNames(roomZone string) []string {
	rz := r.byName[roomZone]
	if rz == nil {
		return []string{roomZone}
	}
	var out []string
	for _, z := range r.zones {
		if rz.admitted[z.Name] {
			out = append(out, z.Name)
		}
	}
	return out
}

// AdmittedPatterns lists the server patterns a room resident in roomZone
// may be shared with (its zone's and its included zones', and the trust
// list's servers placed in them), sorted: what m.room.server_acl's allow
// list mirrors. A zone with no patterns contributes nothing.
func (r *Rules) AdmittedPatterns(roomZone string) []string {
	set := map[string]bool{r.ourServer: true}
	for _, name := range r.admittedNames(roomZone) {
		if z := r.byName[name]; z != nil {
			for _, p := range z.Servers {
				set[strings.ToLower(strings.TrimSpace(p))] = true
			}
		}
	}
	for host, z := range r.trust {
		if rz := r.byName[roomZone]; rz != nil && rz.admitted[z] {
			set[host] = true
		}
	}
	out := make([]string, 0, len(set))
	for p := range set {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}

// RequiresEncryption reports whether rooms resident in zone must be
// encrypted before another server may join them or be invited.
func (r *Rules) RequiresEncryption(zoneName string) bool {
	z := r.byName[zoneName]
	return r.enabled && z != nil && z.RequireEncryption
}

// Fingerprint is a SHA-256 over the policy's content (config and trust
// list), so that a change can be recorded once (audit policy_change).
func (r *Rules) Fingerprint() string {
	b, _ := json.Marshal(struct {
		Enabled bool
		Zone    string
		Zones   []config.ResidencyZone
		Rooms   config.ResidencyRooms
		Trust   map[string]string
		Version int64
	}{r.enabled, r.ourZone, r.configZones(), r.rooms, r.trust, r.trustVer})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func (r *Rules) configZones() []config.ResidencyZone {
	out := make([]config.ResidencyZone, len(r.zones))
	for i, z := range r.zones {
		out[i] = z.ResidencyZone
	}
	return out
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

func kindPhrase(k Kind) string {
	switch k {
	case Events:
		return "room events"
	case Typing:
		return "typing notifications"
	case Receipts:
		return "read receipts"
	case Presence:
		return "presence"
	case ToDevice:
		return "to-device messages"
	case DeviceKeys:
		return "device lists"
	case Media:
		return "media"
	case Profile:
		return "profiles"
	case Directory:
		return "room directory entries"
	case Keys:
		return "end-to-end keys"
	}
	return string(k)
}
