package federation

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/internal/config"
	"github.com/myelin-chat/myelin/internal/mxhttp"
	"github.com/myelin-chat/myelin/internal/ratelimit"
	"github.com/myelin-chat/myelin/internal/recovery"
	"github.com/myelin-chat/myelin/storage"
)

// Bounds on what unauthenticated key queries can make us do.
const (
	notaryQueryTimeout = 20 * time.Second // fetching for one query; answers from the store follow
	notaryParallelism  = 8
	// maxNotaryServers and maxNotaryKeyIDs bound one POST /_matrix/key/v2/query
	// (400 M_INVALID_PARAM beyond); notaryFetchesPerQuery is how many of its
	// servers may be fetched, the others are answered from the store.
	maxNotaryServers      = 100
	maxNotaryKeyIDs       = 32
	notaryFetchesPerQuery = 10
)

// SoftwareVersion is reported by GET /_matrix/federation/v1/version and in
// the outbound User-Agent.
var SoftwareVersion = "0.1.0-dev"

// Profiles answers profile queries for local users (the accounts module):
// the profile as the client API's GET /profile answers it, M_NOT_FOUND for
// unknown users.
type Profiles interface {
	ProfileJSON(ctx context.Context, userID id.UserID) (map[string]any, error)
}

// OpenID exchanges the OpenID tokens our users request for their user ID
// (the accounts module); an unknown or expired token is 401 M_UNKNOWN_TOKEN.
type OpenID interface {
	OpenIDUser(ctx context.Context, token string) (id.UserID, error)
}

// TransportOptions are what the transport is built from.
type TransportOptions struct {
	Config     *config.Config
	SigningKey *mfed.SigningKey
	Store      KeyStore
	Metrics    prometheus.Registerer // policy refusal counter; nil: unregistered
	// Policy overrides the configured server lists (tests); refusals are
	// counted either way.
	Policy Policy
	// Residency, when set, must also allow: the data-localization policy's
	// server-level answers (homeserver/residency.go).
	Residency Policy
}

// Transport is the part of federation other modules need before the
// federation API exists: our keys, the policy, the outbound client, the
// remote key fetcher (the roomserver verifies remote signatures with it) and
// inbound request authentication. It depends on nothing but the store, so it
// is built first.
type Transport struct {
	ServerName string
	Keys       *KeyRing
	Policy     *CountingPolicy
	// Client sends signed requests to other servers (mautrix's client).
	Client  *mfed.Client
	Fetcher *KeyFetcher
	Auth    *Authenticator
	// Enabled is config.FederationEnabled(): when false no route is mounted
	// and the fetcher refuses every remote server.
	Enabled bool
}

// NewTransport loads old keys from <data_dir>/old_signing_keys and sets up
// the policy, client, fetcher and authenticator.
func NewTransport(o TransportOptions) (*Transport, error) {
	cfg := o.Config
	old, err := LoadOldKeys(filepath.Join(cfg.DataDir, OldSigningKeysDir))
	if err != nil {
		return nil, err
	}
	base := o.Policy
	if base == nil {
		base = AllowAll{}
		if len(cfg.Federation.AllowedServers) > 0 || len(cfg.Federation.DeniedServers) > 0 {
			base = ServerListPolicy{Allowed: cfg.Federation.AllowedServers, Denied: cfg.Federation.DeniedServers}
		}
	}
	if o.Residency != nil {
		base = AllOf{base, o.Residency}
	}
	enabled := cfg.FederationEnabled()
	if !enabled {
		base = disabledPolicy{}
	}
	t := &Transport{
		ServerName: cfg.ServerName,
		Keys:       &KeyRing{ServerName: cfg.ServerName, Key: o.SigningKey, Old: old, Validity: cfg.Federation.KeyValidity.Duration},
		Policy:     NewCountingPolicy(base, o.Metrics),
		Enabled:    enabled,
	}
	if t.Client, err = NewClient(cfg, o.SigningKey, t.Policy); err != nil {
		return nil, err
	}
	// Key responses are small: the transport caps them (ResponseLimitKeys).
	t.Fetcher = &KeyFetcher{Own: t.Keys, Store: o.Store, Client: t.Client, Notaries: cfg.Federation.TrustedKeyServers, Policy: t.Policy,
		RequesterFetches: ratelimit.New(cfg.Federation.KeyFetchesPerSecond, cfg.Federation.KeyFetchBurst)}
	t.Auth = &Authenticator{ServerName: cfg.ServerName, Keys: t.Fetcher, Policy: t.Policy}
	return t, nil
}

// Options are what the federation module is built from.
type Options struct {
	Config    *config.Config
	Transport *Transport
	// Profiles answers profile queries; nil: they are refused.
	Profiles Profiles
	// OpenID answers /openid/userinfo; nil: not served.
	OpenID OpenID
	// ProfileServed, when set, is told of each profile answered to a server
	// (the audit trail's flow record: origin, endpoint, items).
	ProfileServed func(origin, endpoint string, items int)
}

// Module is the server-server API as far as it exists today: our keys, the
// key fetcher and notary, request authentication, outbound client, version
// and profile queries. Other federation endpoints answer 404 M_UNRECOGNIZED.
type Module struct {
	*Transport

	profiles      Profiles
	openID        OpenID
	served        func(origin, endpoint string, items int)
	limiter       *ratelimit.Limiter
	notaryLimiter *ratelimit.Limiter
}

// New builds the federation API over an already built transport.
func New(o Options) *Module {
	cfg := o.Config
	return &Module{
		Transport: o.Transport,
		profiles:  o.Profiles,
		openID:    o.OpenID,
		served:    o.ProfileServed,
		limiter:   ratelimit.New(cfg.Federation.RequestsPerSecond, cfg.Federation.Burst),

		notaryLimiter: ratelimit.New(cfg.Federation.NotaryRequestsPerSecond, cfg.Federation.NotaryBurst),
	}
}

// disabledPolicy refuses everything: federation is switched off.
type disabledPolicy struct{}

func (disabledPolicy) AllowServer(context.Context, string, Purpose) bool { return false }

// Mounter adds routes to a router: the server-server API packages built
// over the transport (federationapi) mount theirs inside /_matrix/federation,
// behind X-Matrix authentication.
type Mounter interface {
	Mount(r chi.Router)
}

// Mount adds the federation and key routes to r (nothing when disabled);
// apis mount their routes under /_matrix/federation behind the X-Matrix
// authentication (Origin(ctx) is the authenticated server).
func (m *Module) Mount(r chi.Router, apis ...Mounter) {
	if !m.Enabled {
		return
	}
	r.Route("/_matrix/key/v2", func(r chi.Router) {
		r.Use(m.rateLimit)
		r.NotFound(notFound)
		r.MethodNotAllowed(methodNotAllowed)
		r.Get("/server", m.serverKeys)
		r.With(m.notaryRateLimit).Get("/query/{serverName}", mxhttp.HandlerFunc(m.queryKeysGet).ServeHTTP)
		r.With(m.notaryRateLimit).Post("/query", mxhttp.HandlerFunc(m.queryKeysPost).ServeHTTP)
	})
	r.Route("/_matrix/federation", func(r chi.Router) {
		r.Use(m.rateLimit)
		r.NotFound(notFound)
		r.MethodNotAllowed(methodNotAllowed)
		r.Get("/v1/version", m.version)
		if m.openID != nil {
			// Called by third parties (integration managers), not servers: no X-Matrix.
			r.Get("/v1/openid/userinfo", mxhttp.JSON(m.openIDUserInfo).ServeHTTP)
		}
		r.Group(func(r chi.Router) {
			r.Use(m.Auth.Middleware)
			r.Get("/v1/query/profile", mxhttp.JSON(m.queryProfile).ServeHTTP)
			for _, api := range apis {
				api.Mount(r)
			}
		})
	})
}

func notFound(w http.ResponseWriter, r *http.Request) {
	mxhttp.WriteError(w, r, mxhttp.Unrecognized("Unrecognized request"))
}

func methodNotAllowed(w http.ResponseWriter, r *http.Request) {
	mxhttp.WriteError(w, r, mxhttp.MethodNotAllowed())
}

// rateLimit limits federation requests per remote IP, and marks the
// request's context with the IP: key fetches it causes count against it.
func (m *Module) rateLimit(next http.Handler) http.Handler {
	return limitPerIP(m.limiter, next)
}

// notaryRateLimit limits notary queries per remote IP.
func (m *Module) notaryRateLimit(next http.Handler) http.Handler {
	return limitPerIP(m.notaryLimiter, next)
}

func limitPerIP(l *ratelimit.Limiter, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ip, _, err := net.SplitHostPort(r.RemoteAddr)
		if err != nil {
			ip = r.RemoteAddr
		}
		if ok, wait := l.Allow(ip); !ok {
			ms := wait.Milliseconds() + 1
			w.Header().Set("Retry-After", strconv.FormatInt((ms+999)/1000, 10))
			mxhttp.WriteError(w, r, mxhttp.LimitExceeded("Too many requests").With("retry_after_ms", ms))
			return
		}
		next.ServeHTTP(w, r.WithContext(WithRequester(r.Context(), ip)))
	})
}

func (m *Module) version(w http.ResponseWriter, _ *http.Request) {
	mxhttp.WriteJSON(w, http.StatusOK, mfed.RespServerVersion{Server: mfed.ServerVersion{Name: "Myelin", Version: SoftwareVersion}})
}

// GET /_matrix/key/v2/server
func (m *Module) serverKeys(w http.ResponseWriter, r *http.Request) {
	resp, err := m.Keys.Response(time.Now())
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, resp)
}

type notaryResponse struct {
	ServerKeys []json.RawMessage `json:"server_keys"`
}

// GET /_matrix/key/v2/query/{serverName}
func (m *Module) queryKeysGet(w http.ResponseWriter, r *http.Request) error {
	server := mxhttp.PathParam(r, "serverName")
	minValid := time.Now()
	if v := r.URL.Query().Get("minimum_valid_until_ts"); v != "" {
		ts, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return mxhttp.InvalidParam("minimum_valid_until_ts must be an integer")
		}
		minValid = time.UnixMilli(ts)
	}
	fetchCtx, cancel := context.WithTimeout(r.Context(), notaryQueryTimeout)
	defer cancel()
	out := notaryResponse{ServerKeys: m.notaryAnswer(r.Context(), fetchCtx, server, nil, minValid, nil)}
	if out.ServerKeys == nil {
		out.ServerKeys = []json.RawMessage{}
	}
	mxhttp.WriteJSON(w, http.StatusOK, out)
	return nil
}

// POST /_matrix/key/v2/query
func (m *Module) queryKeysPost(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		ServerKeys map[string]map[id.KeyID]struct {
			MinimumValidUntilTS *int64 `json:"minimum_valid_until_ts"`
		} `json:"server_keys"`
	}
	if err := mxhttp.ReadJSON(r, &req); err != nil {
		return err
	}
	if req.ServerKeys == nil {
		return mxhttp.BadJSON("server_keys is required")
	}
	if len(req.ServerKeys) > maxNotaryServers {
		return mxhttp.InvalidParam("At most %d servers per query", maxNotaryServers)
	}
	for server, criteria := range req.ServerKeys {
		if len(criteria) > maxNotaryKeyIDs {
			return mxhttp.InvalidParam("At most %d key IDs per server (%.100q has %d)", maxNotaryKeyIDs, server, len(criteria))
		}
	}
	out := notaryResponse{ServerKeys: []json.RawMessage{}}
	now := time.Now()
	// One deadline for the fetches of the whole query, a few at a time and
	// a few in all: an unauthenticated request must not hold a handler (or
	// many outbound connections) for long. Answers from the store need none.
	fetchCtx, cancel := context.WithTimeout(r.Context(), notaryQueryTimeout)
	defer cancel()
	var budget atomic.Int32
	budget.Store(notaryFetchesPerQuery)
	var mu sync.Mutex
	var wg sync.WaitGroup
	slots := make(chan struct{}, notaryParallelism)
	for server, criteria := range req.ServerKeys {
		minValid := now
		keyIDs := make([]id.KeyID, 0, len(criteria))
		for keyID, c := range criteria {
			keyIDs = append(keyIDs, keyID)
			if c.MinimumValidUntilTS != nil && time.UnixMilli(*c.MinimumValidUntilTS).After(minValid) {
				minValid = time.UnixMilli(*c.MinimumValidUntilTS)
			}
		}
		wg.Add(1)
		slots <- struct{}{}
		// A panic answers nothing for that server (the handler's recovery
		// does not cover this goroutine).
		recovery.Go(recovery.Notary, func() {
			defer func() { <-slots; wg.Done() }()
			answer := m.notaryAnswer(r.Context(), fetchCtx, server, keyIDs, minValid, &budget)
			mu.Lock()
			out.ServerKeys = append(out.ServerKeys, answer...)
			mu.Unlock()
		}, "server", server)
	}
	wg.Wait()
	mxhttp.WriteJSON(w, http.StatusOK, out)
	return nil
}

// notaryAnswer returns server's latest stored key responses co-signed by
// us. When they do not satisfy the query the server is asked first
// (directly, never through other notaries; within fetchCtx, and only while
// budget, if any, lasts); an unreachable server's last responses are still
// returned, so old signatures stay checkable. Nothing when there are none,
// the name is invalid or the policy refuses the server.
func (m *Module) notaryAnswer(ctx, fetchCtx context.Context, server string, keyIDs []id.KeyID, minValid time.Time, budget *atomic.Int32) []json.RawMessage {
	if server == m.ServerName {
		own, err := m.Keys.Response(time.Now())
		if err != nil {
			return nil
		}
		return []json.RawMessage{own}
	}
	if config.ValidateServerName(server) != nil || !m.Policy.AllowServer(ctx, server, PurposeNotary) {
		return nil
	}
	rows, err := m.Fetcher.Store.ServerKeys(ctx, server)
	if err != nil {
		return nil
	}
	if !satisfies(rows, keyIDs, minValid) && (budget == nil || budget.Add(-1) >= 0) {
		var want id.KeyID
		if len(keyIDs) > 0 {
			want = keyIDs[0]
		}
		if err := m.Fetcher.refresh(fetchCtx, server, want, minValid, false); err != nil {
			slog.DebugContext(ctx, "notary: fetching keys failed", "server", server, "err", err)
		}
	}
	resps, err := m.Fetcher.Store.ServerKeyResponses(ctx, server)
	if err != nil {
		return nil
	}
	out := make([]json.RawMessage, 0, len(resps))
	for _, resp := range resps {
		if signed, err := m.Keys.CoSign(json.RawMessage(resp.JSON)); err == nil {
			out = append(out, signed)
		}
	}
	return out
}

// satisfies: every requested key (any key, if none named) is stored and
// valid until minValid.
func satisfies(rows []storage.ServerKey, keyIDs []id.KeyID, minValid time.Time) bool {
	valid := map[id.KeyID]bool{}
	for i := range rows {
		if !keyValidUntil(&rows[i]).Before(minValid) {
			valid[id.KeyID(rows[i].KeyID)] = true
		}
	}
	if len(keyIDs) == 0 {
		return len(valid) > 0
	}
	for _, k := range keyIDs {
		if !valid[k] {
			return false
		}
	}
	return true
}

// GET /_matrix/federation/v1/openid/userinfo?access_token=…: the user an
// OpenID token was issued to. The token may also come as a bearer header,
// as for other endpoints taking an access token.
func (m *Module) openIDUserInfo(r *http.Request) (any, error) {
	token := r.URL.Query().Get("access_token")
	if token == "" {
		token, _ = strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	}
	if token == "" {
		return nil, mxhttp.MissingToken("Missing access_token")
	}
	userID, err := m.openID.OpenIDUser(r.Context(), token)
	if err != nil {
		return nil, err
	}
	return map[string]string{"sub": userID.String()}, nil
}

// GET /_matrix/federation/v1/query/profile
func (m *Module) queryProfile(r *http.Request) (any, error) {
	q := r.URL.Query()
	raw := q.Get("user_id")
	if raw == "" {
		return nil, mxhttp.MissingParam("user_id is required")
	}
	userID := id.UserID(raw)
	localpart, server, err := userID.Parse()
	if err != nil || localpart == "" {
		return nil, mxhttp.InvalidParam("Invalid user_id %q", raw)
	}
	// A server part outside the grammar (a port that is not a number, say)
	// is a bad request, not merely someone else's user.
	if _, _, err := config.ParseServerName(server); err != nil {
		return nil, mxhttp.InvalidParam("Invalid server name in user_id %q", raw)
	}
	if server != m.ServerName {
		return nil, mxhttp.NotFound("User %s is not local to this server", raw)
	}
	origin := Origin(r.Context())
	if !m.Policy.AllowServer(r.Context(), origin, PurposeProfile) {
		if m.Auth.Refused != nil {
			m.Auth.Refused(r.Context(), origin, PurposeProfile)
		}
		return nil, mxhttp.Forbidden("%s", refusedMessage(r.Context(), m.Policy, origin, PurposeProfile,
			"Profile lookup is not allowed for your server"))
	}
	if m.profiles == nil {
		return nil, mxhttp.Forbidden("Profile lookup over federation is disabled on this homeserver")
	}
	profile, err := m.profiles.ProfileJSON(r.Context(), userID)
	if err != nil {
		return nil, err
	}
	if m.served != nil {
		m.served(origin, "query/profile", 1)
	}
	if field := q.Get("field"); field != "" {
		v, ok := profile[field]
		if !ok {
			return nil, mxhttp.NotFound("User has no %s", field)
		}
		return map[string]any{field: v}, nil
	}
	return profile, nil
}
