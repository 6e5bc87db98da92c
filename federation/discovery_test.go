package federation

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
	mfed "maunium.net/go/mautrix/federation"

	"github.com/myelin-chat/myelin/internal/config"
	"github.com/myelin-chat/myelin/internal/netguard"
)

// fakeDNS answers SRV questions from a table over UDP on loopback; every
// other question gets NXDOMAIN.
func fakeDNS(t *testing.T, srv map[string]net.SRV) *net.Resolver {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, addr, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			var p dnsmessage.Parser
			h, err := p.Start(buf[:n])
			if err != nil {
				continue
			}
			q, err := p.Question()
			if err != nil {
				continue
			}
			b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true})
			b.EnableCompression()
			rec, ok := srv[q.Name.String()]
			if !ok || q.Type != dnsmessage.TypeSRV {
				b = dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: h.ID, Response: true, RCode: dnsmessage.RCodeNameError})
			}
			_ = b.StartQuestions()
			_ = b.Question(q)
			if ok && q.Type == dnsmessage.TypeSRV {
				_ = b.StartAnswers()
				_ = b.SRVResource(dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 60},
					dnsmessage.SRVResource{Priority: rec.Priority, Weight: rec.Weight, Port: rec.Port,
						Target: dnsmessage.MustNewName(rec.Target)})
			}
			msg, err := b.Finish()
			if err == nil {
				_, _ = pc.WriteTo(msg, addr)
			}
		}
	}()
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp", pc.LocalAddr().String())
	}}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// Discovery as the spec orders it, through the real outbound client: fake
// DNS for SRV, a fake .well-known, and a dialer that records the address
// chosen and connects to one TLS test server (whose certificate is valid for
// example.com, *.example.com and 127.0.0.1), which records the Host header.
func TestDiscovery(t *testing.T) {
	var mu sync.Mutex
	var gotHost string
	ts := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		gotHost = r.Host
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"server":{"name":"Test","version":"1"}}`)
	}))
	t.Cleanup(ts.Close)
	plain := httptest.NewServer(ts.Config.Handler)
	t.Cleanup(plain.Close)

	cfg := config.Default()
	cfg.ServerName = "me.test"
	cfg.Federation.Hosts = map[string]string{"static.test": strings.TrimPrefix(plain.URL, "http://")}
	cfg.Federation.InsecureHTTPHosts = []string{"static.test"}
	c, err := NewClient(cfg, mfed.GenerateSigningKey(), AllowAll{})
	if err != nil {
		t.Fatal(err)
	}
	srt := c.HTTP.Transport.(jsonContentType).next.(*limitTransport).next.(*routingTransport).discovered.(*discoveredTransport)
	srt.resolver.opts.DNSClient = fakeDNS(t, map[string]net.SRV{
		"_matrix-fed._tcp.srv.example.com.":    {Target: "target.example.com.", Port: 1234},
		"_matrix-fed._tcp.deleg2.example.com.": {Target: "t2.example.com.", Port: 4321},
		"_matrix._tcp.legacy.example.com.":     {Target: "old.example.com.", Port: 5555},
	})
	srt.resolver.opts.HTTPClient = &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		body, status := `{}`, 404
		switch r.URL.Host {
		case "wk.example.com":
			body, status = `{"m.server":"delegated.example.com:9999"}`, 200
		case "wk2.example.com":
			body, status = `{"m.server":"deleg2.example.com"}`, 200
		case "bad.example.com":
			body, status = `{"m.server":`, 200
		case "badname.example.com":
			body, status = `{"m.server":"evil host:99999"}`, 200
		}
		if r.URL.Scheme != "https" || r.URL.Path != "/.well-known/matrix/server" {
			t.Errorf("well-known fetched at %s", r.URL)
		}
		return &http.Response{StatusCode: status, Body: io.NopCloser(strings.NewReader(body)), Header: http.Header{}, Request: r}, nil
	})}
	var dialed string
	srt.dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		mu.Lock()
		dialed = addr
		mu.Unlock()
		var d net.Dialer
		return d.DialContext(ctx, "tcp", ts.Listener.Addr().String())
	}
	pool := x509.NewCertPool()
	pool.AddCert(ts.Certificate())
	srt.transport.TLSClientConfig = &tls.Config{RootCAs: pool}

	for _, tc := range []struct {
		server, dial, host string
	}{
		{"127.0.0.1", "127.0.0.1:8448", "127.0.0.1"},                                   // IP literal, default port
		{"127.0.0.1:8500", "127.0.0.1:8500", "127.0.0.1:8500"},                         // IP literal with port
		{"example.com:8449", "example.com:8449", "example.com:8449"},                   // explicit port: no well-known, no SRV
		{"wk.example.com", "delegated.example.com:9999", "delegated.example.com:9999"}, // well-known with port
		{"wk2.example.com", "t2.example.com:4321", "deleg2.example.com"},               // well-known, then SRV of the delegate
		{"srv.example.com", "target.example.com:1234", "srv.example.com"},              // no well-known: SRV _matrix-fed
		{"legacy.example.com", "old.example.com:5555", "legacy.example.com"},           // deprecated _matrix._tcp
		{"bad.example.com", "bad.example.com:8448", "bad.example.com"},                 // invalid well-known: as if none
		{"badname.example.com", "badname.example.com:8448", "badname.example.com"},     // invalid m.server: as if none
		{"plain.example.com", "plain.example.com:8448", "plain.example.com"},           // nothing: port 8448
	} {
		t.Run(tc.server, func(t *testing.T) {
			mu.Lock()
			dialed, gotHost = "", ""
			mu.Unlock()
			v, err := c.Version(context.Background(), tc.server)
			if err != nil || v.Server.Name != "Test" {
				t.Fatalf("version: %+v %v", v, err)
			}
			mu.Lock()
			defer mu.Unlock()
			if dialed != tc.dial || gotHost != tc.host {
				t.Fatalf("dialed %q with Host %q, want %q with %q", dialed, gotHost, tc.dial, tc.host)
			}
		})
	}

	// A failed or invalid .well-known is retried soon, a valid one cached for long.
	for server, maxTTL := range map[string]time.Duration{"plain.example.com": resolutionFailureTTL,
		"badname.example.com": resolutionFailureTTL, "wk.example.com": resolutionTTL} {
		res, ok := srt.resolver.cache.get(server)
		if !ok {
			t.Fatalf("%s not cached", server)
		}
		if ttl := time.Until(res.Expires); ttl > maxTTL || ttl < maxTTL-time.Minute {
			t.Errorf("%s cached for %s, want %s", server, ttl, maxTTL)
		}
	}

	// A statically mapped server: its address, plain HTTP, its name as Host.
	gotHost = ""
	if _, err := c.Version(context.Background(), "static.test"); err != nil {
		t.Fatal(err)
	}
	if gotHost != "static.test" {
		t.Fatalf("Host %q", gotHost)
	}
}

// Discovered servers are reached at public addresses only; the static map
// is the one way to federate with a private or loopback address.
func TestDiscoveryRefusesPrivateAddresses(t *testing.T) {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, `{"server":{"name":"Test","version":"1"}}`)
	}))
	t.Cleanup(ts.Close)
	cfg := config.Default()
	cfg.ServerName = "me.test"
	c, err := NewClient(cfg, mfed.GenerateSigningKey(), AllowAll{})
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(ts.Listener.Addr().String())
	for _, server := range []string{"127.0.0.1:" + port, "[::1]:" + port, "localhost:" + port} {
		if _, err := c.Version(context.Background(), server); err == nil || !errors.Is(err, ErrNonPublicAddress) {
			t.Errorf("%s: want a refusal, got %v", server, err)
		}
	}
	// The .well-known fetch is guarded the same way.
	if _, err := guardedDialer(netguard.IsPublicAddr).DialContext(context.Background(), "tcp", ts.Listener.Addr().String()); !errors.Is(err, ErrNonPublicAddress) {
		t.Errorf("well-known dialer: %v", err)
	}
	// Mapped, the same loopback server is reachable.
	cfg.Federation.Hosts = map[string]string{"local.test": ts.Listener.Addr().String()}
	cfg.Federation.InsecureHTTPHosts = []string{"local.test"}
	c, err = NewClient(cfg, mfed.GenerateSigningKey(), AllowAll{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Version(context.Background(), "local.test"); err != nil {
		t.Fatalf("mapped server: %v", err)
	}
}

// The resolution cache is bounded whatever names are asked for, and no
// per-name state outlives a lookup.
func TestResolverBounded(t *testing.T) {
	r := newResolver(&mfed.ResolveServerNameOpts{})
	for i := range maxCachedResolutions + 1000 {
		name := fmt.Sprintf("10.%d.%d.%d:8448", i>>16&255, i>>8&255, i&255)
		if _, err := r.resolve(context.Background(), name); err != nil {
			t.Fatal(err)
		}
	}
	if n := r.cache.len(); n != maxCachedResolutions {
		t.Fatalf("%d cached resolutions", n)
	}
	if _, err := r.resolve(context.Background(), "a.test:99999"); !errors.Is(err, ErrBadServerName) {
		t.Fatalf("bad port: %v", err)
	}
}
