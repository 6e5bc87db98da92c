package tests

import (
	"io"
	"net/http"
	"testing"

	"github.com/myelin-chat/myelin/homeserver/testserver"
	"github.com/myelin-chat/myelin/internal/config"
)

// getWithHeaders is a GET with extra headers; it returns the status and body.
func getWithHeaders(t *testing.T, url, token string, headers map[string]string) (int, string) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// TestTrustedProxies: behind a configured proxy (the test's loopback peer),
// per-IP rate limits and device IPs use the forwarded client address; without
// the setting the header is ignored, so it cannot be used to dodge a limit.
func TestTrustedProxies(t *testing.T) {
	limits := func(proxies []string) testserver.Options {
		return testserver.Options{Configure: func(c *config.Config) {
			c.Listen.TrustedProxies = proxies
			c.Limits.RequestsPerSecond = 0.001
			c.Limits.Burst = 3
		}}
	}
	versions := func(t *testing.T, srv *testserver.Server, client string) int {
		status, _ := getWithHeaders(t, srv.URL+"/_matrix/client/versions", "", map[string]string{"X-Forwarded-For": client})
		return status
	}
	exhaust := func(t *testing.T, srv *testserver.Server, client string) {
		t.Helper()
		for i := 0; i < 3; i++ {
			if s := versions(t, srv, client); s != 200 {
				t.Fatalf("request %d of the burst = %d", i, s)
			}
		}
		if s := versions(t, srv, client); s != 429 {
			t.Fatalf("request past the burst = %d, want 429", s)
		}
	}

	t.Run("trusted", func(t *testing.T) {
		srv := testserver.Start(t, "sqlite", limits([]string{"127.0.0.0/8", "::1"}))
		exhaust(t, srv, "203.0.113.1")
		if s := versions(t, srv, "203.0.113.2"); s != 200 {
			t.Fatalf("another client behind the same proxy = %d, want 200 (its own bucket)", s)
		}
		// A client cannot pick its bucket by prepending entries: the proxy appends the real one.
		if s := versions(t, srv, "198.51.100.9, 203.0.113.1"); s != 429 {
			t.Fatalf("spoofed leftmost entry = %d, want 429", s)
		}
	})
	t.Run("untrusted", func(t *testing.T) {
		srv := testserver.Start(t, "sqlite", limits(nil))
		exhaust(t, srv, "203.0.113.1")
		if s := versions(t, srv, "203.0.113.2"); s != 429 {
			t.Fatalf("a forged X-Forwarded-For = %d, want 429 (the header is not trusted)", s)
		}
	})
	t.Run("device IP", func(t *testing.T) {
		srv := testserver.Start(t, "sqlite", testserver.Options{Configure: func(c *config.Config) {
			c.Listen.TrustedProxies = []string{"127.0.0.1", "::1"}
		}})
		alice := srv.Register(t, "alice")
		status, body := getWithHeaders(t, srv.URL+"/_matrix/client/v3/devices/"+alice.DeviceID.String(), alice.AccessToken,
			map[string]string{"X-Forwarded-For": "203.0.113.5"})
		if status != 200 {
			t.Fatalf("GET /devices = %d %s", status, body)
		}
		r := httpCall(t, srv.URL, "GET", "/_matrix/client/v3/devices/"+alice.DeviceID.String(), alice.AccessToken, nil)
		if r.Body["last_seen_ip"] != "203.0.113.5" {
			t.Fatalf("last_seen_ip = %v, want the forwarded address", r.Body["last_seen_ip"])
		}
	})
}

// TestMetricsLoopbackOnly: /metrics on the main listener is for local
// clients; a request that came through a proxy (on the same host, so from
// loopback) carries forwarding headers and is refused, trusted proxy or not.
func TestMetricsLoopbackOnly(t *testing.T) {
	srv := testserver.Start(t, "sqlite", testserver.Options{Configure: func(c *config.Config) {
		c.Listen.TrustedProxies = []string{"127.0.0.1", "::1"}
	}})
	if status, _ := getWithHeaders(t, srv.URL+"/metrics", "", nil); status != 200 {
		t.Fatalf("/metrics from loopback = %d", status)
	}
	for _, h := range []map[string]string{
		{"X-Forwarded-For": "127.0.0.1"},
		{"X-Forwarded-For": "203.0.113.1"},
		{"Forwarded": "for=203.0.113.1"},
		{"X-Real-IP": "203.0.113.1"},
	} {
		if status, body := getWithHeaders(t, srv.URL+"/metrics", "", h); status != 403 {
			t.Fatalf("/metrics with %v = %d %.100s, want 403", h, status, body)
		}
	}
}
