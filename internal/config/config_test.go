package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// TestValidateNamesTheKey: every invalid value is reported with its key.
func TestValidateNamesTheKey(t *testing.T) {
	cases := []struct {
		key    string
		mutate func(*Config)
	}{
		{"server_name", func(c *Config) { c.ServerName = "" }},
		{"server_name", func(c *Config) { c.ServerName = "bad name!" }},
		{"public_base_url", func(c *Config) { c.PublicBaseURL = "ftp://x" }},
		{"data_dir", func(c *Config) { c.DataDir = "" }},
		{"listen.http", func(c *Config) { c.Listen.HTTP = "nonsense" }},
		{"listen.metrics", func(c *Config) { c.Listen.Metrics = "nonsense" }},
		{"listen.trusted_proxies[1]", func(c *Config) { c.Listen.TrustedProxies = []string{"10.0.0.0/8", "proxy.example"} }},
		{"database.url", func(c *Config) { c.Database.URL = "mysql://x" }},
		{"database.max_open_conns", func(c *Config) { c.Database.MaxOpenConns = -1 }},
		{"registration.mode", func(c *Config) { c.Register.Mode = "sometimes" }},
		{"registration.min_password_length", func(c *Config) { c.Register.MinPasswordLength = -1 }},
		{"limits.max_request_bytes", func(c *Config) { c.Limits.MaxRequestBytes = 10 }},
		{"limits.requests_per_second", func(c *Config) { c.Limits.RequestsPerSecond = 0 }},
		{"limits.login_per_second", func(c *Config) { c.Limits.LoginBurst = 0 }},
		{"logging.level", func(c *Config) { c.Logging.Level = "loud" }},
		{"logging.format", func(c *Config) { c.Logging.Format = "xml" }},
		{"logging.access_log", func(c *Config) { c.Logging.AccessLog = "verbose" }},
		{"calls.turn_uris[0]", func(c *Config) {
			c.Calls.TurnURIs, c.Calls.TurnSharedSecret = []string{"https://turn.example.org"}, "s"
		}},
		{"calls.turn_uris", func(c *Config) { c.Calls.TurnURIs = []string{"turn:turn.example.org"} }},
		{"calls.turn_shared_secret", func(c *Config) {
			c.Calls.TurnSharedSecret, c.Calls.TurnUsername, c.Calls.TurnPassword = "s", "u", "p"
		}},
		{"calls.turn_username", func(c *Config) { c.Calls.TurnUsername = "u" }},
		{"calls.turn_user_lifetime", func(c *Config) { c.Calls.TurnUserLifetime.Duration = time.Second }},
		{"calls.rtc_foci[0].type", func(c *Config) { c.Calls.RTCFoci = []RTCFocus{{Type: "mesh"}} }},
		{"calls.rtc_foci[0].livekit_service_url", func(c *Config) { c.Calls.RTCFoci = []RTCFocus{{Type: "livekit"}} }},
		{"rooms.default_version", func(c *Config) { c.Rooms.DefaultVersion = "13" }},
		{"media.max_upload_bytes", func(c *Config) { c.Media.MaxUploadBytes = 100 }},
		{"media.uploads_per_second", func(c *Config) { c.Media.UploadBurst = 0 }},
		{"media.max_pending_uploads", func(c *Config) { c.Media.MaxPendingUploads = 0 }},
		{"media.max_image_pixels", func(c *Config) { c.Media.MaxImagePixels = -1 }},
		{"support.support_page", func(c *Config) { c.Support.SupportPage = "javascript:alert(1)" }},
		{"support.contacts[0]", func(c *Config) { c.Support.Contacts = []SupportContact{{Role: "m.role.admin"}} }},
		{"support.contacts[0].matrix_id", func(c *Config) {
			c.Support.Contacts = []SupportContact{{MatrixID: "admin", Role: "m.role.admin"}}
		}},
		{"support.contacts[0].matrix_id", func(c *Config) {
			c.Support.Contacts = []SupportContact{{MatrixID: "@admin:bad host", Role: "m.role.admin"}}
		}},
		{"support.contacts[0].email_address", func(c *Config) {
			c.Support.Contacts = []SupportContact{{EmailAddress: "Admin <a@example.org>", Role: "m.role.admin"}}
		}},
		{"support.contacts[0].email_address", func(c *Config) {
			c.Support.Contacts = []SupportContact{{EmailAddress: "nobody", Role: "m.role.admin"}}
		}},
		{"support.contacts[0].role", func(c *Config) { c.Support.Contacts = []SupportContact{{MatrixID: "@a:example.org"}} }},
		{"support.contacts[0].role", func(c *Config) {
			c.Support.Contacts = []SupportContact{{MatrixID: "@a:example.org", Role: "m.role.janitor"}}
		}},
		{"support.contacts[1].role", func(c *Config) {
			c.Support.Contacts = []SupportContact{{MatrixID: "@a:example.org", Role: "m.role.admin"}, {EmailAddress: "a@example.org", Role: "admin"}}
		}},
		{"media.max_bytes_per_user", func(c *Config) { c.Media.MaxBytesPerUser = -1 }},
		{"media.thumbnail_memory_bytes", func(c *Config) { c.Media.ThumbnailMemoryBytes = 1000 }},
		{"media.thumbnails_per_second", func(c *Config) { c.Media.ThumbnailBurst = 0 }},
		{"media.max_remote_bytes", func(c *Config) { c.Media.MaxRemoteBytes = -1 }},
		{"media.remote_cache_bytes", func(c *Config) { c.Media.RemoteCacheBytes = 0 }},
	}
	for _, c := range cases {
		cfg := Default()
		c.mutate(cfg)
		err := cfg.Validate()
		var ke *KeyError
		if !errors.As(err, &ke) || ke.Key != c.key {
			t.Errorf("%s: Validate() = %v, want a KeyError for %s", c.key, err, c.key)
			continue
		}
		if !strings.HasPrefix(err.Error(), c.key+": ") {
			t.Errorf("%s: message %q does not start with the key", c.key, err)
		}
	}
	if err := Default().Validate(); err != nil {
		t.Fatalf("defaults invalid: %v", err)
	}
	ok := Default()
	ok.Support = Support{SupportPage: "https://example.org/help", Contacts: []SupportContact{
		{MatrixID: "@admin:example.org", EmailAddress: "admin@example.org", Role: "m.role.admin"},
		{EmailAddress: "security@example.org", Role: "m.role.security"},
		{MatrixID: "@Legacy:other.example:8448", Role: "org.example.moderation"},
	}}
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid support section rejected: %v", err)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	sup, err := Load(write("support.yaml", "support:\n  contacts:\n    - matrix_id: \"@admin:example.org\"\n      role: m.role.admin\n  support_page: https://example.org/help\n"))
	if err != nil {
		t.Fatal(err)
	}
	if want := (Support{SupportPage: "https://example.org/help", Contacts: []SupportContact{{MatrixID: "@admin:example.org", Role: "m.role.admin"}}}); !reflect.DeepEqual(sup.Support, want) {
		t.Fatalf("support section loaded as %+v, want %+v", sup.Support, want)
	}
	if _, err := Load(write("badsupport.yaml", "support:\n  contacts:\n    - role: m.role.admin\n")); err == nil || !strings.Contains(err.Error(), "support.contacts[0]") {
		t.Fatalf("a contact without matrix_id or email_address: %v", err)
	}
	cfg, err := Load(write("empty.yaml", ""))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Register.Mode != RegistrationToken {
		t.Fatalf("a config file must default to token registration, got %q", cfg.Register.Mode)
	}
	if _, err := Load(write("unknown.yaml", "server_name: example.org\nno_such_key: 1\n")); err == nil || !strings.Contains(err.Error(), "no_such_key") {
		t.Fatalf("unknown key: %v", err)
	}
	if _, err := Load(write("bad.yaml", "registration:\n  mode: maybe\n")); err == nil || !strings.Contains(err.Error(), "registration.mode") {
		t.Fatalf("bad value: %v", err)
	}
	if _, err := Load(write("dur.yaml", "limits:\n  access_token_lifetime: soon\n")); err == nil {
		t.Fatal("bad duration accepted")
	}
	// The generated template loads as is.
	cfg, err = Load(write("template.yaml", Template("example.org", "s3cret")))
	if err != nil {
		t.Fatalf("template does not load: %v", err)
	}
	if cfg.ServerName != "example.org" || cfg.Register.SharedSecret != "s3cret" {
		t.Fatalf("template values: %+v", cfg)
	}
}
