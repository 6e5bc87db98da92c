package tests

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix"
)

// pushGateway is a push gateway on loopback (the Push Gateway API's POST
// /_matrix/push/v1/notify): it records what it took, per pushkey, and can
// fail (a status, or closing the connection) or reject pushkeys.
type pushGateway struct {
	srv *httptest.Server

	mu       sync.Mutex
	status   int // 0: 200; -1: close the connection unanswered
	reject   map[string]bool
	taken    []gatewayPush // answered 200, in arrival order
	attempts int           // every request, failed ones included
}

// gatewayPush is one notification the gateway took.
type gatewayPush struct {
	Notification map[string]any
	PushKey      string
	At           time.Time
}

func newPushGateway(t testing.TB) *pushGateway {
	g := &pushGateway{reject: map[string]bool{}}
	g.srv = httptest.NewServer(http.HandlerFunc(g.serve))
	t.Cleanup(g.srv.Close)
	return g
}

func (g *pushGateway) URL() string { return g.srv.URL + "/_matrix/push/v1/notify" }

func (g *pushGateway) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	g.mu.Lock()
	g.attempts++
	status := g.status
	g.mu.Unlock()
	if r.URL.Path != "/_matrix/push/v1/notify" || r.Method != http.MethodPost {
		http.Error(w, "wrong path", http.StatusNotFound)
		return
	}
	switch {
	case status == -1:
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				conn.Close()
				return
			}
		}
		http.Error(w, "down", http.StatusBadGateway)
		return
	case status != 0 && status != 200:
		http.Error(w, "down", status)
		return
	}
	var req struct {
		Notification map[string]any `json:"notification"`
	}
	if err := json.Unmarshal(body, &req); err != nil || req.Notification == nil {
		http.Error(w, "bad body", http.StatusBadRequest)
		return
	}
	rejected := []string{}
	g.mu.Lock()
	for _, d := range devicesOf(req.Notification) {
		key, _ := d["pushkey"].(string)
		g.taken = append(g.taken, gatewayPush{Notification: req.Notification, PushKey: key, At: time.Now()})
		if g.reject[key] {
			rejected = append(rejected, key)
		}
	}
	g.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"rejected": rejected})
}

func devicesOf(n map[string]any) []map[string]any {
	list, _ := n["devices"].([]any)
	var out []map[string]any
	for _, d := range list {
		if m, ok := d.(map[string]any); ok {
			out = append(out, m)
		}
	}
	return out
}

func (g *pushGateway) setStatus(s int) {
	g.mu.Lock()
	g.status = s
	g.mu.Unlock()
}

// pushes is what the gateway took for pushkey so far.
func (g *pushGateway) pushes(pushkey string) []gatewayPush {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []gatewayPush
	for _, p := range g.taken {
		if p.PushKey == pushkey {
			out = append(out, p)
		}
	}
	return out
}

// waitFor waits until cond holds of the pushes for pushkey.
func (g *pushGateway) waitFor(t testing.TB, pushkey, what string, cond func([]gatewayPush) bool) []gatewayPush {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		got := g.pushes(pushkey)
		if cond(got) {
			return got
		}
		if time.Now().After(deadline) {
			b, _ := json.Marshal(got)
			t.Fatalf("gateway: %s for %s: not seen; got %s", what, pushkey, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// pushFor waits for the push about eventID to pushkey.
func (g *pushGateway) pushFor(t testing.TB, pushkey, eventID string) map[string]any {
	t.Helper()
	var n map[string]any
	g.waitFor(t, pushkey, "the push of "+eventID, func(ps []gatewayPush) bool {
		for _, p := range ps {
			if p.Notification["event_id"] == eventID {
				n = p.Notification
				return true
			}
		}
		return false
	})
	return n
}

// setHTTPPusher sets an http pusher for c at the gateway.
func setHTTPPusher(t testing.TB, c *mautrix.Client, appID, pushkey, gatewayURL string, data map[string]any) rawResp {
	t.Helper()
	d := map[string]any{"url": gatewayURL}
	for k, v := range data {
		d[k] = v
	}
	return clientCall(t, c, "POST", "/_matrix/client/v3/pushers/set", map[string]any{"app_id": appID, "pushkey": pushkey,
		"kind": "http", "app_display_name": "App", "device_display_name": "Phone", "lang": "en", "data": d, "append": true})
}
