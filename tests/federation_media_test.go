package tests

import (
	"bytes"
	"image"
	"image/color"
	"image/png"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"

	mfed "maunium.net/go/mautrix/federation"

	"github.com/myelin-chat/myelin/homeserver/testserver"
	"github.com/myelin-chat/myelin/internal/config"
)

// countingProxy forwards to addr, counting the requests whose path starts with prefix.
func countingProxy(t *testing.T, addr, prefix string, n *atomic.Int32) string {
	t.Helper()
	proxy := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: addr})
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, prefix) {
			n.Add(1)
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(ts.Close)
	return ts.Listener.Addr().String()
}

func testPNG(t *testing.T, w, h int) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for x := range w {
		for y := range h {
			img.Set(x, y, color.RGBA{uint8(x), uint8(y), 90, 255})
		}
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// multipartParts reads a federation media answer: its parts' headers and bodies.
func multipartParts(t *testing.T, resp *http.Response) ([]http.Header, [][]byte) {
	t.Helper()
	mt, params, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/mixed" {
		t.Fatalf("federation media answer is %q", resp.Header.Get("Content-Type"))
	}
	mr := multipart.NewReader(resp.Body, params["boundary"])
	var headers []http.Header
	var bodies [][]byte
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("reading multipart: %v", err)
		}
		b, _ := io.ReadAll(p)
		headers = append(headers, http.Header(p.Header))
		bodies = append(bodies, b)
	}
	return headers, bodies
}

// TestFederationMedia: alice@a.test uploads, bob@b.test downloads and
// thumbnails it through b.test (which fetches it once from a.test's
// federation endpoint and caches it); a.test serves only its own media;
// a fake server that only speaks the legacy endpoint works; a Location to a
// private address, an oversized file, a remote 404 and an unreachable
// server are refused with the spec's errors.
func TestFederationMedia(t *testing.T) {
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) {
			n := newFedNet(t, "a.test", "b.test", "legacy.test", "redirect.test", "gone.test")
			a := n.start(t, backend, "a.test")
			b := n.start(t, backend, "b.test", func(c *config.Config) { c.Media.MaxRemoteBytes = 64 << 10 })
			var aFetches atomic.Int32
			n.relays["a.test"].point(countingProxy(t, a.Config.Listen.HTTP, "/_matrix/federation/v1/media/", &aFetches))
			alice := a.Register(t, "alice")
			bob := b.Register(t, "bob")

			pic := testPNG(t, 100, 80)
			up := rawMedia(t, "POST", a.URL+"/_matrix/media/v3/upload?filename=cat.png", alice.AccessToken, "image/png", pic)
			if up.Status != 200 {
				t.Fatalf("upload: %d %s", up.Status, up.Raw)
			}
			mxc := strings.TrimPrefix(up.Body["content_uri"].(string), "mxc://")
			mediaID := strings.TrimPrefix(mxc, "a.test/")
			tok := bob.AccessToken

			for i := range 2 {
				r := rawMedia(t, "GET", b.URL+"/_matrix/client/v1/media/download/"+mxc, tok, "", nil)
				if r.Status != 200 || r.Raw != string(pic) {
					t.Fatalf("download %d of remote media: %d (%d bytes) %s", i, r.Status, len(r.Raw), r.Raw[:min(len(r.Raw), 200)])
				}
				if ct := r.Header.Get("Content-Type"); ct != "image/png" {
					t.Fatalf("remote media Content-Type %q", ct)
				}
				if cd := r.Header.Get("Content-Disposition"); cd != `inline; filename=cat.png` && cd != `inline; filename="cat.png"` {
					t.Fatalf("remote media Content-Disposition %q", cd)
				}
				if r.Header.Get("Content-Security-Policy") == "" {
					t.Fatal("remote media served without the sandboxing CSP")
				}
			}
			r := rawMedia(t, "GET", b.URL+"/_matrix/client/v1/media/download/"+mxc+"/other.png", tok, "", nil)
			if r.Status != 200 || !strings.Contains(r.Header.Get("Content-Disposition"), "other.png") {
				t.Fatalf("download with a file name: %d %q", r.Status, r.Header.Get("Content-Disposition"))
			}
			r = rawMedia(t, "GET", b.URL+"/_matrix/client/v1/media/thumbnail/"+mxc+"?width=32&height=32&method=scale", tok, "", nil)
			if r.Status != 200 || r.Header.Get("Content-Type") != "image/png" {
				t.Fatalf("thumbnail of remote media: %d %q %s", r.Status, r.Header.Get("Content-Type"), r.Raw[:min(len(r.Raw), 200)])
			}
			th, err := png.Decode(strings.NewReader(r.Raw))
			if err != nil || th.Bounds().Dx() > 32 || th.Bounds().Dy() > 32 {
				t.Fatalf("thumbnail of remote media: %v", err)
			}
			if got := aFetches.Load(); got != 1 {
				t.Fatalf("a.test served its media %d times over federation, want 1 (b.test caches it)", got)
			}

			// a.test's federation endpoints, as b.test's key signs: multipart
			// with {} and the content; only a.test's own media.
			fc := n.client(t, "b.test", b.SigningKey)
			get := func(server, path string) *http.Response {
				t.Helper()
				u, _ := url.Parse(path)
				var segs rawPath
				for _, s := range strings.Split(strings.TrimPrefix(u.Path, "/"), "/") {
					segs = append(segs, s)
				}
				_, resp, err := fc.MakeFullRequest(ctxT(t), mfed.RequestParams{ServerName: server, Method: "GET",
					Path: segs, Query: u.Query(), Authenticate: true, DontReadBody: true})
				if resp == nil {
					t.Fatalf("GET %s on %s: %v", path, server, err)
				}
				t.Cleanup(func() { resp.Body.Close() })
				return resp
			}
			resp := get("a.test", "/_matrix/federation/v1/media/download/"+mediaID)
			if resp.StatusCode != 200 {
				t.Fatalf("federation download: %d", resp.StatusCode)
			}
			hs, parts := multipartParts(t, resp)
			if len(parts) != 2 || hs[0].Get("Content-Type") != "application/json" || string(parts[0]) != "{}" ||
				hs[1].Get("Content-Type") != "image/png" || !strings.Contains(hs[1].Get("Content-Disposition"), "cat.png") ||
				!bytes.Equal(parts[1], pic) {
				t.Fatalf("federation download parts: %v %q", hs, parts[0])
			}
			// Thumbnail over federation: the same bytes a.test's clients get.
			local := rawMedia(t, "GET", a.URL+"/_matrix/client/v1/media/thumbnail/"+mxc+"?width=32&height=32&method=scale", alice.AccessToken, "", nil)
			resp = get("a.test", "/_matrix/federation/v1/media/thumbnail/"+mediaID+"?width=32&height=32&method=scale")
			if resp.StatusCode != 200 {
				t.Fatalf("federation thumbnail: %d", resp.StatusCode)
			}
			hs, parts = multipartParts(t, resp)
			if len(parts) != 2 || hs[1].Get("Content-Type") != "image/png" || string(parts[1]) != local.Raw {
				t.Fatalf("federation thumbnail differs from the client's (%v)", hs)
			}
			if resp := get("a.test", "/_matrix/federation/v1/media/download/nosuchmedia"); resp.StatusCode != 404 {
				t.Fatalf("federation download of unknown media: %d", resp.StatusCode)
			}
			// b.test holds a.test's file only as a cache: not b.test's to serve.
			if resp := get("b.test", "/_matrix/federation/v1/media/download/"+mediaID); resp.StatusCode != 404 {
				t.Fatalf("b.test served a.test's media as its own: %d", resp.StatusCode)
			}
			if resp := get("a.test", "/_matrix/federation/v1/media/thumbnail/"+mediaID+"?width=0&height=32"); resp.StatusCode != 400 {
				t.Fatalf("federation thumbnail with width=0: %d", resp.StatusCode)
			}

			// Remote 404, unreachable server, oversized file.
			r = rawMedia(t, "GET", b.URL+"/_matrix/client/v1/media/download/a.test/nosuchmedia", tok, "", nil)
			if r.Status != 404 || r.errcode() != "M_NOT_FOUND" {
				t.Fatalf("remote 404: %d %s", r.Status, r.Raw)
			}
			r = rawMedia(t, "GET", b.URL+"/_matrix/client/v1/media/download/gone.test/abc", tok, "", nil)
			if r.Status != 502 || r.errcode() != "M_UNKNOWN" {
				t.Fatalf("unreachable server: %d %s", r.Status, r.Raw)
			}
			big := rawMedia(t, "POST", a.URL+"/_matrix/media/v3/upload", alice.AccessToken, "application/octet-stream", bytes.Repeat([]byte("z"), 64<<10+1))
			r = rawMedia(t, "GET", b.URL+"/_matrix/client/v1/media/download/"+strings.TrimPrefix(big.Body["content_uri"].(string), "mxc://"), tok, "", nil)
			if r.Status != 502 || r.errcode() != "M_TOO_LARGE" {
				t.Fatalf("oversized remote file: %d %s", r.Status, r.Raw)
			}

			// legacy.test knows only the legacy endpoint (and says
			// M_UNRECOGNIZED to the federation one), except for "gone",
			// which its federation endpoint says does not exist.
			var legacyCalls atomic.Int32
			n.relays["legacy.test"].point(serveOn(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				switch {
				case r.URL.Path == "/_matrix/federation/v1/media/download/gone":
					w.WriteHeader(404)
					_, _ = w.Write([]byte(`{"errcode":"M_NOT_FOUND","error":"no"}`))
				case strings.HasPrefix(r.URL.Path, "/_matrix/federation/"):
					w.WriteHeader(404)
					_, _ = w.Write([]byte(`{"errcode":"M_UNRECOGNIZED","error":"Unrecognized request"}`))
				case strings.HasPrefix(r.URL.Path, "/_matrix/media/v3/download/legacy.test/"):
					legacyCalls.Add(1)
					if r.URL.Query().Get("allow_remote") != "false" || r.Header.Get("Authorization") != "" {
						w.WriteHeader(400)
						return
					}
					w.Header().Set("Content-Type", "text/plain")
					w.Header().Set("Content-Disposition", `attachment; filename="old.txt"`)
					_, _ = w.Write([]byte("legacy bytes"))
				default:
					w.WriteHeader(404)
				}
			})))
			r = rawMedia(t, "GET", b.URL+"/_matrix/client/v1/media/download/legacy.test/old", tok, "", nil)
			if r.Status != 200 || r.Raw != "legacy bytes" || r.Header.Get("Content-Type") != "text/plain" ||
				!strings.Contains(r.Header.Get("Content-Disposition"), "old.txt") {
				t.Fatalf("legacy-only server: %d %q %q", r.Status, r.Raw, r.Header.Get("Content-Disposition"))
			}
			r = rawMedia(t, "GET", b.URL+"/_matrix/client/v1/media/download/legacy.test/gone", tok, "", nil)
			if r.Status != 404 || legacyCalls.Load() != 1 {
				t.Fatalf("federation M_NOT_FOUND: %d, legacy endpoint asked %d times (want 404, once)", r.Status, legacyCalls.Load())
			}

			// redirect.test answers with a Location to a loopback address:
			// refused, never fetched.
			var secretHits atomic.Int32
			secret := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				secretHits.Add(1)
				_, _ = w.Write([]byte("internal secret"))
			}))
			t.Cleanup(secret.Close)
			n.relays["redirect.test"].point(serveOn(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mw := multipart.NewWriter(w)
				w.Header().Set("Content-Type", "multipart/mixed; boundary="+mw.Boundary())
				p, _ := mw.CreatePart(map[string][]string{"Content-Type": {"application/json"}})
				_, _ = p.Write([]byte("{}"))
				_, _ = mw.CreatePart(map[string][]string{"Location": {secret.URL + "/metadata"}})
				_ = mw.Close()
			})))
			r = rawMedia(t, "GET", b.URL+"/_matrix/client/v1/media/download/redirect.test/x", tok, "", nil)
			if r.Status != 502 || secretHits.Load() != 0 {
				t.Fatalf("Location to a private address: %d %q, %d hits", r.Status, r.Raw, secretHits.Load())
			}
		})
	}
}

// rawPath is a request path used as it is.
type rawPath []any

func (p rawPath) FullPath() []any { return p }
