// Package homeserver assembles Myelin's modules into one running server: it
// opens the store, loads the signing key, builds the modules and mounts their
// HTTP APIs. cmd/myelin and the integration tests both start servers here.
package homeserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"github.com/go-chi/chi/v5"
	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/accounts"
	"github.com/myelin-chat/myelin/clientapi"
	"github.com/myelin-chat/myelin/clientapi/slidingsync"
	clientsync "github.com/myelin-chat/myelin/clientapi/sync"
	"github.com/myelin-chat/myelin/federation"
	"github.com/myelin-chat/myelin/internal/config"
	"github.com/myelin-chat/myelin/internal/follower"
	"github.com/myelin-chat/myelin/internal/metrics"
	"github.com/myelin-chat/myelin/internal/mxhttp"
	"github.com/myelin-chat/myelin/internal/notifier"
	"github.com/myelin-chat/myelin/internal/ratelimit"
	"github.com/myelin-chat/myelin/keyserver"
	"github.com/myelin-chat/myelin/mediaapi"
	"github.com/myelin-chat/myelin/roomserver"
	"github.com/myelin-chat/myelin/servernotices"
	"github.com/myelin-chat/myelin/storage"
	"github.com/myelin-chat/myelin/syncapi"
	"github.com/myelin-chat/myelin/userdirectory"
)

// Server is one homeserver instance.
type Server struct {
	Config     *config.Config
	DB         *storage.DB
	SigningKey *mfed.SigningKey
	Accounts   *accounts.Service
	Notifier   *notifier.Notifier
	Metrics    *metrics.Registry
	Keys       *keyserver.Service
	Rooms      *roomserver.Server
	Sync       *syncapi.Service
	Syncer     *clientsync.Syncer
	Media      *mediaapi.Service
	Notices    *servernotices.Service
	// Federation: keys, key fetcher/notary, request authentication, outbound client.
	Federation *federation.Module
	// Followers tail the stream for work that follows new events; closed on Shutdown.
	Followers []*follower.Follower

	handler http.Handler
	http    *http.Server
}

// New builds a server from cfg: opens (and migrates) the store and loads or
// creates the signing key. It does not listen yet.
func New(ctx context.Context, cfg *config.Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	key, err := federation.LoadOrGenerateSigningKey(filepath.Join(cfg.DataDir, federation.SigningKeyFile))
	if err != nil {
		return nil, err
	}
	db, err := storage.Open(ctx, cfg.DatabaseURL(), cfg.Database.MaxOpenConns)
	if err != nil {
		return nil, fmt.Errorf("opening store: %w", err)
	}
	s := &Server{
		Config:     cfg,
		DB:         db,
		SigningKey: key,
		Accounts:   accounts.New(db, cfg),
		Notifier:   notifier.New(db.Stream.Current()),
		Metrics:    metrics.New(),
	}
	s.Metrics.RegisterDBPool(db.PoolStats)
	db.Stream.OnAdvance(s.Notifier.Advanced)
	s.Accounts.SetNotifier(s.Notifier)
	// Keyserver: device-list changes fan out to the users sharing a room (the store's memberships).
	s.Keys = keyserver.New(db, db.Stream, s.Notifier, db, cfg.ServerName)
	s.Accounts.OnDeviceDeleted(func(ctx context.Context, userID id.UserID, deviceIDs []id.DeviceID) {
		ids := make([]string, len(deviceIDs))
		for i, d := range deviceIDs {
			ids[i] = d.String()
		}
		if err := s.Keys.DeleteDevices(ctx, userID.String(), ids); err != nil {
			slog.ErrorContext(ctx, "deleting keys of deleted devices", "user", userID, "err", err)
		}
	})
	if s.Rooms, err = roomserver.New(ctx, db, cfg, key, s.Notifier); err != nil {
		db.Close()
		return nil, err
	}
	s.Rooms.AccountData = db // room tags are room account data
	// Server notices: the system user's rooms; their invites cannot be rejected.
	s.Notices = servernotices.New(s.Rooms, db, cfg)
	s.Rooms.NoticeRooms = s.Notices
	// Federation: our keys, remote keys (the roomserver verifies remote signatures with them).
	if s.Federation, err = federation.New(federation.Options{
		Config: cfg, SigningKey: key, Store: db, Metrics: s.Metrics,
		Profiles: func(ctx context.Context, userID id.UserID) (map[string]any, error) {
			p, err := s.Accounts.GetProfile(ctx, userID)
			if err != nil {
				return nil, err
			}
			return p.JSON(), nil
		},
	}); err != nil {
		db.Close()
		return nil, err
	}
	s.Rooms.Keys = s.Federation.Fetcher
	s.Accounts.OnProfileChanged(func(ctx context.Context, userID id.UserID, _ accounts.Profile) {
		if err := s.Rooms.OnProfileChanged(ctx, userID); err != nil {
			slog.ErrorContext(ctx, "updating member events after a profile change", "user", userID, "err", err)
		}
	})
	// A deactivated account leaves its rooms, rejects its invites and withdraws its knocks.
	s.Accounts.OnDeactivated(func(ctx context.Context, userID id.UserID, _ bool) {
		if err := s.Rooms.LeaveAllRooms(ctx, userID); err != nil {
			slog.ErrorContext(ctx, "leaving the rooms of a deactivated account", "user", userID, "err", err)
		}
	})
	// Sync: the module (typing, receipts, presence, push) and GET /sync.
	s.Sync = syncapi.New(db, db, s.Notifier, cfg.Presence.Enabled, s.Accounts)
	s.Sync.AllowPrivatePushGateways = cfg.Push.AllowPrivateGateways
	s.Syncer = clientsync.New(db, db.Stream, s.Sync, s.Keys, s.Notifier)
	s.Syncer.PrevBatch = func(_ string, pos int64) string { return roomserver.StreamToken(pos - 1) }
	// Content repository: blobs under <data_dir>/media, metadata in the store.
	if s.Media, err = mediaapi.New(db, cfg); err != nil {
		db.Close()
		return nil, err
	}
	// Followers of new room events, each from its cursor in the store.
	upgrades, err := follower.Start(ctx, follower.Options{Name: syncapi.UpgradeFollower, Store: db, Stream: db.Stream,
		Handle: s.Sync.CopyPushRulesOnUpgrade}) // room upgrades carry the members' push rules over
	if err != nil {
		db.Close()
		return nil, err
	}
	s.Followers = append(s.Followers, upgrades)
	for _, f := range s.Followers {
		s.Metrics.RegisterFollowerLag(f.Name(), f.Lag)
	}
	s.handler = s.routes()
	return s, nil
}

func (s *Server) routes() http.Handler {
	r := chi.NewRouter()
	r.Use(s.Metrics.Middleware, clientapi.Middleware(s.Config))
	r.NotFound(clientapi.NotFound)
	r.MethodNotAllowed(clientapi.MethodNotAllowed)
	r.Get("/health", s.health)
	if s.Config.Listen.Metrics == "" {
		r.With(loopbackOnly).Get("/metrics", s.Metrics.Handler().ServeHTTP)
	}
	api := &clientapi.API{Config: s.Config, Accounts: s.Accounts, Keys: s.Keys, Rooms: s.Rooms,
		Sync: syncArea{s.Syncer, s.Sync}, Media: s.Media, UserDirectory: userdirectory.New(s.DB),
		ServerNotices: s.Notices}
	api.SlidingSync = slidingsync.New(s.Syncer, s.DB, s.Sync, s.Keys)
	api.Mount(r)
	s.Federation.Mount(r) // /_matrix/key, /_matrix/federation (nothing when federation is off)
	return r
}

// Handler is the server's whole HTTP surface.
func (s *Server) Handler() http.Handler { return s.handler }

func (s *Server) health(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if _, err := s.DB.SchemaVersion(ctx); err != nil {
		mxhttp.WriteJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unhealthy", "error": "database unreachable"})
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// loopbackOnly serves local clients only. A request that carries forwarding
// headers came through a proxy, which may well run on this host: refused
// too, so that a proxy on the same machine does not publish /metrics.
func loopbackOnly(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() || ratelimit.Forwarded(r) {
			mxhttp.WriteError(w, r, mxhttp.Forbidden("Metrics are only served to loopback clients"))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// Serve answers HTTP on ln until Shutdown. (A separate metrics listener, when
// configured, is started by ListenAndServe.)
func (s *Server) Serve(ln net.Listener) error {
	s.http = &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		// The whole request, body included (a 50 MiB upload at ≥ 170 KiB/s):
		// a slow sender cannot hold a connection open forever.
		ReadTimeout: 5 * time.Minute,
		IdleTimeout: 2 * time.Minute,
		ErrorLog:    slog.NewLogLogger(slog.Default().Handler(), slog.LevelWarn),
	}
	err := s.http.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// ListenAndServe listens on the configured addresses and serves until Shutdown.
func (s *Server) ListenAndServe() error {
	ln, err := net.Listen("tcp", s.Config.Listen.HTTP)
	if err != nil {
		return fmt.Errorf("listen.http: %w", err)
	}
	if addr := s.Config.Listen.Metrics; addr != "" {
		mln, err := net.Listen("tcp", addr)
		if err != nil {
			ln.Close()
			return fmt.Errorf("listen.metrics: %w", err)
		}
		go func() { _ = http.Serve(mln, s.Metrics.Handler()) }()
	}
	slog.Info("listening", "http", ln.Addr().String(), "server_name", s.Config.ServerName)
	return s.Serve(ln)
}

// Shutdown stops accepting requests, lets in-flight ones finish (until ctx
// ends), then closes the store.
func (s *Server) Shutdown(ctx context.Context) error {
	// Long-polling /sync requests answer at once (empty, as at their timeout)
	// so they do not hold the shutdown for up to their timeout.
	s.Notifier.Close()
	var err error
	if s.http != nil {
		err = s.http.Shutdown(ctx)
	}
	for _, f := range s.Followers {
		f.Close()
	}
	s.Sync.Close()
	s.DB.Close()
	return err
}

// syncArea is the client API's sync area: GET /sync plus the sync module.
type syncArea struct {
	*clientsync.Syncer
	*syncapi.Service
}
