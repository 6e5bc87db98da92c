// Package config defines Myelin's configuration: defaults for the zero-config
// mode, loading and validating a YAML file, and the commented template written
// by `myelin generate-config`.
package config

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/mail"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
	"maunium.net/go/mautrix/id"
)

// Registration modes.
const (
	RegistrationOpen   = "open"   // anyone may register (m.login.dummy)
	RegistrationToken  = "token"  // a registration token is required
	RegistrationClosed = "closed" // only admins and the shared secret create users
)

// Config is the whole server configuration.
type Config struct {
	ServerName    string `yaml:"server_name"`
	PublicBaseURL string `yaml:"public_base_url"`
	DataDir       string `yaml:"data_dir"`

	Listen   Listen       `yaml:"listen"`
	Database Database     `yaml:"database"`
	Register Registration `yaml:"registration"`
	Limits   Limits       `yaml:"limits"`
	Logging  Logging      `yaml:"logging"`
	Rooms    Rooms        `yaml:"rooms"`
	Presence Presence     `yaml:"presence"`
	Media    Media        `yaml:"media"`
	Support  Support      `yaml:"support"`
	Push     Push         `yaml:"push"`
	Calls    Calls        `yaml:"calls"`

	ServerNotices ServerNotices `yaml:"server_notices"`

	Federation Federation `yaml:"federation"`

	Retention Retention `yaml:"retention"`

	Residency Residency `yaml:"residency"`

	// ZeroConfig is set when no config file was given: registration is open and
	// the server only listens on loopback.
	ZeroConfig bool `yaml:"-"`
}

// Listen holds listener addresses.
type Listen struct {
	// HTTP serves the client-server API (and federation when no separate
	// federation listener is set), plain HTTP, usually behind a TLS proxy.
	HTTP string `yaml:"http"`
	// Metrics serves /metrics on its own address when set; otherwise /metrics is
	// served on the HTTP listener to loopback clients only.
	Metrics string `yaml:"metrics"`
	// TrustedProxies are the reverse proxies (IP addresses or CIDR prefixes)
	// whose X-Forwarded-For is believed: a request from one of them comes from
	// the rightmost address in that header that is not itself a trusted proxy.
	// Empty: the peer address, whatever the headers say.
	TrustedProxies []string `yaml:"trusted_proxies"`
	// Federation, when set (e.g. ":8448"), is a TLS listener of Myelin's own
	// serving the whole API (federation, keys and the client API), so that
	// other servers reach us without a reverse proxy. Its certificate comes
	// from TLSCertificate/TLSKey (PEM files, reread on SIGHUP) or from ACME.
	Federation     string `yaml:"federation"`
	TLSCertificate string `yaml:"tls_certificate"`
	TLSKey         string `yaml:"tls_key"`
	ACME           ACME   `yaml:"acme"`
}

// ACME configures automatic certificates for listen.federation.
type ACME struct {
	Enabled bool `yaml:"enabled"`
	// DirectoryURL is the ACME directory; empty: Let's Encrypt's production one.
	DirectoryURL string `yaml:"directory_url"`
	// Email is the account's contact at the ACME server (optional).
	Email string `yaml:"email"`
	// CacheDir keeps the account key and certificates; empty: <data_dir>/acme.
	CacheDir string `yaml:"cache_dir"`
	// Domains are the names certificates are obtained for; empty: the host
	// of server_name.
	Domains []string `yaml:"domains"`
	// HTTPChallenge, when set (e.g. ":80"), serves HTTP-01 challenges there
	// (and redirects everything else to HTTPS). Without it only TLS-ALPN-01
	// is answered, which the ACME server checks on port 443.
	HTTPChallenge string `yaml:"http_challenge"`
}

// ACMECacheDir is listen.acme.cache_dir or <data_dir>/acme.
func (c *Config) ACMECacheDir() string {
	if c.Listen.ACME.CacheDir != "" {
		return c.Listen.ACME.CacheDir
	}
	return filepath.Join(c.DataDir, "acme")
}

// ACMEDomains is listen.acme.domains or the host of server_name.
func (c *Config) ACMEDomains() []string {
	if len(c.Listen.ACME.Domains) > 0 {
		return c.Listen.ACME.Domains
	}
	host, _, err := ParseServerName(c.ServerName)
	if err != nil {
		return nil
	}
	return []string{host}
}

// TrustedProxyPrefixes returns listen.trusted_proxies parsed (a bare address
// is a one-address prefix). Entries that do not parse are left out: Validate
// refuses them.
func (l Listen) TrustedProxyPrefixes() []netip.Prefix {
	var out []netip.Prefix
	for _, s := range l.TrustedProxies {
		if p, ok := parseAddrOrPrefix(s); ok {
			out = append(out, p)
		}
	}
	return out
}

func parseAddrOrPrefix(s string) (netip.Prefix, bool) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), true
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), true
	}
	return netip.Prefix{}, false
}

// Push configures push notifications (pushers).
type Push struct {
	// AllowPrivateGateways lets http pushers name a push gateway on a
	// loopback, private or otherwise non-public address: for development
	// and tests only, as any user could then make the server call its own
	// network.
	AllowPrivateGateways bool `yaml:"allow_private_gateways"`
	// Delivery tunes the delivery of notifications to push gateways (push.go).
	Delivery PushDelivery `yaml:"delivery"`
}

// Database selects and tunes the store.
type Database struct {
	// URL: empty or "sqlite:PATH" for embedded SQLite, "postgres://..." for PostgreSQL.
	URL          string `yaml:"url"`
	MaxOpenConns int    `yaml:"max_open_conns"`
}

// Registration controls who may create accounts.
type Registration struct {
	Mode string `yaml:"mode"`
	// SharedSecret enables Synapse-compatible /_synapse/admin/v1/register.
	SharedSecret string `yaml:"shared_secret"`
	// Tokens are registration tokens accepted in addition to those stored in the database.
	Tokens []string `yaml:"tokens"`
	// ReservedUsernames are localparts (or prefixes ending in '*') no user may register: M_EXCLUSIVE.
	ReservedUsernames []string `yaml:"reserved_usernames"`
	MinPasswordLength int      `yaml:"min_password_length"`
}

// Limits caps request sizes and rates.
type Limits struct {
	MaxRequestBytes int64 `yaml:"max_request_bytes"`
	// RequestsPerSecond and Burst apply per client IP and, once authenticated, per user.
	RequestsPerSecond float64 `yaml:"requests_per_second"`
	Burst             int     `yaml:"burst"`
	// LoginPerSecond and LoginBurst apply to /login and /register per IP.
	LoginPerSecond float64 `yaml:"login_per_second"`
	LoginBurst     int     `yaml:"login_burst"`
	// CreateRoomPerSecond and CreateRoomBurst apply to POST /createRoom per
	// user: creating a room writes a few dozen rows at least.
	CreateRoomPerSecond float64 `yaml:"create_room_per_second"`
	CreateRoomBurst     int     `yaml:"create_room_burst"`
	// AccessTokenLifetime is how long an access token lives when the client asked
	// for a refresh token; 0 disables expiry.
	AccessTokenLifetime Duration `yaml:"access_token_lifetime"`
}

// Logging controls log/slog output.
type Logging struct {
	Level  string `yaml:"level"`  // debug, info, warn, error
	Format string `yaml:"format"` // text or json
	// AccessLog is the level of the access log's line per HTTP request
	// (method, route pattern, status, duration, user, request ID): debug,
	// info, warn or error, or off. Answers of 5xx are logged at error; a
	// request its client cancelled is logged as 499 (nginx's convention).
	AccessLog string `yaml:"access_log"`
}

// Calls configures voice and video calls: TURN relays for 1:1 calls (GET
// /voip/turnServer) and the MatrixRTC foci of group calls (Element Call),
// advertised in /.well-known/matrix/client.
type Calls struct {
	// TurnURIs are the TURN (or STUN) URIs clients may use, e.g.
	// "turns:turn.example.org:5349?transport=tcp". None: no TURN is offered.
	TurnURIs []string `yaml:"turn_uris"`
	// TurnSharedSecret is coturn's static-auth-secret (use-auth-secret):
	// each user gets short-lived credentials derived from it.
	TurnSharedSecret string `yaml:"turn_shared_secret"`
	// TurnUsername and TurnPassword are static credentials, for a TURN
	// server without the shared-secret scheme (every user gets the same).
	TurnUsername string `yaml:"turn_username"`
	TurnPassword string `yaml:"turn_password"`
	// TurnUserLifetime is how long shared-secret credentials stay valid.
	TurnUserLifetime Duration `yaml:"turn_user_lifetime"`
	// RTCFoci are advertised as org.matrix.msc4143.rtc_foci (MSC4143).
	RTCFoci []RTCFocus `yaml:"rtc_foci"`
}

// RTCFocus is a MatrixRTC focus: for type livekit, the URL of the LiveKit
// JWT service (lk-jwt-service) in front of the LiveKit SFU.
type RTCFocus struct {
	Type              string `yaml:"type" json:"type"`
	LiveKitServiceURL string `yaml:"livekit_service_url" json:"livekit_service_url,omitempty"`
}

// TurnConfigured reports whether /voip/turnServer has credentials to give.
func (c Calls) TurnConfigured() bool {
	return len(c.TurnURIs) > 0 && (c.TurnSharedSecret != "" || c.TurnUsername != "")
}

// Rooms holds room defaults.
type Rooms struct {
	DefaultVersion string `yaml:"default_version"`
}

// Presence can be switched off entirely (metadata minimization).
type Presence struct {
	Enabled bool `yaml:"enabled"`
}

// ServerNotices configures the system user that sends server notices
// (admin API /_synapse/admin/v1/send_server_notice) and the rooms it sends
// them in. The localpart is reserved: nobody can register it.
type ServerNotices struct {
	Enabled             bool   `yaml:"enabled"`
	SystemUserLocalpart string `yaml:"system_user_localpart"`
	RoomName            string `yaml:"room_name"`
}

var serverNoticesLocalpartRE = regexp.MustCompile(`^[a-z0-9._=\-/+]+$`)

// Support is served as /.well-known/matrix/support (MSC1929, spec v1.10):
// how to reach the server's administrators. Unset (no contacts, no page): 404.
type Support struct {
	Contacts    []SupportContact `yaml:"contacts" json:"contacts,omitempty"`
	SupportPage string           `yaml:"support_page" json:"support_page,omitempty"`
}

// SupportContact is one way to reach an administrator: a Matrix ID and/or
// an email address, with a role (m.role.admin, m.role.security or a
// namespaced identifier of one's own).
type SupportContact struct {
	MatrixID     string `yaml:"matrix_id" json:"matrix_id,omitempty"`
	EmailAddress string `yaml:"email_address" json:"email_address,omitempty"`
	Role         string `yaml:"role" json:"role"`
}

// Set reports whether there is anything to serve.
func (s Support) Set() bool { return len(s.Contacts) > 0 || s.SupportPage != "" }

// Media configures the content repository (mediaapi).
type Media struct {
	// MaxUploadBytes caps one upload (413 M_TOO_LARGE beyond); advertised as m.upload.size.
	MaxUploadBytes int64 `yaml:"max_upload_bytes"`
	// LegacyUnauthenticated serves the deprecated unauthenticated
	// /_matrix/media/v3/download and /thumbnail endpoints. Off, they are
	// "frozen" as the spec asks of servers since v1.12: 404 M_NOT_FOUND.
	LegacyUnauthenticated bool `yaml:"legacy_unauthenticated"`
	// URLPreviews enables GET /media/preview_url (the server fetches the URLs users send).
	URLPreviews bool `yaml:"url_previews"`
	// URLPreviewAllowPrivate lets previews fetch from private networks
	// (RFC 1918, CGNAT, IPv6 unique local): for closed deployments whose
	// linked sites live there. Loopback and link-local stay refused.
	URLPreviewAllowPrivate bool `yaml:"url_preview_allow_private"`
	// UploadsPerSecond and UploadBurst rate-limit uploads and creates per user.
	UploadsPerSecond float64 `yaml:"uploads_per_second"`
	UploadBurst      int     `yaml:"upload_burst"`
	// MaxPendingUploads caps a user's created-but-not-uploaded media IDs.
	MaxPendingUploads int `yaml:"max_pending_uploads"`
	// MaxImagePixels is the largest image (width × height) the server thumbnails.
	MaxImagePixels int64 `yaml:"max_image_pixels"`
	// MaxBytesPerUser is a user's upload quota: the total size of the media
	// they uploaded (403 M_FORBIDDEN beyond). 0 is unlimited.
	MaxBytesPerUser int64 `yaml:"max_bytes_per_user"`
	// ThumbnailMemoryBytes bounds the memory of the images being decoded for
	// thumbnails at once (estimated from each image's size and pixel format).
	ThumbnailMemoryBytes int64 `yaml:"thumbnail_memory_bytes"`
	// ThumbnailsPerSecond and ThumbnailBurst rate-limit thumbnail generation
	// per user (cached thumbnails are not counted).
	ThumbnailsPerSecond float64 `yaml:"thumbnails_per_second"`
	ThumbnailBurst      int     `yaml:"thumbnail_burst"`
	// MaxRemoteBytes caps one file fetched from another server (502
	// M_TOO_LARGE beyond); 0 is media.max_upload_bytes.
	MaxRemoteBytes int64 `yaml:"max_remote_bytes"`
	// RemoteCacheBytes is the budget of the cache of other servers' media:
	// beyond it the least recently used remote files are evicted (local
	// uploads never are).
	RemoteCacheBytes int64 `yaml:"remote_cache_bytes"`
}

// RemoteMaxBytes is the largest file fetched from another server.
func (m Media) RemoteMaxBytes() int64 {
	if m.MaxRemoteBytes > 0 {
		return m.MaxRemoteBytes
	}
	return m.MaxUploadBytes
}

// Federation configures the server-server API: signing-key publication, key
// fetching, request authentication, outbound server discovery and the
// server-level allow/deny policy.
type Federation struct {
	// Enabled serves /_matrix/federation and /_matrix/key and allows outbound
	// federation. See FederationEnabled for the zero-config exception.
	Enabled bool `yaml:"enabled"`
	// KeyValidity is how far ahead our published keys' valid_until_ts lies.
	KeyValidity Duration `yaml:"key_validity"`
	// TrustedKeyServers are notaries asked for a server's keys when it cannot
	// be reached directly. None by default: no third party learns whom we talk to.
	TrustedKeyServers []TrustedKeyServer `yaml:"trusted_key_servers"`
	// Hosts maps server names to host:port, consulted before discovery
	// (tests and private deployments). Such targets may be private addresses.
	Hosts map[string]string `yaml:"hosts"`
	// InsecureHTTPHosts are server names from Hosts spoken to in plain HTTP
	// (tests only; never a default).
	InsecureHTTPHosts []string `yaml:"insecure_http_hosts"`
	// TrustedCAFile is a PEM file of CA certificates trusted besides the
	// system's, for outbound federation TLS.
	TrustedCAFile string `yaml:"trusted_ca_file"`
	// AllowedPrivateNetworks are CIDR ranges (e.g. 10.20.0.0/16,
	// fd00:1::/64; a bare address is one address) that outbound federation
	// may connect to although they are not public: for federation over an
	// organization's internal network. Empty by default: public addresses
	// only. URL previews and push gateways are not affected (they have
	// their own settings).
	AllowedPrivateNetworks []string `yaml:"allowed_private_networks"`
	// AllowedServers, if not empty, are the only servers we federate with;
	// DeniedServers are refused whatever AllowedServers says. Patterns may use
	// * (any run of characters) and ? (one character) and match the host
	// without port, case-insensitively, as m.room.server_acl does.
	AllowedServers []string `yaml:"allowed_servers"`
	DeniedServers  []string `yaml:"denied_servers"`
	// RequestsPerSecond and Burst limit inbound federation requests per IP.
	RequestsPerSecond float64 `yaml:"requests_per_second"`
	Burst             int     `yaml:"burst"`
	// NotaryRequestsPerSecond and NotaryBurst limit notary queries
	// (/_matrix/key/v2/query) per IP, on top of the above.
	NotaryRequestsPerSecond float64 `yaml:"notary_requests_per_second"`
	NotaryBurst             int     `yaml:"notary_burst"`
	// KeyFetchesPerSecond and KeyFetchBurst limit the outbound key fetches
	// one remote IP can cause (notary queries, X-Matrix headers naming keys
	// not stored yet).
	KeyFetchesPerSecond float64 `yaml:"key_fetches_per_second"`
	KeyFetchBurst       int     `yaml:"key_fetch_burst"`
	// Sender tunes the outbound queue of our room events.
	Sender FederationSender `yaml:"sender"`
}

// FederationSender tunes the federation sender (federationsender.Options).
type FederationSender struct {
	// MaxConcurrent bounds the destinations sent to at once.
	MaxConcurrent int `yaml:"max_concurrent"`
	// MinBackoff and MaxBackoff bound the wait after a failed transaction;
	// it doubles with each consecutive failure.
	MinBackoff Duration `yaml:"min_backoff"`
	MaxBackoff Duration `yaml:"max_backoff"`
	// MaxQueuedPerRoom events of one room queued for a failing destination
	// make the queue keep only the latest KeepPerRoom (the destination
	// fetches the gap when it returns).
	MaxQueuedPerRoom int `yaml:"max_queued_per_room"`
	KeepPerRoom      int `yaml:"keep_per_room"`
	// RequestTimeout bounds one transaction.
	RequestTimeout Duration `yaml:"request_timeout"`
	// RefusalsBeforeDrop: a transaction the destination refuses as a whole
	// (400, 403, 413: retrying cannot help) this many times in a row is
	// dropped, so the queue behind it moves on.
	RefusalsBeforeDrop int `yaml:"refusals_before_drop"`
}

// TrustedKeyServer is a notary; VerifyKeys (key ID → unpadded base64), when
// given, pin the notary's keys instead of fetching them.
type TrustedKeyServer struct {
	ServerName string            `yaml:"server_name"`
	VerifyKeys map[string]string `yaml:"verify_keys"`
}

// AllowedPrivatePrefixes returns federation.allowed_private_networks
// parsed (IPv4-mapped IPv6 ranges as IPv4). Entries that do not parse are
// left out: Validate refuses them.
func (f Federation) AllowedPrivatePrefixes() []netip.Prefix {
	var out []netip.Prefix
	for _, s := range f.AllowedPrivateNetworks {
		if p, ok := parseNetwork(s); ok {
			out = append(out, p)
		}
	}
	return out
}

// parseNetwork parses a CIDR range or one address, without zone (a zone
// would name an interface, not a range), IPv4-mapped ranges as IPv4.
func parseNetwork(s string) (netip.Prefix, bool) {
	if strings.Contains(s, "%") {
		return netip.Prefix{}, false
	}
	p, ok := parseAddrOrPrefix(s)
	return unmapPrefix(p), ok
}

// unmapPrefix turns ::ffff:a.b.c.d/n (n ≥ 96) into a.b.c.d/(n-96): addresses
// are unmapped before they are compared.
func unmapPrefix(p netip.Prefix) netip.Prefix {
	if p.Addr().Is4In6() && p.Bits() >= 96 {
		return netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96).Masked()
	}
	return p
}

// FederationEnabled reports whether federation runs: federation.enabled,
// except in zero-config mode with a localhost server name, where the server
// listens on loopback only and no other server could reach or verify it.
func (c *Config) FederationEnabled() bool {
	if !c.Federation.Enabled {
		return false
	}
	host := c.ServerName
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	return !(c.ZeroConfig && strings.EqualFold(host, "localhost"))
}

// Duration is a time.Duration written as "1h30m" in YAML.
type Duration struct{ time.Duration }

// UnmarshalYAML parses a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("invalid duration %q", s)
	}
	d.Duration = v
	return nil
}

// MarshalYAML writes the duration as a string.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// Default returns the zero-config configuration: server name localhost, data in
// ./data, embedded SQLite, loopback listener, open registration.
func Default() *Config {
	return &Config{
		ServerName: "localhost",
		DataDir:    "./data",
		Listen:     Listen{HTTP: "127.0.0.1:8008"},
		Register: Registration{
			Mode:              RegistrationOpen,
			MinPasswordLength: 8,
		},
		Limits: Limits{
			MaxRequestBytes:     10 << 20,
			RequestsPerSecond:   20,
			Burst:               100,
			LoginPerSecond:      1,
			LoginBurst:          10,
			CreateRoomPerSecond: 0.2,
			CreateRoomBurst:     20,
			AccessTokenLifetime: Duration{time.Hour},
		},
		Logging:  Logging{Level: "info", Format: "text", AccessLog: "info"},
		Calls:    Calls{TurnUserLifetime: Duration{time.Hour}},
		Rooms:    Rooms{DefaultVersion: "11"},
		Presence: Presence{Enabled: true},
		ServerNotices: ServerNotices{
			Enabled: true, SystemUserLocalpart: "_server", RoomName: "Server Notices",
		},
		Media: Media{
			MaxUploadBytes:    50 << 20,
			UploadsPerSecond:  2,
			UploadBurst:       20,
			MaxPendingUploads: 10,
			MaxImagePixels:    32_000_000,
			MaxBytesPerUser:   1 << 30,

			ThumbnailMemoryBytes: 256 << 20,
			ThumbnailsPerSecond:  2,
			ThumbnailBurst:       30,
			RemoteCacheBytes:     4 << 30,
		},
		Federation: Federation{
			Enabled:           true,
			KeyValidity:       Duration{24 * time.Hour},
			RequestsPerSecond: 50,
			Burst:             200,

			NotaryRequestsPerSecond: 1,
			NotaryBurst:             10,
			KeyFetchesPerSecond:     0.2,
			KeyFetchBurst:           20,
			Sender: FederationSender{MaxConcurrent: 32, MinBackoff: Duration{5 * time.Second}, MaxBackoff: Duration{time.Hour},
				MaxQueuedPerRoom: 1000, KeepPerRoom: 100, RequestTimeout: Duration{time.Minute}, RefusalsBeforeDrop: 3},
		},
		Retention: defaultRetention(),
		Residency: defaultResidency(),
		Push:      Push{Delivery: defaultPushDelivery()},
	}
}

// Load reads a YAML config file over the defaults. A file config starts with
// registration requiring a token; unknown keys are errors.
func Load(path string) (*Config, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	cfg := Default()
	cfg.Register.Mode = RegistrationToken
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) { // an empty file means all defaults
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// KeyError names the offending config key.
type KeyError struct {
	Key     string
	Problem string
}

func (e *KeyError) Error() string { return e.Key + ": " + e.Problem }

// Validate checks every value and names the key at fault.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, &KeyError{Key: key, Problem: fmt.Sprintf(format, args...)})
	}
	if err := ValidateServerName(c.ServerName); err != nil {
		bad("server_name", "%v", err)
	}
	if sn := c.ServerNotices; sn.Enabled && !serverNoticesLocalpartRE.MatchString(sn.SystemUserLocalpart) {
		bad("server_notices.system_user_localpart", "must be a non-empty user ID localpart (a-z, 0-9, . _ = - / +)")
	}
	if c.PublicBaseURL != "" {
		u, err := url.Parse(c.PublicBaseURL)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			bad("public_base_url", "must be an absolute http(s) URL, got %q", c.PublicBaseURL)
		}
	}
	if c.DataDir == "" {
		bad("data_dir", "must not be empty")
	}
	if _, _, err := net.SplitHostPort(c.Listen.HTTP); err != nil {
		bad("listen.http", "must be host:port, got %q", c.Listen.HTTP)
	}
	for i, p := range c.Listen.TrustedProxies {
		if _, ok := parseAddrOrPrefix(p); !ok {
			bad(fmt.Sprintf("listen.trusted_proxies[%d]", i), "must be an IP address or a CIDR prefix, got %q", p)
		}
	}
	if c.Listen.Metrics != "" {
		if _, _, err := net.SplitHostPort(c.Listen.Metrics); err != nil {
			bad("listen.metrics", "must be host:port, got %q", c.Listen.Metrics)
		}
	}
	c.validateTLS(bad)
	c.Retention.validate(bad)
	c.Residency.validate(bad)
	if u := c.Database.URL; u != "" && !strings.HasPrefix(u, "sqlite:") && !strings.HasPrefix(u, "postgres://") && !strings.HasPrefix(u, "postgresql://") {
		bad("database.url", "must be empty, sqlite:PATH or postgres://..., got %q", u)
	}
	if c.Database.MaxOpenConns < 0 {
		bad("database.max_open_conns", "must not be negative")
	}
	switch c.Register.Mode {
	case RegistrationOpen, RegistrationToken, RegistrationClosed:
	default:
		bad("registration.mode", "must be open, token or closed, got %q", c.Register.Mode)
	}
	if c.Register.MinPasswordLength < 0 {
		bad("registration.min_password_length", "must not be negative")
	}
	if c.Limits.MaxRequestBytes < 1024 {
		bad("limits.max_request_bytes", "must be at least 1024")
	}
	if c.Limits.RequestsPerSecond <= 0 || c.Limits.Burst <= 0 {
		bad("limits.requests_per_second", "requests_per_second and burst must be positive")
	}
	if c.Limits.LoginPerSecond <= 0 || c.Limits.LoginBurst <= 0 {
		bad("limits.login_per_second", "login_per_second and login_burst must be positive")
	}
	if c.Media.MaxUploadBytes < 1024 {
		bad("media.max_upload_bytes", "must be at least 1024")
	}
	if c.Media.UploadsPerSecond <= 0 || c.Media.UploadBurst <= 0 {
		bad("media.uploads_per_second", "uploads_per_second and upload_burst must be positive")
	}
	if c.Media.MaxPendingUploads <= 0 {
		bad("media.max_pending_uploads", "must be positive")
	}
	if c.Media.MaxImagePixels <= 0 {
		bad("media.max_image_pixels", "must be positive")
	}
	if c.Media.MaxBytesPerUser < 0 {
		bad("media.max_bytes_per_user", "must not be negative (0 is unlimited)")
	}
	if c.Media.ThumbnailMemoryBytes < 1<<20 {
		bad("media.thumbnail_memory_bytes", "must be at least 1048576")
	}
	if c.Media.ThumbnailsPerSecond <= 0 || c.Media.ThumbnailBurst <= 0 {
		bad("media.thumbnails_per_second", "thumbnails_per_second and thumbnail_burst must be positive")
	}
	if c.Media.MaxRemoteBytes < 0 {
		bad("media.max_remote_bytes", "must not be negative (0 is media.max_upload_bytes)")
	}
	if c.Media.RemoteCacheBytes <= 0 {
		bad("media.remote_cache_bytes", "must be positive")
	}
	if c.Limits.CreateRoomPerSecond <= 0 || c.Limits.CreateRoomBurst <= 0 {
		bad("limits.create_room_per_second", "create_room_per_second and create_room_burst must be positive")
	}
	c.validateFederation(bad)
	c.validateSupport(bad)
	switch c.Logging.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("logging.level", "must be debug, info, warn or error, got %q", c.Logging.Level)
	}
	switch c.Logging.Format {
	case "text", "json":
	default:
		bad("logging.format", "must be text or json, got %q", c.Logging.Format)
	}
	switch c.Logging.AccessLog {
	case "off", "debug", "info", "warn", "error":
	default:
		bad("logging.access_log", "must be off, debug, info, warn or error, got %q", c.Logging.AccessLog)
	}
	c.validateCalls(bad)
	c.validatePushDelivery(bad)
	switch c.Rooms.DefaultVersion {
	case "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12":
	default:
		bad("rooms.default_version", "must be a room version from 1 to 12, got %q", c.Rooms.DefaultVersion)
	}
	return errors.Join(errs...)
}

// namespacedRole is the common namespaced identifier grammar (appendices):
// a reversed domain, lowercase; "m." is the spec's own namespace.
var namespacedRole = regexp.MustCompile(`^[a-z][a-z0-9_-]*(\.[a-z0-9_-]+)+$`)

func (c *Config) validateSupport(bad func(key, format string, args ...any)) {
	s := &c.Support
	if s.SupportPage != "" {
		u, err := url.Parse(s.SupportPage)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			bad("support.support_page", "must be an absolute http(s) URL, got %q", s.SupportPage)
		}
	}
	for i, ct := range s.Contacts {
		key := fmt.Sprintf("support.contacts[%d]", i)
		if ct.MatrixID == "" && ct.EmailAddress == "" {
			bad(key, "needs matrix_id or email_address")
		}
		if ct.MatrixID != "" {
			// Parse, not ParseAndValidate: the contact may be a historical
			// user ID on another server.
			if local, server, err := id.UserID(ct.MatrixID).Parse(); err != nil || local == "" || ValidateServerName(server) != nil {
				bad(key+".matrix_id", "must be a Matrix user ID (@user:server), got %q", ct.MatrixID)
			}
		}
		if ct.EmailAddress != "" {
			if a, err := mail.ParseAddress(ct.EmailAddress); err != nil || a.Address != ct.EmailAddress {
				bad(key+".email_address", "must be a bare email address, got %q", ct.EmailAddress)
			}
		}
		switch {
		case ct.Role == "":
			bad(key+".role", "is required (m.role.admin, m.role.security or a namespaced identifier)")
		case ct.Role == "m.role.admin" || ct.Role == "m.role.security":
		case strings.HasPrefix(ct.Role, "m.") || len(ct.Role) > 255 || !namespacedRole.MatchString(ct.Role):
			bad(key+".role", "must be m.role.admin, m.role.security or a namespaced identifier such as org.example.role, got %q", ct.Role)
		}
	}
}

func (c *Config) validateCalls(bad func(key, format string, args ...any)) {
	cl := &c.Calls
	for i, u := range cl.TurnURIs {
		if !strings.HasPrefix(u, "turn:") && !strings.HasPrefix(u, "turns:") && !strings.HasPrefix(u, "stun:") {
			bad(fmt.Sprintf("calls.turn_uris[%d]", i), "must be a turn:, turns: or stun: URI, got %q", u)
		}
	}
	if cl.TurnSharedSecret != "" && cl.TurnUsername != "" {
		bad("calls.turn_shared_secret", "set either turn_shared_secret or turn_username/turn_password, not both")
	}
	if (cl.TurnUsername == "") != (cl.TurnPassword == "") {
		bad("calls.turn_username", "turn_username and turn_password go together")
	}
	if len(cl.TurnURIs) > 0 && cl.TurnSharedSecret == "" && cl.TurnUsername == "" {
		bad("calls.turn_uris", "need turn_shared_secret or turn_username/turn_password")
	}
	if cl.TurnUserLifetime.Duration < time.Minute || cl.TurnUserLifetime.Duration > 7*24*time.Hour {
		bad("calls.turn_user_lifetime", "must be between 1m and 168h, got %s", cl.TurnUserLifetime.Duration)
	}
	for i, f := range cl.RTCFoci {
		key := fmt.Sprintf("calls.rtc_foci[%d]", i)
		switch f.Type {
		case "livekit":
			u, err := url.Parse(f.LiveKitServiceURL)
			if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
				bad(key+".livekit_service_url", "must be an absolute http(s) URL, got %q", f.LiveKitServiceURL)
			}
		case "":
			bad(key+".type", "is required (livekit)")
		default:
			bad(key+".type", "only livekit foci are supported, got %q", f.Type)
		}
	}
}

// validateTLS checks the native TLS listener: an address, and a certificate
// from exactly one source.
func (c *Config) validateTLS(bad func(key, format string, args ...any)) {
	l := &c.Listen
	files := l.TLSCertificate != "" || l.TLSKey != ""
	if l.Federation == "" {
		if files {
			bad("listen.tls_certificate", "needs listen.federation (the TLS listener it is for)")
		}
		if l.ACME.Enabled {
			bad("listen.acme.enabled", "needs listen.federation (the TLS listener it is for)")
		}
		return
	}
	if _, _, err := net.SplitHostPort(l.Federation); err != nil {
		bad("listen.federation", "must be host:port (e.g. \":8448\"), got %q", l.Federation)
	}
	switch {
	case files && l.ACME.Enabled:
		bad("listen.acme.enabled", "set either listen.tls_certificate/tls_key or listen.acme, not both")
	case !files && !l.ACME.Enabled:
		bad("listen.federation", "needs a certificate: listen.tls_certificate and listen.tls_key, or listen.acme.enabled")
	case files && (l.TLSCertificate == "" || l.TLSKey == ""):
		bad("listen.tls_certificate", "listen.tls_certificate and listen.tls_key go together")
	case files:
		for key, path := range map[string]string{"listen.tls_certificate": l.TLSCertificate, "listen.tls_key": l.TLSKey} {
			if _, err := os.Stat(path); err != nil {
				bad(key, "%v", err)
			}
		}
	}
	if !l.ACME.Enabled {
		return
	}
	a := &l.ACME
	if a.DirectoryURL != "" {
		if u, err := url.Parse(a.DirectoryURL); err != nil || u.Scheme != "https" || u.Host == "" {
			bad("listen.acme.directory_url", "must be an https URL, got %q", a.DirectoryURL)
		}
	}
	if a.Email != "" {
		if m, err := mail.ParseAddress(a.Email); err != nil || m.Address != a.Email {
			bad("listen.acme.email", "must be a bare email address, got %q", a.Email)
		}
	}
	domains := c.ACMEDomains()
	if len(domains) == 0 {
		bad("listen.acme.domains", "server_name has no host to certify: list the domains")
	}
	for i, d := range domains {
		if strings.Trim(d, "0123456789.") == "" || strings.HasPrefix(d, "[") || validDNSName(d) != nil {
			bad(fmt.Sprintf("listen.acme.domains[%d]", i), "must be a DNS name (certificates are not issued for IP addresses), got %q", d)
		}
	}
	if a.HTTPChallenge != "" {
		if _, _, err := net.SplitHostPort(a.HTTPChallenge); err != nil {
			bad("listen.acme.http_challenge", "must be host:port (e.g. \":80\"), got %q", a.HTTPChallenge)
		}
	}
}

func (c *Config) validateFederation(bad func(key, format string, args ...any)) {
	f := &c.Federation
	if f.KeyValidity.Duration < time.Hour || f.KeyValidity.Duration > 7*24*time.Hour {
		// Under an hour makes others refetch constantly; over 7 days is capped by every reader anyway.
		bad("federation.key_validity", "must be between 1h and 168h, got %s", f.KeyValidity.Duration)
	}
	for i, ks := range f.TrustedKeyServers {
		if err := ValidateServerName(ks.ServerName); err != nil {
			bad(fmt.Sprintf("federation.trusted_key_servers[%d].server_name", i), "%v", err)
		}
		for keyID, key := range ks.VerifyKeys {
			if !strings.HasPrefix(keyID, "ed25519:") || len(keyID) == len("ed25519:") {
				bad(fmt.Sprintf("federation.trusted_key_servers[%d].verify_keys", i), "key ID %q must be ed25519:<version>", keyID)
			}
			if raw, err := base64.RawStdEncoding.DecodeString(key); err != nil || len(raw) != 32 {
				bad(fmt.Sprintf("federation.trusted_key_servers[%d].verify_keys", i), "key %s must be 32 bytes of unpadded base64", keyID)
			}
		}
	}
	for name, addr := range f.Hosts {
		if err := ValidateServerName(name); err != nil {
			bad("federation.hosts", "server name %q: %v", name, err)
		}
		if _, port, err := net.SplitHostPort(addr); err != nil || port == "" {
			bad("federation.hosts", "%s: must map to host:port, got %q", name, addr)
		}
	}
	for _, name := range f.InsecureHTTPHosts {
		if _, ok := f.Hosts[name]; !ok {
			// Plain HTTP only to a target the operator named explicitly, never to a discovered one.
			bad("federation.insecure_http_hosts", "%q must also be listed in federation.hosts", name)
		}
	}
	if f.TrustedCAFile != "" {
		if _, err := os.Stat(f.TrustedCAFile); err != nil {
			bad("federation.trusted_ca_file", "%v", err)
		}
	}
	for i, s := range f.AllowedPrivateNetworks {
		key := fmt.Sprintf("federation.allowed_private_networks[%d]", i)
		p, ok := parseNetwork(s)
		switch {
		case !ok:
			bad(key, "must be a CIDR range such as 10.0.0.0/8 or fd00::/8 (or one IP address, without zone), got %q", s)
		case p.Bits() == 0:
			// A catch-all would switch the guard off, loopback and cloud metadata included.
			bad(key, "%q admits every address; list the private ranges federation may reach", s)
		}
	}
	for _, p := range append(append([]string{}, f.AllowedServers...), f.DeniedServers...) {
		if strings.TrimSpace(p) == "" {
			bad("federation.allowed_servers", "server patterns must not be empty")
		}
		// Hosts are matched without port, as server ACLs match.
		if host := p[strings.LastIndexByte(p, ']')+1:]; strings.Contains(host, ":") {
			bad("federation.allowed_servers", "pattern %q has a port: patterns match the host only", p)
		}
	}
	if f.RequestsPerSecond <= 0 || f.Burst <= 0 {
		bad("federation.requests_per_second", "requests_per_second and burst must be positive")
	}
	if f.NotaryRequestsPerSecond <= 0 || f.NotaryBurst <= 0 {
		bad("federation.notary_requests_per_second", "notary_requests_per_second and notary_burst must be positive")
	}
	if f.KeyFetchesPerSecond <= 0 || f.KeyFetchBurst <= 0 {
		bad("federation.key_fetches_per_second", "key_fetches_per_second and key_fetch_burst must be positive")
	}
	fs := f.Sender
	if fs.MaxConcurrent < 1 || fs.MaxConcurrent > 10000 {
		bad("federation.sender.max_concurrent", "must be between 1 and 10000, got %d", fs.MaxConcurrent)
	}
	if fs.MinBackoff.Duration < 100*time.Millisecond || fs.MaxBackoff.Duration < fs.MinBackoff.Duration || fs.MaxBackoff.Duration > 7*24*time.Hour {
		bad("federation.sender.min_backoff", "min_backoff must be at least 100ms and at most max_backoff, max_backoff at most 168h (got %s, %s)",
			fs.MinBackoff.Duration, fs.MaxBackoff.Duration)
	}
	if fs.KeepPerRoom < 1 || fs.MaxQueuedPerRoom < fs.KeepPerRoom {
		bad("federation.sender.max_queued_per_room", "keep_per_room must be positive and at most max_queued_per_room (got %d, %d)",
			fs.KeepPerRoom, fs.MaxQueuedPerRoom)
	}
	if fs.RequestTimeout.Duration < time.Second {
		bad("federation.sender.request_timeout", "must be at least 1s, got %s", fs.RequestTimeout.Duration)
	}
	if fs.RefusalsBeforeDrop < 1 {
		bad("federation.sender.refusals_before_drop", "must be positive, got %d", fs.RefusalsBeforeDrop)
	}
}

// ValidateServerName checks a server name against the spec grammar
// (appendices, "Server name"); see ParseServerName.
func ValidateServerName(name string) error {
	_, _, err := ParseServerName(name)
	return err
}

// Bounds of a server name beyond the grammar: the whole name (as mautrix
// and other servers bound it) and a DNS host (user IDs are 255 bytes in all).
const (
	maxServerNameLen = 255
	maxDNSNameLen    = 230
)

// ParseServerName splits a server name per the spec grammar: the host is a
// dotted-quad IPv4 literal (each part 0-255), a bracketed IPv6 literal, or a
// DNS name of labels of letters, digits and hyphens (1-63 characters each,
// no empty label: no leading, trailing or double dot); the port, when given,
// is 1-65535. port is 0 when the name has none. Names are untrusted input
// (X-Matrix origins, notary queries): nothing is looked up before this.
func ParseServerName(name string) (host string, port int, err error) {
	if name == "" {
		return "", 0, errors.New("must not be empty")
	}
	if len(name) > maxServerNameLen {
		return "", 0, fmt.Errorf("server name is longer than %d bytes", maxServerNameLen)
	}
	host = name
	if i := strings.LastIndexByte(name, ':'); i >= 0 && !strings.HasSuffix(name, "]") {
		if port, err = parsePort(name[i+1:]); err != nil {
			return "", 0, fmt.Errorf("%q: %w", name, err)
		}
		host = name[:i]
	}
	switch {
	case strings.HasPrefix(host, "["):
		err = validIPv6Literal(host)
	case strings.Trim(host, "0123456789.") == "":
		if a, perr := netip.ParseAddr(host); perr != nil || !a.Is4() {
			err = errors.New("invalid IPv4 literal")
		}
	default:
		err = validDNSName(host)
	}
	if err != nil {
		return "", 0, fmt.Errorf("%q: %w", name, err)
	}
	return host, port, nil
}

func parsePort(p string) (int, error) {
	if p == "" || len(p) > 5 || strings.Trim(p, "0123456789") != "" {
		return 0, errors.New("port must be 1 to 5 digits")
	}
	n, _ := strconv.Atoi(p)
	if n < 1 || n > 65535 {
		return 0, errors.New("port must be between 1 and 65535")
	}
	return n, nil
}

func validIPv6Literal(host string) error {
	inner, ok := strings.CutPrefix(host, "[")
	inner, ok2 := strings.CutSuffix(inner, "]")
	if !ok || !ok2 || len(inner) < 2 || len(inner) > 45 || strings.Trim(inner, "0123456789abcdefABCDEF:.") != "" {
		return errors.New("invalid IPv6 literal")
	}
	if a, err := netip.ParseAddr(inner); err != nil || !a.Is6() {
		return errors.New("invalid IPv6 literal")
	}
	return nil
}

func validDNSName(host string) error {
	if len(host) > maxDNSNameLen {
		return fmt.Errorf("host is longer than %d bytes", maxDNSNameLen)
	}
	for label := range strings.SplitSeq(host, ".") {
		if label == "" || len(label) > 63 {
			return errors.New("host labels must be 1 to 63 characters (no empty label)")
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return fmt.Errorf("host contains invalid character %q", r)
			}
		}
	}
	return nil
}

// DatabaseURL resolves the effective database URL (SQLite under the data dir by default).
func (c *Config) DatabaseURL() string {
	if c.Database.URL == "" {
		return "sqlite:" + strings.TrimRight(c.DataDir, "/") + "/myelin.db"
	}
	return c.Database.URL
}

// BaseURL is the public client-facing base URL.
func (c *Config) BaseURL() string {
	if c.PublicBaseURL != "" {
		return strings.TrimRight(c.PublicBaseURL, "/")
	}
	if c.ServerName == "localhost" || strings.HasPrefix(c.ServerName, "localhost:") {
		return "http://" + c.Listen.HTTP
	}
	return "https://" + c.ServerName
}
