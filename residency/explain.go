package residency

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/myelin-chat/myelin/internal/config"
	"github.com/myelin-chat/myelin/internal/serverpattern"
	"github.com/myelin-chat/myelin/storage"
)

// ExplainStore is what Explain reads (*storage.DB); it records nothing.
type ExplainStore interface {
	GetRoomResidency(ctx context.Context, roomID string) (storage.RoomResidency, error)
	GetRoomFacts(ctx context.Context, roomID string) (storage.RoomFacts, error)
	RoomEncrypted(ctx context.Context, roomID string) (bool, error)
}

// KindExplanation is the policy's answer for one data kind (or "join").
type KindExplanation struct {
	Kind    string `json:"kind"`
	Allowed bool   `json:"allowed"`
	Rule    string `json:"rule"`
	Reason  string `json:"reason,omitempty"`
}

// Explanation is what `myelin policy explain` prints: where a server is
// placed and why, the room's zone and why, and per data kind what may flow
// to the server and which rule decides.
type Explanation struct {
	Enabled          bool   `json:"enabled"`
	OurZone          string `json:"our_zone,omitempty"`
	TrustListVersion int64  `json:"trust_list_version"`
	Server           string `json:"server"`
	ServerZone       string `json:"server_zone"` // "" when in none
	ZoneSource       string `json:"zone_source,omitempty"`
	ServerReason     string `json:"server_reason"`
	Room             string `json:"room,omitempty"`
	RoomZone         string `json:"room_zone,omitempty"`
	RoomRule         string `json:"room_rule,omitempty"`
	RoomReason       string `json:"room_reason,omitempty"`
	// RoomRecorded: the zone is recorded (room_residency); false: the room
	// was classified now from the store's state, as the server will record
	// it when it next meets the room.
	RoomRecorded bool              `json:"room_recorded,omitempty"`
	Kinds        []KindExplanation `json:"kinds"`
}

// Explain answers, under rules, what may flow to server: of roomID's data
// when roomID is given (with "join" first: may the server join, be invited
// or knock), else the server-level kinds. It reads the store and records
// nothing; ErrUnknownRoom for a room the store holds nothing of.
func Explain(ctx context.Context, rules *Rules, store ExplainStore, roomID, server string) (Explanation, error) {
	e := Explanation{Enabled: rules.Enabled(), OurZone: rules.OurZone(), TrustListVersion: rules.TrustListVersion(),
		Server: serverpattern.Host(server), Room: roomID}
	e.ServerZone, e.ZoneSource = rules.ServerZone(server)
	e.ServerReason = rules.placementReason(e.Server, e.ServerZone, e.ZoneSource)
	if !rules.Enabled() {
		e.ServerReason = "the data-localization policy is off (residency.enabled: false): every server may have everything"
		e.ServerZone, e.ZoneSource = "", ""
	}
	if roomID == "" {
		for _, k := range Kinds {
			e.Kinds = append(e.Kinds, explained(string(k), rules.Shares(server, k)))
		}
		return e, nil
	}
	c, recorded, err := roomZone(ctx, rules, store, roomID)
	if err != nil {
		return e, err
	}
	e.RoomZone, e.RoomRule, e.RoomReason, e.RoomRecorded = c.Zone, c.Rule, c.Reason, recorded
	join := rules.Admits(c.Zone, server, Events)
	if join.Allowed && join.Rule != RuleDisabled && join.Rule != RuleOurServer && rules.RequiresEncryption(c.Zone) {
		if enc, err := store.RoomEncrypted(ctx, roomID); err != nil || !enc {
			join.Allowed, join.Rule = false, RuleRequireEncryption(c.Zone)
			join.Reason = fmt.Sprintf("rooms resident in zone %s must be encrypted before another server may join; enable encryption in the room first", c.Zone)
		}
	}
	e.Kinds = append(e.Kinds, explained("join", join))
	for _, k := range Kinds {
		e.Kinds = append(e.Kinds, explained(string(k), rules.Admits(c.Zone, server, k)))
	}
	return e, nil
}

func explained(kind string, d Decision) KindExplanation {
	return KindExplanation{Kind: kind, Allowed: d.Allowed, Rule: d.Rule, Reason: d.Reason}
}

// roomZone is Policy.RoomZone without recording: the recorded zone, else
// the classification from the store's state.
func roomZone(ctx context.Context, r *Rules, store ExplainStore, roomID string) (Classification, bool, error) {
	rec, err := store.GetRoomResidency(ctx, roomID)
	if err == nil {
		return Classification{Zone: rec.Zone, Rule: rec.Rule, Reason: fmt.Sprintf("recorded (%s) by %s", rec.Source, rec.Rule)}, true, nil
	}
	if !errors.Is(err, storage.ErrNotFound) {
		return Classification{}, false, fmt.Errorf("reading the zone of %s: %w", roomID, err)
	}
	facts, err := store.GetRoomFacts(ctx, roomID)
	if errors.Is(err, storage.ErrNotFound) {
		return Classification{}, false, ErrUnknownRoom
	}
	if err != nil {
		return Classification{}, false, err
	}
	if _, known := r.Zone(facts.Residency); known && serverOf(facts.Creator) == r.ourServer {
		return Classification{Zone: facts.Residency, Rule: "m.room.create", Reason: "pinned in m.room.create at creation"}, false, nil
	}
	c, err := r.Classify(RoomFacts{Creator: facts.Creator, RoomType: facts.RoomType, Aliases: facts.Aliases})
	return c, false, err
}

// placementReason says in words why a server is in its zone.
func (r *Rules) placementReason(host, zoneName, source string) string {
	switch {
	case source == "our server":
		return "it is this server, in residency.zone " + zoneName
	case source == "trust_list":
		return fmt.Sprintf("the trust list (version %d) places it in zone %s", r.trustVer, zoneName)
	case zoneName != "":
		z := r.byName[zoneName]
		return fmt.Sprintf("the trust list does not name it, and it matches %s (%s), the first zone whose patterns match",
			source, strings.Join(z.Servers, ", "))
	}
	return fmt.Sprintf("neither the trust list nor any zone's servers patterns place %s: it is in no zone, and may not deal with this server at all", host)
}

// StoredTrustList reads the last trust list accepted (the one the running
// server has in force) from the store, as the CLI shows it: nil when none
// is configured or stored, or when it no longer verifies against the
// pinned key or has expired (then the server does not use it either; why
// is returned as note).
func StoredTrustList(ctx context.Context, cfg *config.Config, store interface {
	GetTrustList(ctx context.Context, issuer string) (storage.StoredTrustList, error)
}, now time.Time) (tl *TrustList, note string, err error) {
	tc := cfg.Residency.TrustList
	if !cfg.Residency.Enabled || !tc.Configured() {
		return nil, "", nil
	}
	st, err := store.GetTrustList(ctx, tc.Issuer)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, "no trust list from " + tc.Issuer + " has been accepted yet", nil
	}
	if err != nil {
		return nil, "", fmt.Errorf("reading the stored trust list: %w", err)
	}
	key, err := tc.TrustListKey()
	if err != nil {
		return nil, "", err
	}
	if tl, err = VerifyTrustList(st.Document, tc.Issuer, tc.KeyID, key); err != nil {
		return nil, "the stored trust list is not used: " + err.Error(), nil
	}
	if tl.Expired(now) {
		return nil, fmt.Sprintf("the stored trust list (version %d) expired at %s and is not used", tl.Version,
			time.UnixMilli(tl.ExpiresTS).UTC().Format(time.RFC3339)), nil
	}
	return tl, "", nil
}
