// Package testserver starts real Myelin servers in-process on loopback ports
// for integration tests, against SQLite or a throwaway PostgreSQL.
package testserver

import (
	"context"
	"net"
	"net/http"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/homeserver"
	"github.com/myelin-chat/myelin/internal/config"
	"github.com/myelin-chat/myelin/internal/pgtest"
)

// Backends lists the store backends every integration test runs against.
var Backends = pgtest.Backends

// Server is a running test homeserver.
type Server struct {
	*homeserver.Server
	URL string // http://127.0.0.1:port
}

// Options adjust the configuration before the server starts.
type Options struct {
	ServerName string
	Configure  func(*config.Config)
}

// Main is a TestMain body: it runs the tests, then stops the shared PostgreSQL cluster.
func Main(m *testing.M) { pgtest.Main(m) }

// Start starts a server on a free loopback port with the given backend
// ("sqlite" or "postgres"); it is shut down when the test ends.
func Start(t testing.TB, backend string, opts ...Options) *Server {
	t.Helper()
	var o Options
	if len(opts) > 0 {
		o = opts[0]
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.ZeroConfig = true
	cfg.DataDir = t.TempDir()
	cfg.Listen.HTTP = ln.Addr().String()
	cfg.ServerName = "localhost"
	if o.ServerName != "" {
		cfg.ServerName = o.ServerName
	}
	// Tests hammer the API from one IP: keep rate limits out of the way unless a test sets them.
	cfg.Limits.RequestsPerSecond, cfg.Limits.Burst = 10000, 100000
	cfg.Limits.LoginPerSecond, cfg.Limits.LoginBurst = 10000, 100000
	cfg.Limits.CreateRoomPerSecond, cfg.Limits.CreateRoomBurst = 10000, 100000
	cfg.Logging.AccessLog = "debug" // below the default logger's level: test output stays readable
	switch backend {
	case "sqlite":
	case "postgres":
		u, err := pgtest.URL(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		cfg.Database.URL = u
	default:
		t.Fatalf("unknown backend %q", backend)
	}
	if o.Configure != nil {
		o.Configure(cfg)
	}
	hs, err := homeserver.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = hs.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = hs.Shutdown(ctx)
	})
	return &Server{Server: hs, URL: "http://" + ln.Addr().String()}
}

// Client returns an unauthenticated mautrix client for the server.
func (s *Server) Client(t testing.TB) *mautrix.Client {
	t.Helper()
	c, err := mautrix.NewClient(s.URL, "", "")
	if err != nil {
		t.Fatal(err)
	}
	c.Client = &http.Client{Timeout: 60 * time.Second}
	return c
}

// Register creates a user with password "password-<localpart>" and returns a
// logged-in client.
func (s *Server) Register(t testing.TB, localpart string) *mautrix.Client {
	t.Helper()
	c := s.Client(t)
	resp, err := c.RegisterDummy(context.Background(), &mautrix.ReqRegister[any]{
		Username: localpart, Password: "password-" + localpart,
	})
	if err != nil {
		t.Fatalf("registering %s: %v", localpart, err)
	}
	c.SetCredentials(resp.UserID, resp.AccessToken)
	c.DeviceID = resp.DeviceID
	return c
}

// UserID is the full ID of a local user on this server.
func (s *Server) UserID(localpart string) id.UserID {
	return id.NewUserID(localpart, s.Config.ServerName)
}
