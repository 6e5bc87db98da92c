package config

import (
	"fmt"
	"strings"
)

// Template returns a commented YAML configuration for a real deployment.
func Template(serverName, sharedSecret string) string {
	return strings.TrimLeft(fmt.Sprintf(`
# Myelin configuration. Every key is optional except server_name; the values
# shown are the defaults unless marked otherwise. See docs/configuration.md.

# The domain in user IDs (@alice:%[1]s) and room aliases. Cannot change later.
server_name: %[1]q

# Where clients reach this server, if it differs from https://<server_name>.
# public_base_url: "https://matrix.%[1]s"

# Signing key, embedded database and media live here.
data_dir: "./data"

listen:
  # Client-server (and federation) API, plain HTTP. Put a TLS proxy in front.
  http: "127.0.0.1:8008"
  # Serve /metrics on a separate address (default: on http, loopback only).
  # metrics: "127.0.0.1:9090"
  # Reverse proxies whose X-Forwarded-For is believed (addresses or CIDRs), so
  # that rate limits and device IPs see the real client. Default: none.
  # trusted_proxies: ["127.0.0.1", "::1"]
  # A TLS listener of Myelin's own, so that other servers reach this one
  # without a reverse proxy (port 8448, or where .well-known/SRV delegate).
  # It serves the whole API (federation, keys and the client API). Off by
  # default. The certificate: PEM files (chain, then key), reread on SIGHUP...
  # federation: ":8448"
  # tls_certificate: "/etc/myelin/fullchain.pem"
  # tls_key: "/etc/myelin/privkey.pem"
  # ...or automatic certificates through ACME (Let's Encrypt by default):
  # obtained on the first handshake, renewed ahead of expiry, kept in
  # cache_dir (default <data_dir>/acme). The ACME server validates on port
  # 443 (TLS-ALPN-01: listen.federation on :443, or 443 forwarded to it) or
  # port 80 (HTTP-01: set http_challenge).
  # acme:
  #   enabled: true
  #   directory_url: "https://acme-v02.api.letsencrypt.org/directory"
  #   email: "admin@%[1]s"
  #   domains: ["%[1]s"]   # default: the host of server_name
  #   cache_dir: ""
  #   http_challenge: ":80"

database:
  # Empty or sqlite:PATH for the embedded SQLite store (default <data_dir>/myelin.db);
  # postgres://user:password@host:5432/myelin?sslmode=disable for PostgreSQL.
  url: ""
  # Connection pool size (0: backend default).
  max_open_conns: 0

registration:
  # open: anyone may register; token: a registration token is required;
  # closed: only admins (myelin register-user, shared secret) create users.
  mode: token
  # Enables /_synapse/admin/v1/register (nonce + HMAC-SHA1) for deployment tools.
  shared_secret: %[2]q
  # Registration tokens accepted besides those created through the admin API.
  tokens: []
  # Localparts no one may register (a trailing * matches a prefix): M_EXCLUSIVE.
  reserved_usernames: ["admin", "root", "postmaster", "abuse"]
  min_password_length: 8

limits:
  # Largest accepted request body, in bytes (media uploads: media.max_upload_bytes).
  max_request_bytes: 10485760
  # Per client IP, and per user once authenticated.
  requests_per_second: 20
  burst: 100
  # /login and /register per client IP; failed passwords per account.
  login_per_second: 1
  login_burst: 10
  # POST /createRoom per user.
  create_room_per_second: 0.2
  create_room_burst: 20
  # Lifetime of access tokens issued with a refresh token (0s: never expire).
  access_token_lifetime: 1h

logging:
  level: info   # debug, info, warn, error
  format: text  # text or json
  # One line per HTTP request (method, route pattern, status, duration, user,
  # request ID; never tokens or query strings), at this level: debug, info,
  # warn, error, or off. 5xx answers are logged at error.
  access_log: info

rooms:
  # Room version for new rooms when the client does not ask for one (1-12).
  default_version: "11"

presence:
  # false switches presence off entirely (metadata minimization).
  enabled: true

server_notices:
  # Admins send notices with POST /_synapse/admin/v1/send_server_notice; each
  # user gets them in one invite-only room, tagged m.server_notice.
  enabled: true
  # The system user that sends them (reserved: nobody can register it).
  system_user_localpart: _server
  room_name: Server Notices

media:
  # Largest upload, in bytes (advertised to clients as m.upload.size).
  max_upload_bytes: 52428800
  # Serve the deprecated unauthenticated /_matrix/media/v3/download and
  # /thumbnail endpoints. false "freezes" them (404) as the spec recommends;
  # every current client uses the authenticated /_matrix/client/v1/media API.
  # With residency.enabled they are refused (403) whatever this says.
  legacy_unauthenticated: false
  # Let clients ask the server to fetch URL previews (OpenGraph). The server
  # then fetches every URL users preview; non-public addresses are refused.
  url_previews: false
  # Closed networks only: let previews fetch from private networks too
  # (10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7). Loopback and
  # link-local (cloud metadata) addresses stay refused.
  url_preview_allow_private: false
  # Uploads per user: rate and burst; created-but-unfinished async uploads.
  uploads_per_second: 2
  upload_burst: 20
  max_pending_uploads: 10
  # Upload quota per user: total bytes of the media a user uploaded (0: none).
  max_bytes_per_user: 1073741824
  # Largest image (width x height, in pixels) the server will thumbnail.
  max_image_pixels: 32000000
  # Memory for images being decoded for thumbnails at once (bytes, estimated
  # from size and pixel format: a 16-bit RGBA PNG takes 8 bytes a pixel).
  thumbnail_memory_bytes: 268435456
  # Thumbnail generations per user (cached thumbnails are free): rate, burst.
  thumbnails_per_second: 2
  thumbnail_burst: 30
  # Largest file fetched from another server for our users (0: max_upload_bytes).
  max_remote_bytes: 0
  # Cache of other servers' media, in bytes: beyond it the least recently
  # used remote files are evicted (local uploads never are).
  remote_cache_bytes: 4294967296

push:
  # Let http pushers name a push gateway on a loopback or private address.
  # Development only: any user could make the server call its own network.
  allow_private_gateways: false
  # Delivery of notifications to push gateways (a queue in the store).
  delivery:
    # Gateways sent to at once, and requests in flight to one gateway.
    workers: 16
    per_gateway: 16
    request_timeout: 10s
    # A failing gateway is retried after min_backoff, doubling to max_backoff;
    # a notification still failing after max_retry_age is given up.
    min_backoff: 1s
    max_backoff: 1h
    max_retry_age: 24h

# Served as https://<server_name>/.well-known/matrix/support (how users reach
# the administrators). Unset: 404. Each contact needs a role (m.role.admin,
# m.role.security or e.g. org.example.moderation) and a matrix_id and/or an
# email_address; support_page is an http(s) URL.
#support:
#  contacts:
#    - matrix_id: "@admin:example.org"
#      email_address: admin@example.org
#      role: m.role.admin
#  support_page: https://example.org/support

# Voice and video calls. 1:1 calls need a TURN relay for clients behind NAT
# (see docs/operations.md for coturn); with none configured,
# /voip/turnServer answers {} and calls only work between directly reachable
# clients. Use turn_shared_secret (coturn's static-auth-secret) or a static
# turn_username/turn_password, not both.
calls:
  # turn_uris: ["turns:turn.example.org:5349?transport=tcp", "turn:turn.example.org:3478?transport=udp"]
  # turn_shared_secret: "the static-auth-secret of coturn"
  # How long shared-secret credentials stay valid.
  turn_user_lifetime: 1h0m0s
  # MatrixRTC foci for group calls (Element Call), advertised in
  # /.well-known/matrix/client as org.matrix.msc4143.rtc_foci.
  # rtc_foci:
  #   - type: livekit
  #     livekit_service_url: "https://livekit-jwt.example.org"

federation:
  # Serve the server-server API (/_matrix/federation, /_matrix/key) and talk
  # to other homeservers. Other servers reach this one at https://<server_name>
  # (port 8448, or as .well-known/matrix/server or SRV delegate).
  enabled: true
  # How long other servers may cache our signing key (valid_until_ts), 1h-168h.
  key_validity: 24h
  # Notaries asked for a server's keys when that server cannot be reached.
  # None by default: a notary learns which servers we talk to.
  # trusted_key_servers:
  #   - server_name: "matrix.org"
  #     verify_keys: {"ed25519:auto": "Noi6WqcDj0QmPxCNQqgezwTlBKrfqehY1u2FyWP9uYw"}
  trusted_key_servers: []
  # Server-level policy (patterns with * and ?, matched against the host
  # without port, as server ACLs do). allowed_servers, when not
  # empty, is the complete list of servers we federate with; denied_servers
  # always wins. Refusals are logged and counted in
  # myelin_federation_policy_refusals_total.
  allowed_servers: []
  denied_servers: []
  # Inbound federation requests per remote IP.
  requests_per_second: 50
  burst: 200
  # Notary queries (/_matrix/key/v2/query) per remote IP, on top of the above,
  # and the outbound key fetches one remote IP may cause.
  notary_requests_per_second: 1
  notary_burst: 10
  key_fetches_per_second: 0.2
  key_fetch_burst: 20
  # The outbound queue of our room events (one per destination, in the store).
  sender:
    max_concurrent: 32       # destinations sent to at once
    min_backoff: 5s          # wait after a failed transaction, doubling...
    max_backoff: 1h          # ...up to this
    max_queued_per_room: 1000  # a failing destination's queue of one room beyond this...
    keep_per_room: 100         # ...keeps only the latest (it fetches the gap when back)
    request_timeout: 60s
    refusals_before_drop: 3  # a transaction refused as a whole (400/403/413) this often is dropped
  # Federation over an internal network: CIDR ranges (or single addresses)
  # that outbound federation may connect to although they are not public,
  # e.g. ["10.20.0.0/16", "fd00:1::/64"]. Empty: public addresses only.
  # URL previews and push gateways are not opened by this (see their own
  # keys); a catch-all such as 0.0.0.0/0 is refused.
  allowed_private_networks: []
  # Testing only: fixed addresses for named servers (used before discovery;
  # may be private addresses), plain HTTP to some of them, an extra CA.
  # hosts: {"other.test": "127.0.0.1:8009"}
  # insecure_http_hosts: ["other.test"]
  # trusted_ca_file: "/etc/myelin/test-ca.pem"

retention:
  # Message retention (MSC1763): rooms' m.room.retention policies are honoured
  # and a background purge removes the content of expired messages (state
  # events are never purged). Durations are Go durations (720h is 30 days).
  enabled: false
  # Bounds of every room's effective max_lifetime (0s: no bound).
  min_lifetime: 0s
  max_lifetime: 0s
  # For rooms without an m.room.retention state event (0s: keep forever).
  default_policy:
    min_lifetime: 0s
    max_lifetime: 0s
  purge_interval: 1h
  batch_size: 500  # events per purge transaction (at most 500)

residency:
  # The data-localization policy (docs/federation-policy.md): named zones of
  # servers, the zone each room is resident in, which data kinds may go to
  # each zone, and a consortium's signed trust list. Off: every server the
  # federation lists allow may receive everything.
  enabled: false
  zone: ""  # the zone our own server is in
  zones: []
  # zones:
  #   - name: internal
  #     servers: ["corp.example", "*.corp.example"]  # patterns as m.room.server_acl's
  #   - name: eu
  #     servers: ["*.example.de"]
  #     includes: [internal]       # rooms of eu may also go to internal's servers
  #     share: {presence: false}   # events, typing, receipts, presence, to_device,
  #                                # device_keys, media, profile, directory, keys
  #     require_encryption: true   # rooms must be encrypted before others join
  #     retention: {max_lifetime: 2160h}  # default for this zone's rooms
  #     client_ip_retention: 720h  # when this is our zone
  #     user_directory_visible: true  # false: this zone's remote users are
  #                                   # left out of directory searches
  rooms:
    default_zone: ""  # the zone of rooms no rule matches
    rules: []
    # rules:
    #   - zone: eu
    #     aliases: ["#eu-*:example.org"]   # also creators, room_types
    #     may_choose: [internal]
    may_choose: []  # zones any creator may choose at creation
  trust_list:
    # The consortium's signed list of member servers and their zones: a
    # url (or a file), verified against the pinned issuer and key, refreshed
    # and applied without restart (myelin trust-list keygen|sign|verify).
    url: ""
    file: ""
    issuer: ""
    key_id: ""      # ed25519:<version>
    public_key: ""  # unpadded base64
    refresh: 1h
`, serverName, sharedSecret), "\n")
}
