package config

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// listen.federation needs exactly one certificate source; each mistake is
// named by its key.
func TestValidateTLS(t *testing.T) {
	pem := filepath.Join(t.TempDir(), "x.pem")
	if err := os.WriteFile(pem, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		key    string
		mutate func(*Config)
	}{
		{"listen.tls_certificate", func(c *Config) { c.Listen.TLSCertificate, c.Listen.TLSKey = pem, pem }},
		{"listen.acme.enabled", func(c *Config) { c.Listen.ACME.Enabled = true }},
		{"listen.federation", func(c *Config) { c.Listen.Federation = ":8448" }},
		{"listen.federation", func(c *Config) { c.Listen.Federation, c.Listen.TLSCertificate, c.Listen.TLSKey = "8448", pem, pem }},
		{"listen.tls_certificate", func(c *Config) { c.Listen.Federation, c.Listen.TLSCertificate = ":8448", pem }},
		{"listen.tls_key", func(c *Config) {
			c.Listen.Federation, c.Listen.TLSCertificate, c.Listen.TLSKey = ":8448", pem, "/nonexistent.pem"
		}},
		{"listen.acme.enabled", func(c *Config) {
			c.Listen.Federation, c.Listen.TLSCertificate, c.Listen.TLSKey, c.Listen.ACME.Enabled = ":8448", pem, pem, true
		}},
		{"listen.acme.directory_url", func(c *Config) {
			c.ServerName, c.Listen.Federation, c.Listen.ACME.Enabled, c.Listen.ACME.DirectoryURL = "example.org", ":8448", true, "http://acme.test/dir"
		}},
		{"listen.acme.email", func(c *Config) {
			c.ServerName, c.Listen.Federation, c.Listen.ACME.Enabled, c.Listen.ACME.Email = "example.org", ":8448", true, "Admin <a@b.c>"
		}},
		{"listen.acme.domains[0]", func(c *Config) {
			c.ServerName, c.Listen.Federation, c.Listen.ACME.Enabled = "10.0.0.1:8448", ":8448", true
		}},
		{"listen.acme.domains[1]", func(c *Config) {
			c.Listen.Federation, c.Listen.ACME.Enabled, c.Listen.ACME.Domains = ":8448", true, []string{"a.example", "bad name"}
		}},
		{"listen.acme.http_challenge", func(c *Config) {
			c.ServerName, c.Listen.Federation, c.Listen.ACME.Enabled, c.Listen.ACME.HTTPChallenge = "example.org", ":8448", true, "80"
		}},
	}
	for _, c := range cases {
		cfg := Default()
		c.mutate(cfg)
		var ke *KeyError
		if err := cfg.Validate(); !errors.As(err, &ke) || ke.Key != c.key {
			t.Errorf("%s: Validate() = %v", c.key, err)
		}
	}
	ok := Default()
	ok.ServerName = "example.org:8448"
	ok.Listen.Federation, ok.Listen.ACME.Enabled = ":8448", true
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	if d := ok.ACMEDomains(); !slices.Equal(d, []string{"example.org"}) {
		t.Errorf("default domains %v", d)
	}
	if dir := ok.ACMECacheDir(); dir != filepath.Join(ok.DataDir, "acme") {
		t.Errorf("default cache dir %s", dir)
	}
	files := Default()
	files.Listen.Federation, files.Listen.TLSCertificate, files.Listen.TLSKey = ":8448", pem, pem
	if err := files.Validate(); err != nil {
		t.Fatal(err)
	}
}
