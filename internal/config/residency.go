package config

import (
	"crypto/ed25519"
	"encoding/base64"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// Residency is the data-localization policy (docs/federation-policy.md):
// named zones of servers, the zone each room is resident in, what data
// kinds may leave to each zone, and a signed consortium trust list that
// places partner servers in zones. Off by default: without it every server
// the federation lists allow may receive everything.
type Residency struct {
	Enabled bool `yaml:"enabled"`
	// Zone is the zone our own server is in. Our server takes part in every
	// room whatever its zone; the settings of our zone that concern our own
	// users' metadata (client_ip_retention) apply.
	Zone string `yaml:"zone"`
	// Zones, in order: a server is in the first zone whose servers match it
	// (after the trust list, which places servers by name).
	Zones []ResidencyZone `yaml:"zones"`
	// Rooms says which zone a room is resident in.
	Rooms ResidencyRooms `yaml:"rooms"`
	// TrustList is the consortium's signed list of member servers and their
	// zones (optional).
	TrustList TrustList `yaml:"trust_list"`
}

// ResidencyZone is one named set of servers and what may flow to them.
type ResidencyZone struct {
	Name string `yaml:"name"`
	// Servers are patterns as m.room.server_acl's: host without port, * and ?.
	Servers []string `yaml:"servers"`
	// Includes names other zones whose servers may also hold the data of
	// rooms resident in this zone.
	Includes []string `yaml:"includes"`
	// Share says per data kind (DataKinds) whether it may go to servers in
	// this zone; a kind not listed may.
	Share map[string]bool `yaml:"share"`
	// RequireEncryption: a room resident in this zone must be encrypted
	// before any other server may join it or be invited to it.
	RequireEncryption bool `yaml:"require_encryption"`
	// Retention is the default retention policy of rooms resident in this
	// zone that have no m.room.retention (retention.default_policy otherwise).
	Retention *RetentionPolicy `yaml:"retention"`
	// ClientIPRetention is how long our users' client IP addresses are kept
	// when this is our zone (0: as long as the device exists).
	ClientIPRetention Duration `yaml:"client_ip_retention"`
	// UserDirectoryVisible (default true): users of this zone's servers
	// appear in our users' directory searches; false leaves them out (our
	// own server's users are always listed).
	UserDirectoryVisible *bool `yaml:"user_directory_visible"`
}

// DirectoryVisible is user_directory_visible with its default (true).
func (z ResidencyZone) DirectoryVisible() bool {
	return z.UserDirectoryVisible == nil || *z.UserDirectoryVisible
}

// ResidencyRooms classifies rooms into zones: rooms created here (pinned at
// creation in m.room.create's content) and rooms hosted elsewhere that our
// users join or are invited to (recorded when first met).
type ResidencyRooms struct {
	// DefaultZone is the zone of a room no rule matches.
	DefaultZone string `yaml:"default_zone"`
	// Rules, in order: the first that matches decides.
	Rules []ResidencyRule `yaml:"rules"`
	// MayChoose lists the zones any creator may ask for explicitly at
	// creation (creation_content's org.myelin.residency.zone), beyond the
	// zone the rules give and the matching rule's may_choose.
	MayChoose []string `yaml:"may_choose"`
}

// ResidencyRule matches rooms by creator, alias and room type; every
// condition given must hold (none given: every room).
type ResidencyRule struct {
	Zone string `yaml:"zone"`
	// Creators are user ID patterns (* and ?), e.g. "@*:corp.example".
	Creators []string `yaml:"creators"`
	// Aliases are room alias patterns (the alias at creation, or the
	// canonical alias), e.g. "#eu-*:corp.example".
	Aliases []string `yaml:"aliases"`
	// RoomTypes are m.room.create types; "" names rooms without a type.
	RoomTypes []string `yaml:"room_types"`
	// MayChoose lists the zones the creators this rule matches may ask for.
	MayChoose []string `yaml:"may_choose"`
}

// TrustList is where the consortium trust list comes from and the key it
// must be signed with.
type TrustList struct {
	// URL (https, or http for tests) or File: one of them, or neither.
	URL  string `yaml:"url"`
	File string `yaml:"file"`
	// Issuer is the coordinating organization's name in the list's
	// signatures; PublicKey its ed25519 key (unpadded base64), KeyID
	// "ed25519:<version>".
	Issuer    string `yaml:"issuer"`
	KeyID     string `yaml:"key_id"`
	PublicKey string `yaml:"public_key"`
	// Refresh is how often the list is fetched again.
	Refresh Duration `yaml:"refresh"`
}

// DataKinds names what may cross the boundary; residency zones' share maps
// are keyed by these (residency and audit name the same kinds).
var DataKinds = []string{"events", "typing", "receipts", "presence", "to_device", "device_keys", "media", "profile",
	"directory", "keys"}

// TrustListKey decodes trust_list.public_key.
func (t TrustList) TrustListKey() (ed25519.PublicKey, error) {
	raw, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(t.PublicKey, "="))
	if err != nil || len(raw) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("must be a 32-byte ed25519 public key in unpadded base64")
	}
	return ed25519.PublicKey(raw), nil
}

// Configured reports whether a trust list source is set.
func (t TrustList) Configured() bool { return t.URL != "" || t.File != "" }

// ZoneNamed returns the zone called name.
func (r Residency) ZoneNamed(name string) (ResidencyZone, bool) {
	for _, z := range r.Zones {
		if z.Name == name {
			return z, true
		}
	}
	return ResidencyZone{}, false
}

func (r Residency) validate(bad func(key, format string, args ...any)) {
	if !r.Enabled {
		return
	}
	names := map[string]bool{}
	for i, z := range r.Zones {
		key := fmt.Sprintf("residency.zones[%d]", i)
		switch {
		case !zoneNameOK(z.Name):
			bad(key+".name", "must be 1-64 characters of a-z, 0-9, _ and -, got %q", z.Name)
		case names[z.Name]:
			bad(key+".name", "zone %q is defined twice", z.Name)
		}
		names[z.Name] = true
		for _, p := range z.Servers {
			if strings.TrimSpace(p) == "" || strings.Contains(p, ":") && !strings.HasPrefix(p, "[") {
				bad(key+".servers", "pattern %q must be a host pattern without port", p)
			}
		}
		for k := range z.Share {
			if !knownKind(k) {
				bad(key+".share", "unknown data kind %q (known: %s)", k, strings.Join(DataKinds, ", "))
			}
		}
		if z.Retention != nil && (z.Retention.MinLifetime.Duration < 0 || z.Retention.MaxLifetime.Duration < 0) {
			bad(key+".retention", "lifetimes must not be negative")
		}
		if z.ClientIPRetention.Duration < 0 || z.ClientIPRetention.Duration > 0 && z.ClientIPRetention.Duration < time.Minute {
			bad(key+".client_ip_retention", "must be 0 (kept) or at least 1m")
		}
	}
	zoneRef := func(key, name string) {
		if !names[name] {
			bad(key, "names zone %q, which residency.zones does not define", name)
		}
	}
	for i, z := range r.Zones {
		for _, inc := range z.Includes {
			zoneRef(fmt.Sprintf("residency.zones[%d].includes", i), inc)
		}
	}
	if r.Zone == "" {
		bad("residency.zone", "must name the zone our server is in")
	} else {
		zoneRef("residency.zone", r.Zone)
	}
	if r.Rooms.DefaultZone == "" {
		bad("residency.rooms.default_zone", "must name the zone of rooms no rule matches")
	} else {
		zoneRef("residency.rooms.default_zone", r.Rooms.DefaultZone)
	}
	for _, name := range r.Rooms.MayChoose {
		zoneRef("residency.rooms.may_choose", name)
	}
	for i, rule := range r.Rooms.Rules {
		key := fmt.Sprintf("residency.rooms.rules[%d]", i)
		zoneRef(key+".zone", rule.Zone)
		for _, name := range rule.MayChoose {
			zoneRef(key+".may_choose", name)
		}
	}
	t := r.TrustList
	if t.URL != "" && t.File != "" {
		bad("residency.trust_list", "set url or file, not both")
	}
	if t.Configured() {
		if t.URL != "" {
			if u, err := url.Parse(t.URL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
				bad("residency.trust_list.url", "must be an absolute http(s) URL, got %q", t.URL)
			}
		}
		if err := ValidateServerName(t.Issuer); err != nil {
			bad("residency.trust_list.issuer", "%v", err)
		}
		if !strings.HasPrefix(t.KeyID, "ed25519:") || len(t.KeyID) == len("ed25519:") {
			bad("residency.trust_list.key_id", "must be ed25519:<version>, got %q", t.KeyID)
		}
		if _, err := t.TrustListKey(); err != nil {
			bad("residency.trust_list.public_key", "%v", err)
		}
		if t.Refresh.Duration < time.Second {
			bad("residency.trust_list.refresh", "must be at least 1s")
		}
	}
}

func defaultResidency() Residency {
	return Residency{TrustList: TrustList{Refresh: Duration{time.Hour}}}
}

func knownKind(k string) bool {
	for _, d := range DataKinds {
		if d == k {
			return true
		}
	}
	return false
}

func zoneNameOK(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}
