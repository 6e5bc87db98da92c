package residency

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/myelin-chat/myelin/internal/config"
)

func testConfig(t *testing.T) *config.Config {
	t.Helper()
	cfg := config.Default()
	cfg.ServerName = "a1.example"
	cfg.Residency = config.Residency{Enabled: true, Zone: "a",
		Zones: []config.ResidencyZone{
			{Name: "a", Servers: []string{"a1.example", "a2.example"}},
			{Name: "eu", Servers: []string{"*.example.de", "partner.fr"}, Includes: []string{"a"},
				Share: map[string]bool{"presence": false}, RequireEncryption: true},
			{Name: "open", Servers: []string{"*.open.example"}, Includes: []string{"a", "eu"}},
		},
		Rooms: config.ResidencyRooms{DefaultZone: "a", MayChoose: []string{"open"},
			Rules: []config.ResidencyRule{
				{Zone: "eu", Aliases: []string{"#eu-*:a1.example"}},
				{Zone: "eu", Creators: []string{"@eu-*:a1.example"}, MayChoose: []string{"a"}},
				{Zone: "open", RoomTypes: []string{"m.space"}, Creators: []string{"@admin:a1.example"}},
			}},
		TrustList: config.TrustList{Refresh: config.Duration{}},
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestServerZones(t *testing.T) {
	r, _ := Compile(testConfig(t), &TrustList{Version: 1, Servers: map[string]string{"b.example": "eu", "c.example": "nowhere"}})
	for server, want := range map[string]string{
		"a1.example": "a", "A2.Example.:8448": "a", "x.example.de": "eu", "partner.fr": "eu", "b.example": "eu",
		"c.example": "", "evil.example": "", "x.open.example": "open", "example.de": "",
	} {
		if got, _ := r.ServerZone(server); got != want {
			t.Errorf("ServerZone(%s) = %q, want %q", server, got, want)
		}
	}
}

func TestAdmitsAndShares(t *testing.T) {
	r, _ := Compile(testConfig(t), nil)
	cases := []struct {
		roomZone, server string
		kind             Kind
		allowed          bool
		rule             string
	}{
		{"a", "a2.example", Events, true, "residency.zones.a.share.events"},
		{"a", "partner.fr", Events, false, "residency.zones.a.includes"},
		{"a", "evil.example", Events, false, RuleUnlistedServer},
		{"eu", "partner.fr", Events, true, "residency.zones.eu.share.events"},
		{"eu", "a2.example", Events, true, "residency.zones.a.share.events"},
		{"eu", "partner.fr", Presence, false, "residency.zones.eu.share.presence"},
		{"eu", "x.open.example", Events, false, "residency.zones.eu.includes"},
		{"open", "partner.fr", Events, true, "residency.zones.eu.share.events"},
		{"a", "a1.example:8448", Media, true, RuleOurServer},
	}
	for _, c := range cases {
		d := r.Admits(c.roomZone, c.server, c.kind)
		if d.Allowed != c.allowed || d.Rule != c.rule {
			t.Errorf("Admits(%s, %s, %s) = %v %s, want %v %s", c.roomZone, c.server, c.kind, d.Allowed, d.Rule, c.allowed, c.rule)
		}
		if !d.Allowed && d.Reason == "" {
			t.Errorf("Admits(%s, %s, %s): a refusal without a reason", c.roomZone, c.server, c.kind)
		}
	}
	if d := r.Shares("partner.fr", Profile); !d.Allowed {
		t.Errorf("profiles to eu: %+v", d)
	}
	if got := r.AdmittedPatterns("eu"); !slices.Equal(got, []string{"*.example.de", "a1.example", "a2.example", "partner.fr"}) {
		t.Errorf("AdmittedPatterns(eu) = %v", got)
	}
	off := testConfig(t)
	off.Residency.Enabled = false
	ro, _ := Compile(off, nil)
	if d := ro.Admits("a", "evil.example", Events); !d.Allowed || d.Rule != RuleDisabled {
		t.Errorf("disabled policy refused: %+v", d)
	}
}

func TestClassify(t *testing.T) {
	r, _ := Compile(testConfig(t), nil)
	cases := []struct {
		facts RoomFacts
		zone  string
		rule  string
		err   bool
	}{
		{RoomFacts{Creator: "@bob:a1.example"}, "a", "residency.rooms.default_zone", false},
		{RoomFacts{Creator: "@bob:a1.example", Aliases: []string{"#EU-sales:a1.example"}}, "eu", "residency.rooms.rules[0]", false},
		{RoomFacts{Creator: "@eu-anna:a1.example"}, "eu", "residency.rooms.rules[1]", false},
		{RoomFacts{Creator: "@eu-anna:a1.example", Choice: "a"}, "a", "residency.rooms.rules[1].may_choose", false},
		{RoomFacts{Creator: "@bob:a1.example", Choice: "open"}, "open", "residency.rooms.may_choose", false},
		{RoomFacts{Creator: "@bob:a1.example", Choice: "eu"}, "", "", true},
		{RoomFacts{Creator: "@admin:a1.example", RoomType: "m.space"}, "open", "residency.rooms.rules[2]", false},
		{RoomFacts{Creator: "@admin:a1.example"}, "a", "residency.rooms.default_zone", false},
	}
	for _, c := range cases {
		got, err := r.Classify(c.facts)
		var ce *ChoiceError
		if c.err {
			if !errors.As(err, &ce) || !strings.Contains(err.Error(), "you may choose a, open") {
				t.Errorf("Classify(%+v): err %v, want a ChoiceError", c.facts, err)
			}
			continue
		}
		if err != nil || got.Zone != c.zone || got.Rule != c.rule {
			t.Errorf("Classify(%+v) = %+v, %v; want %s by %s", c.facts, got, err, c.zone, c.rule)
		}
	}
}

func TestFingerprintFollowsTheTrustList(t *testing.T) {
	cfg := testConfig(t)
	r1, _ := Compile(cfg, nil)
	r2, _ := Compile(cfg, &TrustList{Version: 2, Servers: map[string]string{"b.example": "eu"}})
	r3, _ := Compile(cfg, &TrustList{Version: 2, Servers: map[string]string{"b.example": "eu"}})
	if r1.Fingerprint() == r2.Fingerprint() || r2.Fingerprint() != r3.Fingerprint() {
		t.Error("the fingerprint does not follow the policy's content")
	}
}

func TestTrustListSignVerify(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	otherPub, _, _ := ed25519.GenerateKey(rand.Reader)
	signed, err := SignTrustList(TrustList{Issuer: "coord.example", Version: 3, IssuedTS: 1,
		Servers: map[string]string{"partner.fr": "eu", "b.example": "eu"}}, "ed25519:1", priv)
	if err != nil {
		t.Fatal(err)
	}
	tl, err := VerifyTrustList(signed, "coord.example", "ed25519:1", pub)
	if err != nil || tl.Version != 3 || tl.Servers["b.example"] != "eu" {
		t.Fatalf("verify: %+v, %v", tl, err)
	}
	tampered := []byte(strings.Replace(string(signed), `"b.example": "eu"`, `"evil.example": "eu"`, 1))
	bad := map[string]func() error{
		"tampered":     func() error { _, err := VerifyTrustList(tampered, "coord.example", "ed25519:1", pub); return err },
		"other key":    func() error { _, err := VerifyTrustList(signed, "coord.example", "ed25519:1", otherPub); return err },
		"other id":     func() error { _, err := VerifyTrustList(signed, "coord.example", "ed25519:2", pub); return err },
		"wrong issuer": func() error { _, err := VerifyTrustList(signed, "other.example", "ed25519:1", pub); return err },
		"not json":     func() error { _, err := VerifyTrustList([]byte("{"), "coord.example", "ed25519:1", pub); return err },
		// One server under two names (case, port) in two zones: its zone
		// would be whichever Compile met last.
		"one host two zones": func() error {
			s, _ := SignTrustList(TrustList{Issuer: "coord.example", Version: 1,
				Servers: map[string]string{"partner.fr": "eu", "PARTNER.fr:8448": "open"}}, "ed25519:1", priv)
			_, err := VerifyTrustList(s, "coord.example", "ed25519:1", pub)
			return err
		},
		"bad name": func() error {
			s, _ := SignTrustList(TrustList{Issuer: "coord.example", Version: 1, Servers: map[string]string{"bad name": "eu"}}, "ed25519:1", priv)
			_, err := VerifyTrustList(s, "coord.example", "ed25519:1", pub)
			return err
		},
	}
	for name, f := range bad {
		if err := f(); !errors.Is(err, ErrTrustList) {
			t.Errorf("%s: err %v, want ErrTrustList", name, err)
		}
	}
}

func TestKindsMatchConfig(t *testing.T) {
	var names []string
	for _, k := range Kinds {
		names = append(names, string(k))
	}
	if !slices.Equal(names, config.DataKinds) {
		t.Errorf("residency.Kinds %v != config.DataKinds %v", names, config.DataKinds)
	}
}
