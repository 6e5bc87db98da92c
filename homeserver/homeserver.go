// Package homeserver assembles Myelin's modules into one running server: it
// opens the store, loads the signing key, builds the modules and mounts their
// HTTP APIs. cmd/myelin and the integration tests both start servers here.
package homeserver

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"
	"maunium.net/go/mautrix"
	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/accounts"
	"github.com/myelin-chat/myelin/audit"
	"github.com/myelin-chat/myelin/backfill"
	"github.com/myelin-chat/myelin/clientapi"
	"github.com/myelin-chat/myelin/clientapi/slidingsync"
	"github.com/myelin-chat/myelin/clientapi/syncv2"
	"github.com/myelin-chat/myelin/directory"
	"github.com/myelin-chat/myelin/ephemeral"
	"github.com/myelin-chat/myelin/federation"
	"github.com/myelin-chat/myelin/federationapi"
	"github.com/myelin-chat/myelin/federationsender"
	"github.com/myelin-chat/myelin/ingest"
	"github.com/myelin-chat/myelin/internal/config"
	"github.com/myelin-chat/myelin/internal/follower"
	"github.com/myelin-chat/myelin/internal/metrics"
	"github.com/myelin-chat/myelin/internal/mxhttp"
	"github.com/myelin-chat/myelin/internal/notifier"
	"github.com/myelin-chat/myelin/internal/ratelimit"
	"github.com/myelin-chat/myelin/internal/servertls"
	"github.com/myelin-chat/myelin/keyserver"
	"github.com/myelin-chat/myelin/mediaapi"
	"github.com/myelin-chat/myelin/push"
	"github.com/myelin-chat/myelin/remotejoin"
	"github.com/myelin-chat/myelin/residency"
	"github.com/myelin-chat/myelin/retention"
	"github.com/myelin-chat/myelin/roomserver"
	"github.com/myelin-chat/myelin/roomview"
	"github.com/myelin-chat/myelin/servernotices"
	"github.com/myelin-chat/myelin/storage"
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
	Rooms      *roomserver.Server // the room writer
	RoomView   *roomview.Service  // rooms as clients read them
	Directory  *directory.Service // aliases and published rooms
	Ephemeral  *ephemeral.Service
	Push       *push.Service
	Syncer     *syncv2.Syncer
	// SlidingSync serves MSC4186 sliding sync.
	SlidingSync   *slidingsync.Handler
	UserDirectory *userdirectory.Service
	Media         *mediaapi.Service
	Notices       *servernotices.Service
	// Federation: keys, key fetcher/notary, request authentication, outbound client.
	Federation *federation.Module
	// Ingest processes inbound federation transactions (PUT /send): checks,
	// fetches missing prev events from the origin, then the writer's Input.
	Ingest *ingest.Engine
	// Sender delivers our room events to the other servers in the rooms
	// (nil when federation is off); fed by a follower of the stream.
	Sender *federationsender.Sender
	// EDUQueue is the durable outbound EDU queue the Sender's workers send
	// (nil when federation is off); modules queue to-device messages,
	// device lists, typing, receipts and presence to it.
	EDUQueue *federationsender.Queue
	// FederationAPI: the server-server room reads, mounted by Federation.
	FederationAPI *federationapi.API
	// RemoteJoins joins rooms hosted elsewhere (make_join/send_join through the transport's client).
	RemoteJoins *remotejoin.Joiner
	// RemoteInvites invites users of other servers (the invitee's server signs through the transport's client).
	RemoteInvites *remotejoin.Inviter
	// Retention purges expired messages (MSC1763) on a timer when enabled.
	Retention *retention.Purger
	// Residency is the data-localization policy (zones, room residency,
	// data kinds, trust list); always built, answering "allowed" when off.
	Residency *residency.Policy
	// TrustList keeps the residency trust list in force (nil unless
	// residency.trust_list has a source); stopped on close.
	TrustList *residency.Refresher
	// Audit is the audit trail (flows, refusals, admin actions); built
	// first, closed last (it writes what is queued).
	Audit *audit.Log
	// Followers tail the stream for work that follows new events; closed on Shutdown.
	Followers []*follower.Follower

	// PushDelivery sends queued notifications to push gateways (push_delivery.go).
	PushDelivery *push.Delivery

	handler http.Handler
	// clientIPs clears expired client IPs (client_ips.go); nil: not running.
	clientIPs *clientIPPurge
	// tls is the certificate source of listen.federation (nil: no TLS listener).
	tls servertls.Source

	mu      sync.Mutex     // guards the servers below, started and stopped from different goroutines
	servers []*http.Server // the HTTP and TLS listeners' servers
}

// New builds a server from cfg: opens (and migrates) the store, loads or
// creates the signing key and builds every module once, from the modules it
// needs. It does not listen yet.
//
// The order is the dependency graph, leaves first. The store, signing key
// and notifier need nothing. The federation transport (our keys, policy,
// client, remote key fetcher) needs only the store; the outbound EDU queue
// follows it, and the keyserver (which queues EDUs and asks other
// servers for their users' keys through the transport's client) follows
// that. The roomserver verifies remote signatures with the transport's
// fetcher, so the transport comes before the roomserver; the federation API answers
// profile queries from accounts and comes after it. The roomserver asks the
// store, not the notices module, whether a room is a user's notices room,
// so it comes before servernotices, which sends as the system user through
// it. Accounts tells the roomserver of profile changes and deactivations and
// the keyserver of deleted devices, so it follows both; servernotices tags
// its rooms through accounts. The ephemeral module writes m.fully_read
// through accounts and tells push of read receipts; GET /sync and sliding
// sync read ephemeral, push and the keyserver.
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
	s := &Server{Config: cfg, DB: db, SigningKey: key, Notifier: notifier.New(db.Stream.Current()), Metrics: metrics.New()}
	s.Metrics.RegisterDBPool(db.PoolStats)
	db.Stream.OnAdvance(s.Notifier.Advanced)
	if err := s.build(ctx); err != nil {
		s.close()
		return nil, err
	}
	if err := s.startFollowers(ctx); err != nil {
		s.close()
		return nil, err
	}
	// Our users' device-list updates a crash left stored but not queued.
	if err := s.Keys.AnnouncePending(ctx); err != nil {
		s.close()
		return nil, fmt.Errorf("announcing pending device-list updates: %w", err)
	}
	for _, f := range s.Followers {
		s.Metrics.RegisterFollowerLag(f.Name(), f.Lag)
	}
	s.handler = s.routes()
	if s.tls, err = tlsSource(cfg); err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

// tlsSource loads listen.federation's certificate source: the PEM files, or
// an ACME manager caching under listen.acme.cache_dir. nil without listener.
func tlsSource(cfg *config.Config) (servertls.Source, error) {
	l := cfg.Listen
	switch {
	case l.Federation == "":
		return nil, nil
	case l.ACME.Enabled:
		return servertls.NewACME(servertls.ACMEOptions{DirectoryURL: l.ACME.DirectoryURL, Email: l.ACME.Email,
			CacheDir: cfg.ACMECacheDir(), Domains: cfg.ACMEDomains()})
	default:
		f, err := servertls.LoadFiles(l.TLSCertificate, l.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("listen.tls_certificate: %w", err)
		}
		return f, nil
	}
}

// ReloadTLS rereads listen.federation's certificate files (SIGHUP): new
// handshakes get the new certificate, open connections stay. On error the
// old certificate stays in use. Nothing to do without files (ACME renews
// by itself).
func (s *Server) ReloadTLS() error {
	if s.tls == nil {
		return nil
	}
	return s.tls.Reload()
}

// build builds the modules over s's store, key and notifier (see New).
func (s *Server) build(ctx context.Context) error {
	cfg, db, key := s.Config, s.DB, s.SigningKey
	if err := s.buildAudit(); err != nil {
		return err
	}
	// The data-localization policy: the transport asks it per server, the
	// boundary modules per room and data kind.
	s.buildResidency()
	if err := s.startResidencyTrust(ctx); err != nil {
		return err
	}
	transport, err := federation.NewTransport(federation.TransportOptions{Config: cfg, SigningKey: key, Store: db, Metrics: s.Metrics,
		Residency: residencyServers{s.Residency}})
	if err != nil {
		return err
	}
	s.watchInboundRefusals(transport)
	if err := s.buildEDUQueue(transport); err != nil {
		return err
	}
	// Device-list changes fan out to the users sharing a room (the store's
	// memberships); to-device messages and device lists go to other servers
	// through the EDU queue; remote users' keys and devices are asked through
	// the transport's client (keys_remote.go) when federation is on.
	s.Keys = keyserver.New(keyserver.Options{Store: db, Stream: db.Stream, Notifier: s.Notifier, Members: db, ServerName: cfg.ServerName,
		EDUs: eduSender[keyserver.EDUSender](s), Federation: s.keysFederation(transport)})
	// Server notices rooms are recorded in the store.
	if s.Rooms, err = roomserver.New(ctx, roomserver.Options{Store: db, Stream: db.Stream, Config: cfg, SigningKey: key, Notifier: s.Notifier,
		Keys: transport.Fetcher, NoticeRooms: db}); err != nil {
		return err
	}
	// Other servers' rooms (in space hierarchies), aliases and directories
	// are asked through the transport's client when federation is on; so is
	// the history /messages fetches before what we have (backfill; verified
	// and stored by the roomserver's ImportBackfill). With federation off
	// there is no one to ask.
	var remoteDirectory directory.Remote
	var remoteSpaces roomview.RemoteSpaces
	var backfiller roomview.Backfiller
	var remoteTimestamps roomview.RemoteTimestamps
	if cfg.FederationEnabled() {
		// Each asks the residency policy first (residency_outbound.go).
		remoteDirectory = residentDirectory{directoryRemote{transport.Client}, s.outboundGate()}
		remoteSpaces = residentSpaces{spacesRemote{c: transport.Client, serverName: cfg.ServerName}, s.outboundGate()}
		history := residentBackfill{backfillRemote{transport.Client}, s.outboundGate()}
		bf := backfill.New(backfill.Options{ServerName: cfg.ServerName, Client: history,
			Rooms: s.Rooms, Store: db, Timestamps: history})
		backfiller, remoteTimestamps = bf, bf
	}
	s.RoomView = roomview.New(roomview.Options{Store: db, RemoteSpaces: remoteSpaces, Backfill: backfiller,
		Timestamps: remoteTimestamps})
	// Deleting an alias drops it from m.room.canonical_alias through the writer.
	s.Directory = directory.New(directory.Options{Store: db, Rooms: s.Rooms, ServerName: cfg.ServerName, Remote: remoteDirectory})
	// Other servers' users' profiles are asked of their servers through the
	// transport's client; with federation off there is no one to ask (404).
	var remoteProfiles accounts.RemoteProfiles
	if cfg.FederationEnabled() {
		remoteProfiles = residentProfiles{profileRemote{transport.Client}, s.outboundGate()}
	}
	// Content repository: blobs under <data_dir>/media, metadata in the store;
	// other servers' media fetched through the transport's client (media_remote.go).
	// Built before accounts, which erases an erased account's uploads through it.
	var remoteMedia mediaapi.RemoteFetcher
	if cfg.FederationEnabled() {
		remoteMedia = newMediaRemote(cfg, transport.Client)
	}
	peerRefusals := newPeerRefusals(s.Audit) // refusals of other servers' requests, once a minute each
	if s.Media, err = mediaapi.New(mediaapi.Options{Store: db, Config: cfg, Remote: remoteMedia, Metrics: s.Metrics,
		Residency: s.Residency, Audit: mediaAudit{log: s.Audit, serverName: cfg.ServerName, refusals: peerRefusals}}); err != nil {
		return err
	}
	s.Accounts = accounts.New(accounts.Options{Store: db, Config: cfg, Notifier: s.Notifier, Devices: s.Keys, Rooms: s.Rooms,
		Remote: remoteProfiles, Media: s.Media})
	// The notices room is tagged m.server_notice: room account data, through accounts.
	s.Notices = servernotices.New(servernotices.Options{Rooms: s.Rooms, View: s.RoomView, Tags: s.Accounts, Store: db, Config: cfg})
	s.Federation = federation.New(federation.Options{Config: cfg, Transport: transport, Profiles: s.Accounts, OpenID: s.Accounts,
		ProfileServed: s.profileServed})
	// Push rules, pushers and unread counts; typing, receipts and presence
	// (a read receipt resets the unread counts); GET /sync and sliding sync over both
	// (below). Built before ingest, which hands them their EDUs.
	if s.PushDelivery, err = s.buildPushDelivery(); err != nil {
		return err
	}
	s.Push = push.New(push.Options{Store: db, Stream: db.Stream, Rooms: db, Notifier: s.Notifier,
		AllowPrivateGateways: cfg.Push.AllowPrivateGateways, Queue: s.PushDelivery, QueueStore: db})
	s.Ephemeral = ephemeral.New(ephemeral.Options{Store: db, Stream: db.Stream, Rooms: db, Notifier: s.Notifier,
		AccountData: s.Accounts, Receipts: s.Push, Presence: cfg.Presence.Enabled,
		ServerName: cfg.ServerName, ServerACL: federationapi.ACLAllows, EDUs: eduSender[ephemeral.EDUSender](s)})
	// Inbound PDUs reach the writer through ingest; it asks origins for
	// missing events through the transport's client; its EDUs go to the
	// keyserver and ephemeral.
	if s.Ingest, err = ingest.New(ingest.Options{Rooms: s.Rooms, Store: db, Remote: ingestRemote{transport.Client},
		State: ingestRemote{transport.Client}, Keys: transport.Fetcher, Metrics: s.Metrics, ServerACL: federationapi.ACLAllows,
		OutOfBand: s.Rooms, EDUs: eduHandlers(s), Audit: peerRefusals, Residency: s.Residency, ServerName: cfg.ServerName}); err != nil {
		return err
	}
	// The room reads other servers ask for: the roomserver's room-state reads,
	// the store for lookups, the directory for aliases and published rooms,
	// roomview for space hierarchies; and their transactions, through ingest.
	s.FederationAPI = federationapi.New(federationapi.Options{ServerName: cfg.ServerName, Rooms: s.Rooms, Store: db,
		Directory: s.Directory, Spaces: s.RoomView, Transactions: s.Ingest, Joins: s.Rooms,
		Memberships: s.Rooms, Invites: s.Rooms, UserKeys: s.Keys,
		Residency: inboundResidency{s.Residency}, Audit: peerRefusals})
	s.RemoteJoins = remotejoin.New(remotejoin.Options{ServerName: cfg.ServerName, Rooms: s.Rooms, Client: transport.Client,
		OutOfBand: s.Rooms, Memberships: transport.Client, Residents: s.Rooms, Residency: residencyJoins{g: s.outboundGate()}})
	s.RemoteInvites = remotejoin.NewInviter(remotejoin.Options{Invites: s.Rooms, InviteClient: transport.Client,
		Policy: invitePolicy{transport.Policy}, Residency: residencyJoins{g: s.outboundGate(), acl: s.DB}})
	// A limited timeline's prev_batch is a roomview pagination token.
	s.Syncer = syncv2.New(syncv2.Options{Store: db, Stream: db.Stream, Ephemeral: s.Ephemeral, Push: s.Push, Keys: s.Keys,
		Notifier: s.Notifier, Tokens: roomviewTokens{}})
	s.SlidingSync = slidingsync.New(slidingsync.Options{Syncer: s.Syncer, Store: db, Ephemeral: s.Ephemeral, Push: s.Push,
		Notifier: s.Notifier, Keys: s.Keys})
	s.UserDirectory = userdirectory.New(userdirectory.Options{Store: db, Scope: s.directoryScope()})
	s.buildRetention()
	s.startClientIPPurge()
	return nil
}

// startFollowers starts the followers of new room events, each from its
// cursor in the store.
func (s *Server) startFollowers(ctx context.Context) error {
	upgrades, err := follower.Start(ctx, follower.Options{Name: push.UpgradeFollower, Store: s.DB, Stream: s.DB.Stream,
		Handle: s.Push.CopyPushRulesOnUpgrade}) // room upgrades carry the members' push rules over
	if err != nil {
		return err
	}
	s.Followers = append(s.Followers, upgrades)
	if err := s.startMediaRefsFollower(ctx); err != nil {
		return err
	}
	if err := s.startPushFollower(ctx); err != nil {
		return err
	}
	if !s.Config.FederationEnabled() {
		return nil
	}
	// Our room events to the other servers in their rooms: durable queues
	// per destination in the store, sent through the transport's client.
	t := s.Federation.Transport
	sc := s.Config.Federation.Sender
	if s.Sender, err = federationsender.New(ctx, federationsender.Options{ServerName: s.Config.ServerName, Store: s.DB,
		Client: t.Client, Policy: t.Policy, Metrics: s.Metrics, MaxConcurrent: sc.MaxConcurrent,
		MinBackoff: sc.MinBackoff.Duration, MaxBackoff: sc.MaxBackoff.Duration, MaxQueuedPerRoom: sc.MaxQueuedPerRoom,
		KeepPerRoom: sc.KeepPerRoom, RequestTimeout: sc.RequestTimeout.Duration, RefusalsBeforeDrop: sc.RefusalsBeforeDrop,
		EDUs: s.EDUQueue, Audit: s.Audit, Residency: s.senderResidency()}); err != nil {
		return err
	}
	sends, err := follower.Start(ctx, follower.Options{Name: federationsender.FollowerName, Store: s.DB, Stream: s.DB.Stream,
		Handle: s.Sender.Handle})
	if err != nil {
		return err
	}
	s.Followers = append(s.Followers, sends)
	return s.startPresenceFollower(ctx)
}

// close releases what New built, in reverse order: the followers (which
// save their cursors), the presence timers, then the store. It is also the
// cleanup of a New that failed part-way, so it skips what was not built.
func (s *Server) close() {
	for i := len(s.Followers) - 1; i >= 0; i-- {
		s.Followers[i].Close()
	}
	if s.Sender != nil { // after its follower: nothing queues to it any more
		s.Sender.Close()
	}
	s.closePush()
	if s.Ephemeral != nil {
		s.Ephemeral.Close()
	}
	if s.Retention != nil {
		s.Retention.Close()
	}
	s.stopClientIPPurge()
	if s.TrustList != nil {
		s.TrustList.Close()
	}
	if s.Audit != nil { // after the sender: what it recorded is written
		s.Audit.Close()
	}
	s.DB.Close()
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
	api := &clientapi.API{Config: s.Config, Accounts: s.Accounts, Keys: s.Keys, Rooms: s.Rooms, RoomView: s.RoomView, Directory: s.Directory,
		Sync: s.Syncer, Ephemeral: s.Ephemeral, Push: s.Push, SlidingSync: s.SlidingSync, Media: s.Media, UserDirectory: s.UserDirectory,
		ServerNotices: s.Notices, Audit: s.Audit}
	api.ResidencyCreation = s.Residency
	if s.Config.FederationEnabled() {
		api.RemoteJoins = s.RemoteJoins
		api.RemoteInvites = s.RemoteInvites
	}
	api.Mount(r)
	// /_matrix/key, /_matrix/federation with the room API behind X-Matrix (nothing when federation is off)
	s.Federation.Mount(r, s.FederationAPI, federationapi.NewMedia(s.Media))
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
	return s.serve(ln)
}

// ServeTLS answers HTTPS on ln until Shutdown, with listen.federation's
// certificate: the whole API, federation, keys and client API alike (the
// same handler as Serve). It fails when no TLS listener is configured.
func (s *Server) ServeTLS(ln net.Listener) error {
	if s.tls == nil {
		return errors.New("listen.federation: no TLS listener configured")
	}
	return s.serve(tls.NewListener(ln, s.tls.TLSConfig()))
}

func (s *Server) serve(ln net.Listener) error {
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		// The whole request, body included (a 50 MiB upload at ≥ 170 KiB/s):
		// a slow sender cannot hold a connection open forever.
		ReadTimeout: 5 * time.Minute,
		IdleTimeout: 2 * time.Minute,
		ErrorLog:    slog.NewLogLogger(slog.Default().Handler(), slog.LevelWarn),
	}
	s.mu.Lock()
	s.servers = append(s.servers, srv)
	s.mu.Unlock()
	err := srv.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// ListenAndServe listens on the configured addresses and serves until
// Shutdown: listen.http, and listen.federation (TLS), listen.metrics and
// listen.acme.http_challenge when set.
func (s *Server) ListenAndServe() error {
	ln, err := net.Listen("tcp", s.Config.Listen.HTTP)
	if err != nil {
		return fmt.Errorf("listen.http: %w", err)
	}
	var extra []net.Listener
	closeAll := func() {
		ln.Close()
		for _, l := range extra {
			l.Close()
		}
	}
	listen := func(key, addr string) (net.Listener, error) {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("%s: %w", key, err)
		}
		extra = append(extra, l)
		return l, nil
	}
	var tlsLn, challengeLn net.Listener
	if addr := s.Config.Listen.Federation; addr != "" {
		if tlsLn, err = listen("listen.federation", addr); err != nil {
			return err
		}
		if acme, ok := s.tls.(*servertls.ACME); ok && s.Config.Listen.ACME.HTTPChallenge != "" {
			if challengeLn, err = listen("listen.acme.http_challenge", s.Config.Listen.ACME.HTTPChallenge); err != nil {
				return err
			}
			challenge := &http.Server{Handler: acme.HTTPHandler(), ReadHeaderTimeout: 10 * time.Second}
			s.mu.Lock()
			s.servers = append(s.servers, challenge)
			s.mu.Unlock()
			go func() { _ = challenge.Serve(challengeLn) }()
		}
	}
	if addr := s.Config.Listen.Metrics; addr != "" {
		mln, err := listen("listen.metrics", addr)
		if err != nil {
			return err
		}
		go func() { _ = http.Serve(mln, s.Metrics.Handler()) }()
	}
	errc := make(chan error, 2)
	if tlsLn != nil {
		slog.Info("listening (TLS)", "federation", tlsLn.Addr().String())
		go func() { errc <- s.ServeTLS(tlsLn) }()
	}
	slog.Info("listening", "http", ln.Addr().String(), "server_name", s.Config.ServerName)
	go func() { errc <- s.Serve(ln) }()
	return <-errc // the first listener to stop; Shutdown stops the others
}

// Shutdown stops accepting requests, lets in-flight ones finish (until ctx
// ends), then closes what New built (close).
func (s *Server) Shutdown(ctx context.Context) error {
	// Long-polling /sync requests answer at once (empty, as at their timeout)
	// so they do not hold the shutdown for up to their timeout.
	s.Notifier.Close()
	s.mu.Lock()
	servers := s.servers
	s.mu.Unlock()
	var errs []error
	for _, srv := range servers {
		errs = append(errs, srv.Shutdown(ctx))
	}
	s.close()
	return errors.Join(errs...)
}

// roomviewTokens spells /sync's prev_batch as roomview's /messages reads it.
type roomviewTokens struct{}

func (roomviewTokens) StreamToken(pos int64) string { return roomview.StreamToken(pos) }

func (roomviewTokens) TopologicalToken(depth, pos int64) string {
	return roomview.TopologicalToken(depth, pos)
}

// profileRemote backs accounts.RemoteProfiles with the transport's client:
// GET /_matrix/federation/v1/query/profile on the user's server, all fields
// kept (mautrix's QueryProfile keeps only two).
type profileRemote struct{ c *mfed.Client }

func (r profileRemote) QueryProfile(ctx context.Context, userID id.UserID) (map[string]json.RawMessage, error) {
	var fields map[string]json.RawMessage
	_, resp, err := r.c.MakeFullRequest(ctx, mfed.RequestParams{ServerName: userID.Homeserver(), Method: http.MethodGet,
		Path: mfed.URLPath{"v1", "query", "profile"}, Query: url.Values{"user_id": {userID.String()}},
		Authenticate: true, ResponseJSON: &fields})
	if resp != nil && resp.StatusCode == http.StatusNotFound {
		return nil, accounts.ErrRemoteProfileNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("querying %s's profile: %w", userID, err)
	}
	return fields, nil
}

// StateIDs backs ingest.StateRemote: GET /state_ids.
func (r ingestRemote) StateIDs(ctx context.Context, server string, roomID id.RoomID, eventID id.EventID) ([]id.EventID, []id.EventID, error) {
	resp, err := r.c.GetStateIDs(ctx, server, roomID, eventID)
	if err != nil {
		return nil, nil, err
	}
	return resp.PDUs, resp.AuthChain, nil
}

// Event backs ingest.StateRemote: GET /event, its one PDU.
func (r ingestRemote) Event(ctx context.Context, server string, eventID id.EventID) (json.RawMessage, error) {
	resp, err := r.c.GetEvent(ctx, server, eventID)
	if err != nil {
		return nil, err
	}
	if len(resp.PDUs) != 1 {
		return nil, fmt.Errorf("/event of %s answered %d PDUs", eventID, len(resp.PDUs))
	}
	return resp.PDUs[0], nil
}

// ingestRemote backs ingest.Remote and ingest.StateRemote with the transport's client.
type ingestRemote struct{ c *mfed.Client }

func (r ingestRemote) GetMissingEvents(ctx context.Context, server string, roomID id.RoomID, earliest, latest []id.EventID, limit int) ([]json.RawMessage, error) {
	resp, err := r.c.GetMissingEvents(ctx, &mfed.ReqGetMissingEvents{ServerName: server, RoomID: roomID,
		EarliestEvents: earliest, LatestEvents: latest, Limit: limit})
	if err != nil {
		return nil, err
	}
	return resp.Events, nil
}

// invitePolicy is the federation policy as remotejoin asks it, for invites.
type invitePolicy struct{ p federation.Policy }

func (p invitePolicy) AllowServer(ctx context.Context, server string) bool {
	return p.p.AllowServer(ctx, server, federation.PurposeInvite)
}

// backfillRemote backs backfill.Client with the transport's client.
type backfillRemote struct{ c *mfed.Client }

func (r backfillRemote) Backfill(ctx context.Context, server string, roomID id.RoomID, from []id.EventID, limit int) ([]json.RawMessage, error) {
	resp, err := r.c.Backfill(ctx, &mfed.ReqBackfill{ServerName: server, RoomID: roomID, Limit: limit, BackfillFrom: from})
	if err != nil {
		return nil, err
	}
	return resp.PDUs, nil
}

// TimestampToEvent is GET /v1/timestamp_to_event (backfill.TimestampClient).
func (r backfillRemote) TimestampToEvent(ctx context.Context, server string, roomID id.RoomID, ts int64, forwards bool) (id.EventID, int64, error) {
	dir := mautrix.DirectionBackward
	if forwards {
		dir = mautrix.DirectionForward
	}
	resp, err := r.c.TimestampToEvent(ctx, server, roomID, time.UnixMilli(ts), dir)
	if err != nil {
		return "", 0, err
	}
	return resp.EventID, resp.Timestamp.UnixMilli(), nil
}

func (r backfillRemote) EventAuth(ctx context.Context, server string, roomID id.RoomID, eventID id.EventID) ([]json.RawMessage, error) {
	resp, err := r.c.GetEventAuthChain(ctx, server, roomID, eventID)
	if err != nil {
		return nil, err
	}
	return resp.AuthChain, nil
}
