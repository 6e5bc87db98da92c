package tests

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/myelin-chat/myelin/homeserver/testserver"
	"github.com/myelin-chat/myelin/internal/config"
)

// residencyNet is the three servers of the data-localization tests: a1.test
// and a2.test in zone "a", both running the residency policy, and b.test
// outside zone a, running none. Rooms are in zone "a" unless their alias is
// #open-* (zone "open", which admits every server). Every request a1 and a2
// make of b passes through wire, which keeps its path and body: a room ID
// that appears there reached b.
type residencyNet struct {
	net        *fedNet
	a1, a2, b  *testserver.Server
	wire       *wireLog
	configureA func(*config.Config)
}

// residencyPolicy is zone a's policy as a1 and a2 run it; extra adjusts it.
func residencyPolicy(extra ...func(*config.Residency)) func(*config.Config) {
	return func(cfg *config.Config) {
		cfg.Residency = config.Residency{Enabled: true, Zone: "a",
			Zones: []config.ResidencyZone{
				{Name: "a", Servers: []string{"a1.test", "a2.test"}},
				{Name: "open", Servers: []string{"*"}, Includes: []string{"a"}},
			},
			Rooms: config.ResidencyRooms{DefaultZone: "a",
				Rules: []config.ResidencyRule{{Zone: "open", Aliases: []string{"#open-*"}}}},
			TrustList: config.TrustList{Refresh: config.Duration{Duration: cfg.Residency.TrustList.Refresh.Duration}},
		}
		for _, f := range extra {
			f(&cfg.Residency)
		}
	}
}

// newResidencyNet starts a1, a2 (with residencyPolicy and configureA) and b
// on backend.
func newResidencyNet(t *testing.T, backend string, configureA ...func(*config.Config)) *residencyNet {
	t.Helper()
	n := &residencyNet{net: newFedNet(t, "a1.test", "a2.test", "b.test"), wire: &wireLog{}}
	all := append([]func(*config.Config){residencyPolicy()}, configureA...)
	n.a1 = n.net.start(t, backend, "a1.test", all...)
	n.a2 = n.net.start(t, backend, "a2.test", all...)
	n.b = n.net.start(t, backend, "b.test")
	n.net.relays["b.test"].point(recordWire(t, n.b.Config.Listen.HTTP, n.wire))
	return n
}

// wireLog keeps every request made of a server: method, path and body.
type wireLog struct {
	mu       sync.Mutex
	requests []string
}

// mentions reports whether any request's path or body contains s (a room
// ID, an event ID, a user ID, an mxc URI).
func (w *wireLog) mentions(s string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, r := range w.requests {
		if strings.Contains(r, s) {
			return true
		}
	}
	return false
}

// paths lists the requests' method and path.
func (w *wireLog) paths() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]string, len(w.requests))
	for i, r := range w.requests {
		out[i], _, _ = strings.Cut(r, "\n")
	}
	return out
}

// recordWire starts a proxy to addr that logs each request into log and
// returns its address, for a relay to point at.
func recordWire(t testing.TB, addr string, log *wireLog) string {
	t.Helper()
	proxy := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: addr})
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, 64<<20))
		r.Body = io.NopCloser(bytes.NewReader(body))
		p, _ := url.PathUnescape(r.URL.RequestURI())
		log.mu.Lock()
		log.requests = append(log.requests, r.Method+" "+p+"\n"+string(body))
		log.mu.Unlock()
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(ts.Close)
	return ts.Listener.Addr().String()
}
