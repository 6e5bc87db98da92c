// Package clientapi is the client-server API: HTTP handlers only, grouped by
// area (one file each). Handlers decode requests, call a module API through a
// small interface and encode the answer; they never touch storage.
package clientapi

import (
	"context"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/go-chi/chi/v5"

	"github.com/myelin-chat/myelin/accounts"
	"github.com/myelin-chat/myelin/internal/authn"
	"github.com/myelin-chat/myelin/internal/config"
	"github.com/myelin-chat/myelin/internal/mxhttp"
	"github.com/myelin-chat/myelin/internal/ratelimit"
	"github.com/myelin-chat/myelin/internal/recovery"
)

// API holds the modules the client-server handlers call.
type API struct {
	Config    *config.Config
	Accounts  *accounts.Service
	Rooms     Rooms     // rooms.go: the room writer
	RoomView  RoomView  // rooms.go: the room reads
	Directory Directory // rooms_directory.go: aliases and published rooms
	Keys      Keys      // keys.go

	Sync          http.Handler  // sync.go: GET /sync (clientapi/syncv2)
	Ephemeral     Ephemeral     // ephemeral.go: typing, receipts, read markers, presence
	Push          Push          // push.go: push rules, pushers, notifications
	Media         Media         // media.go
	UserDirectory UserDirectory // userdirectory.go
	SlidingSync   http.Handler  // clientapi/slidingsync (MSC4186); nil: not served
	ServerNotices ServerNotices // admin.go; nil: not served
	Audit         AuditTrail    // admin_audit.go: admin actions recorded, GET /_myelin/admin/v1/audit; nil: neither
	RemoteJoins   RemoteJoins   // rooms.go: joins of rooms hosted elsewhere (remotejoin); nil: federation off
	RemoteInvites RemoteInvites // rooms_remote.go: invites of users of other servers (remotejoin); nil: federation off
	// ResidencyCreation: residency_creation.go: rooms' zones pinned at creation; nil: no policy
	ResidencyCreation ResidencyCreation

	ipLimiter     *ratelimit.Limiter
	userLimiter   *ratelimit.Limiter
	loginLimiter  *ratelimit.Limiter
	uploadLimiter *ratelimit.Limiter
	roomLimiter   *ratelimit.Limiter // POST /createRoom per user
}

// Mount registers the client-server API, the well-known documents and the
// Synapse-compatible admin endpoints on r.
func (a *API) Mount(r chi.Router) {
	lim := a.Config.Limits
	a.ipLimiter = ratelimit.New(lim.RequestsPerSecond, lim.Burst)
	a.userLimiter = ratelimit.New(lim.RequestsPerSecond, lim.Burst)
	a.loginLimiter = ratelimit.New(lim.LoginPerSecond, lim.LoginBurst)
	a.roomLimiter = ratelimit.New(lim.CreateRoomPerSecond, lim.CreateRoomBurst)

	r.Get("/.well-known/matrix/client", a.wellKnownClient)
	r.Get("/.well-known/matrix/server", a.wellKnownServer)
	r.Get("/.well-known/matrix/support", a.wellKnownSupport)

	r.Route("/_matrix/client", func(r chi.Router) {
		r.Use(a.rateLimitIP)
		r.Get("/versions", a.versions)
		for _, prefix := range []string{"/r0", "/v3"} {
			r.Route(prefix, a.clientRoutes)
		}
		r.Route("/v1", a.v1Routes)
		r.Route("/unstable", a.unstableRoutes)
	})
	a.mediaRoutes(r) // /_matrix/media (media.go)

	// Synapse-compatible shared-secret registration (accounts; admin.go).
	r.Group(func(r chi.Router) {
		r.Use(a.rateLimitLogin)
		a.synapseAdminRoutes(r)
	})
	r.Group(func(r chi.Router) {
		r.Use(a.requireAuth, a.rateLimitUser)
		a.synapseAdminAuthedRoutes(r)
		a.myelinAdminRoutes(r)
	})
}

// clientRoutes are served under both /r0 and /v3. Each area registers its
// routes from its own file.
func (a *API) clientRoutes(r chi.Router) {
	// Unauthenticated, rate-limited as logins.
	r.Group(func(r chi.Router) {
		r.Use(a.rateLimitLogin)
		a.loginRoutes(r)
	})
	// Authentication optional (the spec's endpoints without a security section).
	r.Group(func(r chi.Router) {
		r.Use(a.optionalAuth, a.rateLimitUser)
		a.publicRoutes(r)
	})
	// Authenticated.
	r.Group(func(r chi.Router) {
		r.Use(a.requireAuth, a.rateLimitUser)
		a.accountRoutes(r)
		a.roomRoutes(r)
		a.syncRoutes(r)
		a.ephemeralRoutes(r)
		a.pushRoutes(r)
		a.keyRoutes(r)
		a.userDirectoryRoutes(r)
		a.callRoutes(r)
		a.searchRoutes(r)
	})
}

// v1Routes are the endpoints introduced under /_matrix/client/v1.
func (a *API) v1Routes(r chi.Router) {
	r.Group(func(r chi.Router) {
		r.Use(a.rateLimitLogin)
		a.loginRoutesV1(r)
	})
	r.Group(func(r chi.Router) {
		r.Use(a.optionalAuth, a.rateLimitUser)
		a.publicRoutesV1(r)
	})
	r.Group(func(r chi.Router) {
		r.Use(a.requireAuth, a.rateLimitUser)
		a.accountRoutesV1(r)
		a.roomRoutesV1(r)
		a.mediaRoutesV1(r)
	})
}

// unstableRoutes are unstable (MSC) endpoints under /_matrix/client/unstable.
func (a *API) unstableRoutes(r chi.Router) {
	r.Group(func(r chi.Router) {
		r.Use(a.requireAuth, a.rateLimitUser)
		a.keyRoutesUnstable(r)
		if a.RoomView != nil {
			r.Route("/im.nheko.summary", a.RoomSummaryUnstable) // MSC3266 room summary
		}
		if a.SlidingSync != nil { // MSC4186 simplified sliding sync
			r.Method(http.MethodPost, "/org.matrix.simplified_msc3575/sync", a.SlidingSync)
		}
	})
}

func (a *API) requireAuth(next http.Handler) http.Handler {
	return authn.Require(a.Accounts)(a.recordSeen(next))
}

func (a *API) optionalAuth(next http.Handler) http.Handler {
	return authn.Optional(a.Accounts)(a.recordSeen(next))
}

// Middleware wraps the whole HTTP surface: the access log, panic recovery,
// CORS, OPTIONS, the body cap, the client address (through trusted proxies)
// and Matrix-shaped 404/405.
func Middleware(cfg *config.Config) func(http.Handler) http.Handler {
	proxies := ratelimit.NewProxies(cfg.Listen.TrustedProxyPrefixes())
	level := accessLogLevel(cfg.Logging.AccessLog)
	return func(next http.Handler) http.Handler {
		return accessLog(level, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			r = r.WithContext(context.WithValue(r.Context(), clientIPKey{}, proxies.ClientIP(r)))
			defer func() {
				if v := recover(); v != nil {
					if v == http.ErrAbortHandler {
						panic(v)
					}
					recovery.Recovered(recovery.HTTPHandler, v, "method", r.Method, "path", r.URL.Path)
					mxhttp.WriteError(w, r, mxhttp.Internal("Internal server error"))
				}
			}()
			// CORS exactly as the client-server API asks, so browser clients work.
			h := w.Header()
			h.Set("Access-Control-Allow-Origin", "*")
			h.Set("Access-Control-Allow-Methods", "GET, POST, PUT, DELETE, OPTIONS")
			h.Set("Access-Control-Allow-Headers", "X-Requested-With, Content-Type, Authorization")
			if r.Method == http.MethodOptions {
				w.WriteHeader(http.StatusNoContent)
				return
			}
			limit := cfg.Limits.MaxRequestBytes
			if isUploadPath(r.URL.Path) {
				limit = cfg.Media.MaxUploadBytes // media.go
			}
			if r.ContentLength > limit {
				mxhttp.WriteError(w, r, mxhttp.TooLarge("Request body exceeds %d bytes", limit))
				return
			}
			if !cleanText(r.URL.Path) || !cleanQuery(r.URL.RawQuery) {
				mxhttp.WriteError(w, r, mxhttp.InvalidParam("Path and query must be valid UTF-8 without NUL characters"))
				return
			}
			r.Body = http.MaxBytesReader(w, r.Body, limit)
			next.ServeHTTP(w, r)
		}))
	}
}

// NotFound and MethodNotAllowed answer in Matrix's shape.
func NotFound(w http.ResponseWriter, r *http.Request) {
	mxhttp.WriteError(w, r, mxhttp.Unrecognized("Unrecognized request"))
}

func MethodNotAllowed(w http.ResponseWriter, r *http.Request) {
	mxhttp.WriteError(w, r, mxhttp.MethodNotAllowed())
}

func (a *API) rateLimitIP(next http.Handler) http.Handler {
	return limitBy(a.ipLimiter, clientIP, next)
}

func (a *API) rateLimitLogin(next http.Handler) http.Handler {
	return limitBy(a.loginLimiter, clientIP, next)
}

func (a *API) rateLimitUser(next http.Handler) http.Handler {
	return limitBy(a.userLimiter, func(r *http.Request) string {
		if d := authn.FromRequest(r); d != nil {
			return d.UserID.String()
		}
		return clientIP(r)
	}, next)
}

func limitBy(l *ratelimit.Limiter, key func(*http.Request) string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ok, wait := l.Allow(key(r)); !ok {
			ms := wait.Milliseconds() + 1
			w.Header().Set("Retry-After", strconv.FormatInt((ms+999)/1000, 10))
			mxhttp.WriteError(w, r, mxhttp.LimitExceeded("Too many requests").With("retry_after_ms", ms))
			return
		}
		next.ServeHTTP(w, r)
	})
}

type clientIPKey struct{}

// clientIP is the client's address as Middleware found it: the peer, or
// through a trusted proxy (listen.trusted_proxies) the forwarded address.
func clientIP(r *http.Request) string {
	if ip, ok := r.Context().Value(clientIPKey{}).(string); ok {
		return ip
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// cleanText rejects what no Matrix identifier contains and PostgreSQL text
// cannot store: NUL characters and invalid UTF-8 (after percent-decoding).
func cleanText(s string) bool {
	if u, err := url.QueryUnescape(s); err == nil {
		s = u
	}
	return utf8.ValidString(s) && !strings.ContainsRune(s, 0)
}

// cleanQuery is cleanText for each name and value of a query, as handlers
// will see them: unescaping the query whole would let one malformed escape
// ("%zz") exempt the rest ("&x=%ff") from the check.
func cleanQuery(raw string) bool {
	values, _ := url.ParseQuery(raw) // what r.URL.Query() gives handlers
	for k, vs := range values {
		if !utf8.ValidString(k) || strings.ContainsRune(k, 0) {
			return false
		}
		for _, v := range vs {
			if !utf8.ValidString(v) || strings.ContainsRune(v, 0) {
				return false
			}
		}
	}
	return true
}
