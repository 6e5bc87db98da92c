package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
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
		{"database.url", func(c *Config) { c.Database.URL = "mysql://x" }},
		{"database.max_open_conns", func(c *Config) { c.Database.MaxOpenConns = -1 }},
		{"registration.mode", func(c *Config) { c.Register.Mode = "sometimes" }},
		{"registration.min_password_length", func(c *Config) { c.Register.MinPasswordLength = -1 }},
		{"limits.max_request_bytes", func(c *Config) { c.Limits.MaxRequestBytes = 10 }},
		{"limits.requests_per_second", func(c *Config) { c.Limits.RequestsPerSecond = 0 }},
		{"limits.login_per_second", func(c *Config) { c.Limits.LoginBurst = 0 }},
		{"logging.level", func(c *Config) { c.Logging.Level = "loud" }},
		{"logging.format", func(c *Config) { c.Logging.Format = "xml" }},
		{"rooms.default_version", func(c *Config) { c.Rooms.DefaultVersion = "13" }},
		{"media.max_upload_bytes", func(c *Config) { c.Media.MaxUploadBytes = 100 }},
		{"media.uploads_per_second", func(c *Config) { c.Media.UploadBurst = 0 }},
		{"media.max_pending_uploads", func(c *Config) { c.Media.MaxPendingUploads = 0 }},
		{"media.max_image_pixels", func(c *Config) { c.Media.MaxImagePixels = -1 }},
		{"media.max_bytes_per_user", func(c *Config) { c.Media.MaxBytesPerUser = -1 }},
		{"media.thumbnail_memory_bytes", func(c *Config) { c.Media.ThumbnailMemoryBytes = 1000 }},
		{"media.thumbnails_per_second", func(c *Config) { c.Media.ThumbnailBurst = 0 }},
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
