package tests

import (
	"context"
	"errors"
	"io"
	"mime"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/federation"
	"github.com/myelin-chat/myelin/homeserver/testserver"
	"github.com/myelin-chat/myelin/internal/config"
)

// Federation tests run several servers on loopback, each known to the others
// through federation.hosts in plain HTTP. A server's port is only known once
// it has started, so every server name maps to a relay: a loopback listener
// opened before any server starts, forwarding to whatever address it is told
// later (none: connections are refused, an unreachable server).

type relay struct {
	ln     net.Listener
	target atomic.Pointer[string]
	mu     sync.Mutex
	conns  map[net.Conn]bool // open connections, for cut
}

func newRelay(t testing.TB) *relay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &relay{ln: ln, conns: map[net.Conn]bool{}}
	var wg sync.WaitGroup
	// Kept-alive connections would hold the cleanup until the clients'
	// idle timeout: close them.
	t.Cleanup(func() { ln.Close(); r.cut(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				r.serve(c)
			}()
		}
	}()
	return r
}

func (r *relay) addr() string { return r.ln.Addr().String() }

// point sends the relay's connections to addr ("" refuses them).
func (r *relay) point(addr string) { r.target.Store(&addr) }

// cut closes the relay's open connections (kept-alive ones included), as
// a network failure would: with point("") the link is down until pointed again.
func (r *relay) cut() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for c := range r.conns {
		c.Close()
	}
}

func (r *relay) serve(c net.Conn) {
	defer c.Close()
	r.mu.Lock()
	r.conns[c] = true
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		delete(r.conns, c)
		r.mu.Unlock()
	}()
	target := r.target.Load()
	if target == nil || *target == "" {
		return
	}
	up, err := net.DialTimeout("tcp", *target, 5*time.Second)
	if err != nil {
		return
	}
	defer up.Close()
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(up, c); up.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, up); c.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
	<-done
	<-done
}

// strictJSON starts a proxy to the server at addr that refuses, as
// gomatrixserverlib's VerifyHTTPRequest does (Complement's test servers,
// Dendrite), a request body not labelled application/json with a 400; it
// returns the proxy's address, for a relay to point at.
func strictJSON(t testing.TB, addr string) string {
	t.Helper()
	proxy := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: addr})
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength != 0 {
			if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct != "application/json" {
				w.WriteHeader(http.StatusBadRequest)
				_, _ = w.Write([]byte(`{"errcode":"M_UNKNOWN","error":"Bad Request"}`))
				return
			}
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(ts.Close)
	return ts.Listener.Addr().String()
}

// fedNet is a set of server names with relays.
type fedNet struct {
	relays map[string]*relay
}

func newFedNet(t testing.TB, names ...string) *fedNet {
	n := &fedNet{relays: map[string]*relay{}}
	for _, name := range names {
		n.relays[name] = newRelay(t)
	}
	return n
}

// hosts is the federation.hosts map every server of the net uses.
func (n *fedNet) hosts() map[string]string {
	out := map[string]string{}
	for name, r := range n.relays {
		out[name] = r.addr()
	}
	return out
}

func (n *fedNet) configure(cfg *config.Config) {
	cfg.Federation.Hosts = n.hosts()
	cfg.Federation.InsecureHTTPHosts = nil
	for name := range n.relays {
		cfg.Federation.InsecureHTTPHosts = append(cfg.Federation.InsecureHTTPHosts, name)
	}
	cfg.Federation.RequestsPerSecond, cfg.Federation.Burst = 10000, 100000
	cfg.Federation.NotaryRequestsPerSecond, cfg.Federation.NotaryBurst = 10000, 100000
	cfg.Federation.KeyFetchesPerSecond, cfg.Federation.KeyFetchBurst = 10000, 100000
}

// start starts server name on backend, reachable by the others through its relay.
func (n *fedNet) start(t testing.TB, backend, name string, configure ...func(*config.Config)) *testserver.Server {
	t.Helper()
	srv := testserver.Start(t, backend, testserver.Options{ServerName: name, Configure: func(cfg *config.Config) {
		n.configure(cfg)
		for _, f := range configure {
			f(cfg)
		}
	}})
	n.relays[name].point(srv.Config.Listen.HTTP)
	return srv
}

// restartable starts server name and returns a function that starts it
// again on the same data directory and database (a restart after Shutdown):
// the first call of the returned function is the first start.
func (n *fedNet) restartable(t *testing.T, backend, name string, configure ...func(*config.Config)) func() *testserver.Server {
	t.Helper()
	dir := t.TempDir()
	var dbURL string
	return func() *testserver.Server {
		return n.start(t, backend, name, append(configure, func(c *config.Config) {
			c.DataDir = dir
			if dbURL == "" {
				dbURL = c.Database.URL
			}
			c.Database.URL = dbURL
		})...)
	}
}

// remoteRoom is hs.test with a public room of alice's, and remote.test served
// by handler (a fake remote server); head gives the room's forward
// extremities and the depth above them, to build remote.test's next event on.
type remoteRoom struct {
	net   *fedNet
	srv   *testserver.Server
	alice *mautrix.Client
	room  id.RoomID
}

func newRemoteRoom(t *testing.T, backend string, handler http.Handler) *remoteRoom {
	t.Helper()
	n := newFedNet(t, "hs.test", "remote.test")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hsrv := &http.Server{Handler: handler}
	go hsrv.Serve(ln)
	t.Cleanup(func() { hsrv.Close() })
	n.relays["remote.test"].point(ln.Addr().String())
	srv := n.start(t, backend, "hs.test")
	alice := srv.Register(t, "alice")
	room := createRoom(t, alice, nil)
	_ = clientCall(t, alice, "PUT", "/_matrix/client/v3/rooms/"+string(room)+"/state/m.room.join_rules/", map[string]string{"join_rule": "public"})
	return &remoteRoom{net: n, srv: srv, alice: alice, room: room}
}

func (r *remoteRoom) head(t *testing.T) ([]id.EventID, int64) {
	t.Helper()
	row, err := r.srv.DB.GetRoom(context.Background(), string(r.room))
	if err != nil {
		t.Fatal(err)
	}
	var out []id.EventID
	for _, x := range row.Extremities {
		out = append(out, id.EventID(x))
	}
	return out, row.MaxDepth + 1
}

// client is an outbound federation client speaking as origin with key,
// routed over the net (to test what a misbehaving server could send).
func (n *fedNet) client(t testing.TB, origin string, key *mfed.SigningKey) *mfed.Client {
	t.Helper()
	cfg := config.Default()
	cfg.ServerName = origin
	n.configure(cfg)
	c, err := federation.NewClient(cfg, key, federation.AllowAll{})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// errStatus is the HTTP status of a mautrix client error (0 if none).
func errStatus(err error) int {
	var httpErr mautrix.HTTPError
	if errors.As(err, &httpErr) && httpErr.Response != nil {
		return httpErr.Response.StatusCode
	}
	return 0
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}
