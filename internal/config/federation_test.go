package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

func TestValidateFederation(t *testing.T) {
	cases := []struct {
		key    string
		mutate func(*Config)
	}{
		{"federation.key_validity", func(c *Config) { c.Federation.KeyValidity.Duration = 0 }},
		{"federation.sender.max_concurrent", func(c *Config) { c.Federation.Sender.MaxConcurrent = 0 }},
		{"federation.sender.min_backoff", func(c *Config) { c.Federation.Sender.MinBackoff.Duration = 0 }},
		{"federation.sender.min_backoff", func(c *Config) { c.Federation.Sender.MaxBackoff.Duration = time.Second }},
		{"federation.sender.max_queued_per_room", func(c *Config) { c.Federation.Sender.KeepPerRoom = 5000 }},
		{"federation.sender.request_timeout", func(c *Config) { c.Federation.Sender.RequestTimeout.Duration = 0 }},
		{"federation.sender.refusals_before_drop", func(c *Config) { c.Federation.Sender.RefusalsBeforeDrop = 0 }},
		{"federation.key_validity", func(c *Config) { c.Federation.KeyValidity.Duration = 30 * 24 * 3600e9 }},
		{"federation.trusted_key_servers[0].server_name", func(c *Config) {
			c.Federation.TrustedKeyServers = []TrustedKeyServer{{ServerName: "bad name"}}
		}},
		{"federation.trusted_key_servers[0].verify_keys", func(c *Config) {
			c.Federation.TrustedKeyServers = []TrustedKeyServer{{ServerName: "n.example", VerifyKeys: map[string]string{"ed25519:a": "short"}}}
		}},
		{"federation.trusted_key_servers[0].verify_keys", func(c *Config) {
			c.Federation.TrustedKeyServers = []TrustedKeyServer{{ServerName: "n.example",
				VerifyKeys: map[string]string{"rsa:a": "Noi6WqcDj0QmPxCNQqgezwTlBKrfqehY1u2FyWP9uYw"}}}
		}},
		{"federation.hosts", func(c *Config) { c.Federation.Hosts = map[string]string{"a.test": "no-port"} }},
		{"federation.hosts", func(c *Config) { c.Federation.Hosts = map[string]string{"bad name": "127.0.0.1:1"} }},
		{"federation.insecure_http_hosts", func(c *Config) { c.Federation.InsecureHTTPHosts = []string{"unmapped.test"} }},
		{"federation.trusted_ca_file", func(c *Config) { c.Federation.TrustedCAFile = "/nonexistent/ca.pem" }},
		{"federation.allowed_servers", func(c *Config) { c.Federation.DeniedServers = []string{" "} }},
		{"federation.allowed_servers", func(c *Config) { c.Federation.AllowedServers = []string{"a.example:8448"} }},
		{"federation.allowed_servers", func(c *Config) { c.Federation.DeniedServers = []string{"[::1]:8448"} }},
		{"federation.allowed_private_networks[0]", func(c *Config) { c.Federation.AllowedPrivateNetworks = []string{"10.0.0.0/33"} }},
		{"federation.allowed_private_networks[1]", func(c *Config) { c.Federation.AllowedPrivateNetworks = []string{"10.0.0.0/8", "intranet"} }},
		{"federation.allowed_private_networks[0]", func(c *Config) { c.Federation.AllowedPrivateNetworks = []string{"0.0.0.0/0"} }},
		{"federation.allowed_private_networks[0]", func(c *Config) { c.Federation.AllowedPrivateNetworks = []string{"::/0"} }},
		{"federation.allowed_private_networks[0]", func(c *Config) { c.Federation.AllowedPrivateNetworks = []string{"::ffff:0.0.0.0/96"} }},
		{"federation.allowed_private_networks[0]", func(c *Config) { c.Federation.AllowedPrivateNetworks = []string{"fe80::1%eth0/64"} }},
		{"federation.requests_per_second", func(c *Config) { c.Federation.Burst = 0 }},
		{"federation.notary_requests_per_second", func(c *Config) { c.Federation.NotaryBurst = 0 }},
		{"federation.key_fetches_per_second", func(c *Config) { c.Federation.KeyFetchesPerSecond = -1 }},
	}
	for _, c := range cases {
		cfg := Default()
		c.mutate(cfg)
		var ke *KeyError
		if err := cfg.Validate(); !errors.As(err, &ke) || ke.Key != c.key {
			t.Errorf("%s: Validate() = %v (%+v)", c.key, err, cfg.Federation.AllowedPrivateNetworks)
		}
	}
	ok := Default()
	ok.Federation.Hosts = map[string]string{"a.test": "127.0.0.1:8448"}
	ok.Federation.InsecureHTTPHosts = []string{"a.test"}
	ok.Federation.DeniedServers = []string{"[::1]", "*.evil.example"}
	ok.Federation.TrustedKeyServers = []TrustedKeyServer{{ServerName: "n.example",
		VerifyKeys: map[string]string{"ed25519:auto": "Noi6WqcDj0QmPxCNQqgezwTlBKrfqehY1u2FyWP9uYw"}}}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
}

// federation.allowed_private_networks: CIDR ranges or single addresses,
// masked, IPv4-mapped ranges as IPv4; a bad entry fails the load, naming it.
func TestAllowedPrivateNetworks(t *testing.T) {
	f := Federation{AllowedPrivateNetworks: []string{"10.1.2.3/16", "192.168.7.7", "::ffff:172.16.0.0/108", "fd00:1::/64"}}
	var got []string
	for _, p := range f.AllowedPrivatePrefixes() {
		got = append(got, p.String())
	}
	if want := "10.1.0.0/16 192.168.7.7/32 172.16.0.0/12 fd00:1::/64"; strings.Join(got, " ") != want {
		t.Fatalf("prefixes %v, want %s", got, want)
	}
	p := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(p, []byte("server_name: example.org\nfederation:\n  allowed_private_networks: [\"10.0.0.0/8\", \"10.0.0.300/8\"]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(p)
	if err == nil || !strings.Contains(err.Error(), "federation.allowed_private_networks[1]") || !strings.Contains(err.Error(), "10.0.0.300/8") {
		t.Fatalf("Load: %v", err)
	}
}

func TestFederationEnabled(t *testing.T) {
	for _, tc := range []struct {
		name       string
		zero, on   bool
		serverName string
		want       bool
	}{
		{"file config", false, true, "example.org", true},
		{"file config, localhost", false, true, "localhost", true},
		{"switched off", false, false, "example.org", false},
		{"zero-config localhost", true, true, "localhost", false},
		{"zero-config localhost:8008", true, true, "localhost:8008", false},
		{"zero-config with a real name", true, true, "example.org", true},
	} {
		c := Default()
		c.ZeroConfig, c.Federation.Enabled, c.ServerName = tc.zero, tc.on, tc.serverName
		if got := c.FederationEnabled(); got != tc.want {
			t.Errorf("%s: %v", tc.name, got)
		}
	}
}

// The template's federation section parses to the defaults.
func TestTemplateFederation(t *testing.T) {
	p := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(p, []byte(Template("example.org", "s")), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	def := Default().Federation
	got, _ := yaml.Marshal(cfg.Federation)
	want, _ := yaml.Marshal(def)
	if string(got) != string(want) {
		t.Fatalf("template federation section:\n%s\nwant:\n%s", got, want)
	}
}

// Server names follow the spec grammar, with bounds: anything else is
// refused before a fetch, a policy decision or a cache entry.
func TestParseServerName(t *testing.T) {
	for name, want := range map[string]struct {
		host string
		port int
	}{
		"example.com":        {"example.com", 0},
		"Example.COM:8448":   {"Example.COM", 8448},
		"localhost:1":        {"localhost", 1},
		"1.2.3.4":            {"1.2.3.4", 0},
		"1.2.3.4:65535":      {"1.2.3.4", 65535},
		"[1234:5678::abcd]":  {"[1234:5678::abcd]", 0},
		"[::1]:8448":         {"[::1]", 8448},
		"a-b.c--d.example":   {"a-b.c--d.example", 0},
		"xn--bcher-kva.test": {"xn--bcher-kva.test", 0},
	} {
		host, port, err := ParseServerName(name)
		if err != nil || host != want.host || port != want.port {
			t.Errorf("%q: %q %d %v, want %q %d", name, host, port, err, want.host, want.port)
		}
	}
	for _, bad := range []string{
		"", "example.com:", "example.com:0", "example.com:99999", "example.com:65536", "example.com:+80",
		"example.com:080000", "example.com:8448:1", "::1", "[::1", "[::1]x", "[1.2.3.4]", "[::1%eth0]",
		"[" + strings.Repeat("1", 46) + "]", "256.1.1.1", "1.2.3", "01.2.3.4", "evil.example.com.", ".example.com",
		"a..b", "under_score.test", "bad name", "ünicode.test", strings.Repeat("a", 64) + ".test",
		strings.Repeat("a.", 116) + "aa", strings.Repeat("a", 250) + ":8448",
	} {
		if host, port, err := ParseServerName(bad); err == nil {
			t.Errorf("%q accepted as %q %d", bad, host, port)
		}
	}
}
