package clientapi

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/go-chi/chi/v5"

	"github.com/myelin-chat/myelin/internal/config"
	"github.com/myelin-chat/myelin/internal/mxhttp"
)

// testConfig is the default configuration without the access log.
func testConfig() *config.Config {
	cfg := config.Default()
	cfg.Logging.AccessLog = "off"
	return cfg
}

// serverRouter is the HTTP surface as homeserver.routes builds it, with no
// modules: only what needs none (versions, well-known, routing) is served.
func serverRouter(cfg *config.Config, api *API) http.Handler {
	r := chi.NewRouter()
	r.Use(Middleware(cfg))
	r.NotFound(NotFound)
	r.MethodNotAllowed(MethodNotAllowed)
	if api.Config == nil {
		api.Config = cfg
	}
	api.Mount(r)
	return r
}

type answer struct {
	code int
	body map[string]any
	hdr  http.Header
}

func serve(t *testing.T, h http.Handler, req *http.Request) answer {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	a := answer{code: rec.Code, hdr: rec.Header()}
	if rec.Body.Len() > 0 {
		if err := json.Unmarshal(rec.Body.Bytes(), &a.body); err != nil {
			t.Fatalf("%s %s: answer is not a JSON object: %q", req.Method, req.URL, rec.Body.String())
		}
	}
	return a
}

func (a answer) errcode() string { s, _ := a.body["errcode"].(string); return s }

func TestUnknownEndpointsAnswerMatrixErrors(t *testing.T) {
	h := serverRouter(testConfig(), &API{})
	for _, c := range []struct {
		method, path string
		code         int
	}{
		{"GET", "/_matrix/client/v3/no/such/endpoint", 404},
		{"GET", "/nothing-here", 404},
		{"POST", "/_matrix/client/versions", 405},
		{"DELETE", "/.well-known/matrix/client", 405},
	} {
		a := serve(t, h, httptest.NewRequest(c.method, c.path, nil))
		if a.code != c.code || a.errcode() != "M_UNRECOGNIZED" {
			t.Errorf("%s %s = %d %v, want %d M_UNRECOGNIZED", c.method, c.path, a.code, a.body, c.code)
		}
		if ct := a.hdr.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
			t.Errorf("%s %s: Content-Type %q", c.method, c.path, ct)
		}
	}
}

// An authenticated endpoint without a token is refused before anything else.
func TestAuthenticatedEndpointWithoutToken(t *testing.T) {
	h := serverRouter(testConfig(), &API{})
	a := serve(t, h, httptest.NewRequest("GET", "/_matrix/client/v3/account/whoami", nil))
	if a.code != 401 || a.errcode() != "M_MISSING_TOKEN" {
		t.Fatalf("whoami without a token = %d %v", a.code, a.body)
	}
}

func TestCORSAndOptions(t *testing.T) {
	called := false
	h := Middleware(testConfig())(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		called = true
		mxhttp.WriteError(w, r, mxhttp.Unrecognized("x"))
	}))
	check := func(what string, hdr http.Header) {
		t.Helper()
		if hdr.Get("Access-Control-Allow-Origin") != "*" ||
			!strings.Contains(hdr.Get("Access-Control-Allow-Methods"), "OPTIONS") ||
			!strings.Contains(hdr.Get("Access-Control-Allow-Headers"), "Authorization") {
			t.Fatalf("%s: CORS headers %v", what, hdr)
		}
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("OPTIONS", "/_matrix/client/v3/anything/at/all", nil))
	if rec.Code != http.StatusNoContent || called || rec.Body.Len() != 0 {
		t.Fatalf("OPTIONS = %d %q (handler called: %v)", rec.Code, rec.Body.String(), called)
	}
	check("OPTIONS", rec.Header())
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/_matrix/client/v3/x", nil))
	if !called {
		t.Fatal("GET not passed on")
	}
	check("an error answer", rec.Header())
}

func TestBodyCap(t *testing.T) {
	cfg := testConfig()
	cfg.Limits.MaxRequestBytes = 100
	cfg.Media.MaxUploadBytes = 1000
	var got []byte
	var readErr error
	h := Middleware(cfg)(mxhttp.JSON(func(r *http.Request) (any, error) {
		got, readErr = nil, nil
		var v map[string]any
		if err := mxhttp.ReadJSON(r, &v); err != nil {
			readErr = err
			return nil, err
		}
		got = []byte("read")
		return v, nil
	}))
	body := func(n int) string { return `{"k":"` + strings.Repeat("a", n-8) + `"}` }
	for _, c := range []struct {
		path    string
		size    int
		chunked bool
		code    int
	}{
		{"/_matrix/client/v3/x", 100, false, 200},
		{"/_matrix/client/v3/x", 101, false, 413},
		{"/_matrix/client/v3/x", 101, true, 413},       // no Content-Length: cut off while reading
		{"/_matrix/media/v3/upload", 1000, false, 200}, // uploads have their own cap
		{"/_matrix/media/v3/upload", 1001, false, 413},
		{"/_matrix/media/v3/upload/srv/id", 500, true, 200},
		{"/_matrix/media/v3/uploadx", 500, false, 413}, // not an upload path
	} {
		req := httptest.NewRequest("POST", c.path, strings.NewReader(body(c.size)))
		if c.chunked {
			req.ContentLength = -1
			req.Body = io.NopCloser(strings.NewReader(body(c.size)))
		}
		got, readErr = nil, nil
		a := serve(t, h, req)
		if a.code != c.code {
			t.Errorf("%s with %d bytes (chunked %v) = %d %v, want %d", c.path, c.size, c.chunked, a.code, a.body, c.code)
		}
		if c.code == 413 && a.errcode() != "M_TOO_LARGE" {
			t.Errorf("%s with %d bytes: errcode %q", c.path, c.size, a.errcode())
		}
		if c.code == 413 && !c.chunked && (got != nil || readErr != nil) {
			t.Errorf("%s: a body over the announced cap reached the handler", c.path)
		}
	}
}

func TestPathAndQueryMustBeCleanText(t *testing.T) {
	called := 0
	h := Middleware(testConfig())(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		called++
		w.WriteHeader(200)
	}))
	for _, c := range []struct {
		target string
		ok     bool
	}{
		{"/_matrix/client/v3/rooms/!r:x/state", true},
		{"/_matrix/client/v3/rooms/%21r%3Ax/state?limit=5&filter=%7B%7D", true},
		{"/_matrix/client/v3/profile/@%C3%A9mile:x", true}, // é, valid UTF-8
		{"/_matrix/client/v3/rooms/%FF/state", false},
		{"/_matrix/client/v3/rooms/a%00b/state", false},
		{"/_matrix/client/v3/x?from=%FF", false},
		{"/_matrix/client/v3/x?%FF=1", false},
		{"/_matrix/client/v3/x?from=a%00", false},
		{"/_matrix/client/v3/x?bad=%zz&from=%FF", false}, // one bad escape does not exempt the rest
	} {
		before := called
		a := serve(t, h, httptest.NewRequest("GET", c.target, nil))
		reached := called > before
		if c.ok && (a.code != 200 || !reached) {
			t.Errorf("%s refused: %d %v", c.target, a.code, a.body)
		}
		if !c.ok && (a.code != 400 || a.errcode() != "M_INVALID_PARAM" || reached) {
			t.Errorf("%s = %d %v (handler reached: %v), want 400 M_INVALID_PARAM", c.target, a.code, a.body, reached)
		}
	}
}

func TestIsUploadPath(t *testing.T) {
	for path, want := range map[string]bool{
		"/_matrix/media/v3/upload":              true,
		"/_matrix/media/r0/upload":              true,
		"/_matrix/media/v3/upload/srv/mediaid":  true,
		"/_matrix/media/v1/create":              false,
		"/_matrix/media/v3/uploadx":             false,
		"/_matrix/client/v3/upload":             false,
		"/_matrix/media/v3/download/srv/upload": false,
		"/_matrix/client/v1/media/upload":       false,
		"/x/_matrix/media/v3/upload":            false,
		"/_matrix/media/upload":                 false,
	} {
		if got := isUploadPath(path); got != want {
			t.Errorf("isUploadPath(%q) = %v, want %v", path, got, want)
		}
	}
}

func TestVersions(t *testing.T) {
	h := serverRouter(testConfig(), &API{})
	a := serve(t, h, httptest.NewRequest("GET", "/_matrix/client/versions", nil))
	if a.code != 200 {
		t.Fatalf("versions = %d %v", a.code, a.body)
	}
	var versions []string
	for _, v := range a.body["versions"].([]any) {
		versions = append(versions, v.(string))
	}
	if !slices.Contains(versions, "v1.10") || !slices.Contains(versions, "r0.6.1") {
		t.Fatalf("versions %v", versions)
	}
	// Without the media module, neither v1.11 (authenticated media) nor the MSC3916 flag.
	if slices.Contains(versions, "v1.11") {
		t.Fatalf("v1.11 claimed without media: %v", versions)
	}
	unstable := a.body["unstable_features"].(map[string]any)
	if unstable["org.matrix.msc3916.stable"] != false || unstable["org.matrix.simplified_msc3575"] != false {
		t.Fatalf("unstable features %v", unstable)
	}
	// A token, even a bogus one, is ignored here.
	req := httptest.NewRequest("GET", "/_matrix/client/versions", nil)
	req.Header.Set("Authorization", "Bearer nonsense")
	if a := serve(t, h, req); a.code != 200 {
		t.Fatalf("versions with a bogus token = %d %v", a.code, a.body)
	}
	// Sliding sync on: its flag is set.
	h = serverRouter(testConfig(), &API{SlidingSync: http.NotFoundHandler()})
	a = serve(t, h, httptest.NewRequest("GET", "/_matrix/client/versions", nil))
	if a.body["unstable_features"].(map[string]any)["org.matrix.simplified_msc3575"] != true {
		t.Fatalf("sliding sync not advertised: %v", a.body)
	}
}

func TestWellKnown(t *testing.T) {
	cfg := testConfig()
	cfg.ServerName = "example.org"
	cfg.PublicBaseURL = "https://matrix.example.org"
	h := serverRouter(cfg, &API{})
	a := serve(t, h, httptest.NewRequest("GET", "/.well-known/matrix/server", nil))
	if a.code != 200 || a.body["m.server"] != "example.org" {
		t.Fatalf("well-known server = %d %v", a.code, a.body)
	}
	a = serve(t, h, httptest.NewRequest("GET", "/.well-known/matrix/client", nil))
	if a.code != 200 || a.body["m.homeserver"].(map[string]any)["base_url"] != "https://matrix.example.org" {
		t.Fatalf("well-known client = %d %v", a.code, a.body)
	}
	if _, ok := a.body["org.matrix.msc4143.rtc_foci"]; ok {
		t.Fatalf("rtc_foci advertised without any configured: %v", a.body)
	}
	a = serve(t, h, httptest.NewRequest("GET", "/.well-known/matrix/support", nil))
	if a.code != 404 || a.errcode() != "M_NOT_FOUND" {
		t.Fatalf("well-known support without config = %d %v", a.code, a.body)
	}
	cfg.Support.SupportPage = "https://example.org/help"
	a = serve(t, h, httptest.NewRequest("GET", "/.well-known/matrix/support", nil))
	if a.code != 200 || a.body["support_page"] != "https://example.org/help" {
		t.Fatalf("well-known support = %d %v", a.code, a.body)
	}
}

// The IP rate limit answers 429 M_LIMIT_EXCEEDED with retry_after_ms and
// Retry-After, per client address.
func TestRateLimitByIP(t *testing.T) {
	cfg := testConfig()
	cfg.Limits.RequestsPerSecond = 0.001
	cfg.Limits.Burst = 2
	h := serverRouter(cfg, &API{})
	get := func(ip string) answer {
		req := httptest.NewRequest("GET", "/_matrix/client/versions", nil)
		req.RemoteAddr = ip + ":1234"
		return serve(t, h, req)
	}
	for i := range 2 {
		if a := get("192.0.2.1"); a.code != 200 {
			t.Fatalf("request %d within the burst = %d", i, a.code)
		}
	}
	a := get("192.0.2.1")
	if a.code != 429 || a.errcode() != "M_LIMIT_EXCEEDED" {
		t.Fatalf("request past the burst = %d %v", a.code, a.body)
	}
	ms, _ := a.body["retry_after_ms"].(float64)
	secs, err := strconv.Atoi(a.hdr.Get("Retry-After"))
	if ms <= 0 || err != nil || float64(secs)*1000 < ms {
		t.Fatalf("retry_after_ms %v, Retry-After %q", a.body["retry_after_ms"], a.hdr.Get("Retry-After"))
	}
	if a := get("192.0.2.2"); a.code != 200 {
		t.Fatalf("another address was limited too: %d", a.code)
	}
}
