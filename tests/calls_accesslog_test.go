package tests

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/myelin-chat/myelin/homeserver/testserver"
	"github.com/myelin-chat/myelin/internal/config"
)

// TestCallEndpointsUnconfigured: without TURN, /voip/turnServer is 200 {}
// (Element and nheko ask at every start; Synapse answers so); without
// bridges, /thirdparty/protocols is {} (not 404); /.well-known/matrix/client
// names no RTC foci.
func TestCallEndpointsUnconfigured(t *testing.T) {
	srv := testserver.Start(t, "sqlite")
	alice := srv.Register(t, "alice")
	for _, path := range []string{"/_matrix/client/v3/voip/turnServer", "/_matrix/client/v3/thirdparty/protocols"} {
		if r := clientCall(t, alice, "GET", path, nil); r.Status != 200 || strings.TrimSpace(r.Raw) != "{}" {
			t.Errorf("GET %s = %d %s, want 200 {}", path, r.Status, r.Raw)
		}
	}
	if r := clientCall(t, alice, "GET", "/_matrix/client/v3/thirdparty/protocol/irc", nil); r.Status != 404 || r.errcode() != "M_NOT_FOUND" {
		t.Errorf("GET /thirdparty/protocol/irc = %d %s, want 404 M_NOT_FOUND", r.Status, r.Raw)
	}
	if r := httpCall(t, srv.URL, "GET", "/_matrix/client/v3/voip/turnServer", "", nil); r.Status != 401 {
		t.Errorf("turnServer without a token = %d", r.Status)
	}
	if r := httpCall(t, srv.URL, "GET", "/.well-known/matrix/client", "", nil); r.Body["org.matrix.msc4143.rtc_foci"] != nil {
		t.Errorf("well-known names foci nobody configured: %s", r.Raw)
	}
}

// TestTurnServerCredentials: coturn's shared-secret scheme (username
// "<expiry>:<user>", password base64(HMAC-SHA1(secret, username))), static
// credentials, and the MSC4143 foci in /.well-known/matrix/client.
func TestTurnServerCredentials(t *testing.T) {
	uris := []string{"turns:turn.example.org:5349?transport=tcp", "turn:turn.example.org:3478?transport=udp"}
	srv := testserver.Start(t, "sqlite", testserver.Options{Configure: func(c *config.Config) {
		c.Calls.TurnURIs = uris
		c.Calls.TurnSharedSecret = "coturn-secret"
		c.Calls.TurnUserLifetime = config.Duration{Duration: 2 * time.Hour}
		c.Calls.RTCFoci = []config.RTCFocus{{Type: "livekit", LiveKitServiceURL: "https://livekit-jwt.example.org"}}
	}})
	alice := srv.Register(t, "alice")
	r := clientCall(t, alice, "GET", "/_matrix/client/v3/voip/turnServer", nil)
	user, _ := r.Body["username"].(string)
	expiry, who, _ := strings.Cut(user, ":")
	exp, err := strconv.ParseInt(expiry, 10, 64)
	if err != nil || who != alice.UserID.String() || exp < time.Now().Add(110*time.Minute).Unix() || exp > time.Now().Add(2*time.Hour+time.Minute).Unix() {
		t.Fatalf("turnServer username = %q (%s)", user, r.Raw)
	}
	mac := hmac.New(sha1.New, []byte("coturn-secret"))
	mac.Write([]byte(user))
	if r.Body["password"] != base64.StdEncoding.EncodeToString(mac.Sum(nil)) || r.Body["ttl"] != float64(7200) {
		t.Fatalf("turnServer = %s", r.Raw)
	}
	if got, _ := json.Marshal(r.Body["uris"]); string(got) != mustMarshal(uris) {
		t.Fatalf("uris = %s", got)
	}
	wk := httpCall(t, srv.URL, "GET", "/.well-known/matrix/client", "", nil)
	if got, _ := json.Marshal(wk.Body["org.matrix.msc4143.rtc_foci"]); string(got) != `[{"livekit_service_url":"https://livekit-jwt.example.org","type":"livekit"}]` {
		t.Fatalf("well-known = %s", wk.Raw)
	}

	static := testserver.Start(t, "sqlite", testserver.Options{Configure: func(c *config.Config) {
		c.Calls.TurnURIs = uris[:1]
		c.Calls.TurnUsername, c.Calls.TurnPassword = "turnuser", "turnpass"
	}})
	bob := static.Register(t, "bob")
	r = clientCall(t, bob, "GET", "/_matrix/client/v3/voip/turnServer", nil)
	if r.Body["username"] != "turnuser" || r.Body["password"] != "turnpass" {
		t.Fatalf("static turnServer = %s", r.Raw)
	}
}

// syncBuffer is a bytes.Buffer safe for the logger's concurrent writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// lines are the JSON log records whose request_id is reqID.
func (b *syncBuffer) lines(reqID string) []map[string]any {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	for _, l := range strings.Split(b.buf.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil && m["request_id"] == reqID {
			out = append(out, m)
		}
	}
	return out
}

// TestAccessLog: one line per request at logging.access_log's level, with
// method, route pattern, status, duration, user and the request ID the answer
// carries in X-Request-Id; never the access token (even given in the query)
// nor the raw path. access_log: off logs nothing.
func TestAccessLog(t *testing.T) {
	var buf syncBuffer
	prev := slog.Default()
	slog.SetDefault(slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn})))
	t.Cleanup(func() { slog.SetDefault(prev) })

	srv := testserver.Start(t, "sqlite", testserver.Options{Configure: func(c *config.Config) { c.Logging.AccessLog = "warn" }})
	alice := srv.Register(t, "alice")
	r := httpCall(t, srv.URL, "GET", "/_matrix/client/v3/account/whoami?access_token="+alice.AccessToken, "", nil)
	if r.Status != 200 {
		t.Fatalf("whoami = %d %s", r.Status, r.Raw)
	}
	reqID := r.Header.Get("X-Request-Id")
	lines := buf.lines(reqID)
	if reqID == "" || len(lines) != 1 {
		t.Fatalf("request %q: %d log lines, want 1:\n%s", reqID, len(lines), buf.buf.String())
	}
	l := lines[0]
	if l["level"] != "WARN" || l["method"] != "GET" || l["route"] != "/_matrix/client/v3/account/whoami" || l["status"] != float64(200) ||
		l["user"] != alice.UserID.String() || l["duration_ms"] == nil {
		t.Fatalf("access log line = %v", l)
	}
	if strings.Contains(buf.buf.String(), alice.AccessToken) {
		t.Fatal("the access token is in the log")
	}
	r = clientCall(t, alice, "GET", "/_matrix/client/v3/rooms/!nope:localhost/state", nil)
	if l := buf.lines(r.Header.Get("X-Request-Id")); len(l) != 1 || l[0]["status"] != float64(r.Status) || l[0]["route"] != "/_matrix/client/v3/rooms/{roomID}/state" {
		t.Fatalf("failed request logged as %v (answer %d)", l, r.Status)
	}

	quiet := testserver.Start(t, "sqlite", testserver.Options{Configure: func(c *config.Config) { c.Logging.AccessLog = "off" }})
	r = httpCall(t, quiet.URL, "GET", "/_matrix/client/versions", "", nil)
	if id := r.Header.Get("X-Request-Id"); id != "" || len(buf.lines(id)) != 0 {
		t.Fatalf("access_log off: request ID %q, lines %v", id, buf.lines(id))
	}
}
