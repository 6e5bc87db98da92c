package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/myelin-chat/myelin/internal/config"
	"github.com/myelin-chat/myelin/storage"
)

// TestTrustListCLI: keygen, sign and verify a trust list; a tampered one
// is refused with the reason and exit 1; `policy explain` reads the config
// and the store (the stored trust list, a room's recorded zone) and says
// per data kind what may flow and which rule decides.
func TestTrustListCLI(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildBinary(t)
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "consortium.key")
	out, code := runCLI(t, bin, "trust-list", "keygen", "--out", keyFile)
	m := regexp.MustCompile(`key_id: (ed25519:1)\npublic_key: (\S+)\n`).FindStringSubmatch(out)
	if code != 0 || m == nil {
		t.Fatalf("keygen: exit %d, %q", code, out)
	}
	pub := m[2]
	if _, code := runCLI(t, bin, "trust-list", "keygen", "--out", keyFile); code == 0 {
		t.Fatal("keygen overwrote an existing key file")
	}
	list := filepath.Join(dir, "list.json")
	signed := filepath.Join(dir, "signed.json")
	mustOK(t, os.WriteFile(list, []byte(`{"issuer":"consortium.example","version":1,"servers":{"b.example":"eu","c.example":"mars"}}`), 0o644))
	if out, code := runCLI(t, bin, "trust-list", "sign", "--key", keyFile, "--key-id", "ed25519:1", "--in", list, "--out", signed); code != 0 {
		t.Fatalf("sign: exit %d, %q", code, out)
	}
	doc, err := os.ReadFile(signed)
	mustOK(t, err)
	var parsed struct {
		IssuedTS int64 `json:"issued_ts"`
	}
	mustOK(t, json.Unmarshal(doc, &parsed))
	if parsed.IssuedTS < time.Now().Add(-time.Minute).UnixMilli() {
		t.Fatalf("sign did not fill issued_ts: %s", doc)
	}
	pinned := []string{"--issuer", "consortium.example", "--key-id", "ed25519:1", "--public-key", pub}
	out, code = runCLI(t, bin, append([]string{"trust-list", "verify", "--in", signed}, pinned...)...)
	if code != 0 || !strings.Contains(out, "OK: trust list version 1") || !regexp.MustCompile(`b\.example\s+eu`).MatchString(out) {
		t.Fatalf("verify: exit %d, %q", code, out)
	}
	tampered := filepath.Join(dir, "tampered.json")
	mustOK(t, os.WriteFile(tampered, []byte(strings.Replace(string(doc), `"eu"`, `"a"`, 1)), 0o644))
	out, code = runCLI(t, bin, append([]string{"trust-list", "verify", "--in", tampered}, pinned...)...)
	if code != 1 || !strings.Contains(out, "REFUSED") || !strings.Contains(out, "does not verify") {
		t.Fatalf("verify of a tampered list: exit %d, %q", code, out)
	}

	// A config pinning the key, with the list as the server last accepted it.
	dataDir := filepath.Join(dir, "data")
	cfgFile := filepath.Join(dir, "myelin.yaml")
	mustOK(t, os.WriteFile(cfgFile, []byte(fmt.Sprintf(`server_name: hs.example
data_dir: %s
residency:
  enabled: true
  zone: a
  zones:
    - name: a
      servers: ["hs.example"]
    - name: eu
      includes: [a]
      share: {presence: false}
  rooms:
    default_zone: a
  trust_list:
    file: %s
    issuer: consortium.example
    key_id: "ed25519:1"
    public_key: %s
    refresh: 1h
`, dataDir, signed, pub)), 0o644))
	out, code = runCLI(t, bin, "trust-list", "verify", "--in", signed, "--config", cfgFile)
	if code != 0 || !strings.Contains(out, `ignored here: c.example (zone "mars" is not defined here)`) {
		t.Fatalf("verify --config: exit %d, %q", code, out)
	}
	out, code = runCLI(t, bin, "policy", "explain", "--server", "b.example", "--config", cfgFile)
	if code != 0 || !strings.Contains(out, "zone (none)") || !regexp.MustCompile(`events\s+REFUSED\s+residency.unlisted_server`).MatchString(out) {
		t.Fatalf("explain before the list is stored: exit %d, %q", code, out)
	}
	cfg, err := config.Load(cfgFile)
	mustOK(t, err)
	ctx := context.Background()
	db, err := storage.Open(ctx, cfg.DatabaseURL(), 1)
	mustOK(t, err)
	mustOK(t, db.PutTrustList(ctx, storage.StoredTrustList{Issuer: "consortium.example", Version: 1, Document: doc, AcceptedTS: 1}))
	_, err = db.PinRoomResidency(ctx, storage.RoomResidency{RoomID: "!eu:hs.example", Zone: "eu", Rule: "residency.rooms.rules[0]",
		Source: "created", DecidedTS: 1})
	mustOK(t, err)
	db.Close()

	out, code = runCLI(t, bin, "policy", "explain", "--server", "b.example", "--room", "!eu:hs.example", "--config", cfgFile)
	for _, want := range []string{"trust list version in force: 1", "zone eu — the trust list (version 1) places it in zone eu",
		"Room !eu:hs.example: zone eu"} {
		if !strings.Contains(out, want) {
			t.Fatalf("explain: exit %d, %q lacks %q", code, out, want)
		}
	}
	for _, re := range []string{`join\s+allowed\s+residency.zones.eu.share.events`,
		`presence\s+REFUSED\s+residency.zones.eu.share.presence\s+the data-localization policy does not let presence go`} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Fatalf("explain: %q lacks %s", out, re)
		}
	}
	out, code = runCLI(t, bin, "policy", "explain", "--server", "b.example", "--room", "!a:hs.example", "--config", cfgFile, "--json")
	if code != 1 {
		t.Fatalf("explain of a room unknown here: exit %d, %q", code, out)
	}
	out, code = runCLI(t, bin, "policy", "explain", "--server", "hs.example", "--room", "!eu:hs.example", "--config", cfgFile, "--json")
	var e struct {
		ServerZone string `json:"server_zone"`
		Kinds      []struct {
			Kind    string `json:"kind"`
			Allowed bool   `json:"allowed"`
			Rule    string `json:"rule"`
		} `json:"kinds"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &e) != nil || e.ServerZone != "a" || len(e.Kinds) != 11 || !e.Kinds[4].Allowed ||
		e.Kinds[4].Rule != "residency.our_server" {
		t.Fatalf("explain --json for our server: exit %d, %q", code, out)
	}
}

func mustOK(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
