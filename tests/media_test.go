package tests

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"hash/crc32"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/homeserver/testserver"
	"github.com/myelin-chat/myelin/internal/config"
)

// Content repository end to end: mautrix-go's media calls and raw HTTP for
// headers, statuses and bad input, on both backends.

const testMaxUpload = 256 << 10

func mediaServer(t *testing.T, backend string, configure func(*config.Media)) *testserver.Server {
	return testserver.Start(t, backend, testserver.Options{Configure: func(c *config.Config) {
		c.Media.MaxUploadBytes = testMaxUpload
		c.Media.UploadsPerSecond, c.Media.UploadBurst = 1000, 1000
		if configure != nil {
			configure(&c.Media)
		}
	}})
}

func forEachMediaBackend(t *testing.T, configure func(*config.Media), fn func(t *testing.T, srv *testserver.Server)) {
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			defer recoverMust(t)
			fn(t, mediaServer(t, backend, configure))
		})
	}
}

// rawMedia sends a request with a raw body and content type; token "" sends none.
func rawMedia(t *testing.T, method, url, token, contentType string, body []byte, header ...string) rawResp {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	out := rawResp{Status: resp.StatusCode, Header: resp.Header, Raw: string(raw)}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		_ = json.Unmarshal(raw, &out.Body)
	}
	return out
}

func mxcPath(mxc id.ContentURI) string { return mxc.Homeserver + "/" + mxc.FileID }

func TestMediaUploadDownload(t *testing.T) {
	forEachMediaBackend(t, nil, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		alice := srv.Register(t, "alice")
		data := []byte("hello, media\x00\x01\x02 with bytes")
		up := must(alice.UploadBytesWithName(ctx, data, "text/plain", "notes.txt"))
		if up.ContentURI.Homeserver != srv.Config.ServerName {
			t.Fatalf("content_uri %s", up.ContentURI)
		}
		// mautrix downloads through the authenticated v1 endpoint.
		resp := must(alice.Download(ctx, up.ContentURI))
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !bytes.Equal(got, data) {
			t.Fatalf("downloaded %q, want %q", got, data)
		}
		h := resp.Header
		for k, want := range map[string]string{
			"Content-Type":                 "text/plain",
			"Content-Disposition":          "inline; filename=notes.txt",
			"Cross-Origin-Resource-Policy": "cross-origin",
			"X-Content-Type-Options":       "nosniff",
		} {
			if h.Get(k) != want {
				t.Errorf("%s = %q, want %q", k, h.Get(k), want)
			}
		}
		if csp := h.Get("Content-Security-Policy"); !strings.HasPrefix(csp, "sandbox; default-src 'none'; script-src 'none';") {
			t.Errorf("Content-Security-Policy = %q", csp)
		}
		if cc := h.Get("Cache-Control"); !strings.Contains(cc, "max-age=") || !strings.Contains(cc, "private") {
			t.Errorf("Cache-Control = %q", cc)
		}

		base := srv.URL + "/_matrix/client/v1/media/download/" + mxcPath(up.ContentURI)
		// A file name in the path overrides the stored one.
		r := rawMedia(t, "GET", base+"/other%20name.txt", alice.AccessToken, "", nil)
		if r.Status != 200 || r.Header.Get("Content-Disposition") != `inline; filename="other name.txt"` || r.Raw != string(data) {
			t.Errorf("download with file name: %d %q", r.Status, r.Header.Get("Content-Disposition"))
		}
		// Ranges (video seeking) work.
		r = rawMedia(t, "GET", base, alice.AccessToken, "", nil, "Range", "bytes=0-4")
		if r.Status != http.StatusPartialContent || r.Raw != "hello" {
			t.Errorf("range: %d %q", r.Status, r.Raw)
		}
		// Types outside the spec's inline list are attachments; no file name, none in the header.
		html := must(alice.UploadBytes(ctx, []byte("<script>alert(1)</script>"), "text/html"))
		r = rawMedia(t, "GET", srv.URL+"/_matrix/client/v1/media/download/"+mxcPath(html.ContentURI), alice.AccessToken, "", nil)
		if r.Status != 200 || r.Header.Get("Content-Disposition") != "attachment" || r.Header.Get("Content-Type") != "text/html" {
			t.Errorf("html: %d %q %q", r.Status, r.Header.Get("Content-Disposition"), r.Header.Get("Content-Type"))
		}
		// No content type: application/octet-stream.
		r = rawMedia(t, "POST", srv.URL+"/_matrix/media/v3/upload", alice.AccessToken, "", []byte("raw"))
		if r.Status != 200 {
			t.Fatalf("upload without content type: %d %s", r.Status, r.Raw)
		}
		mxc := must(id.ParseContentURI(r.Body["content_uri"].(string)))
		r = rawMedia(t, "GET", srv.URL+"/_matrix/client/v1/media/download/"+mxcPath(mxc), alice.AccessToken, "", nil)
		if r.Header.Get("Content-Type") != "application/octet-stream" || r.Header.Get("Content-Disposition") != "attachment" {
			t.Errorf("octet-stream: %q %q", r.Header.Get("Content-Type"), r.Header.Get("Content-Disposition"))
		}

		// Unauthenticated v1 download: 401 M_MISSING_TOKEN.
		r = rawMedia(t, "GET", base, "", "", nil)
		if r.Status != 401 || r.errcode() != "M_MISSING_TOKEN" {
			t.Errorf("unauthenticated v1 download: %d %s", r.Status, r.Raw)
		}
		// The legacy endpoint is frozen by default.
		r = rawMedia(t, "GET", srv.URL+"/_matrix/media/v3/download/"+mxcPath(up.ContentURI), "", "", nil)
		if r.Status != 404 || r.errcode() != "M_NOT_FOUND" {
			t.Errorf("frozen legacy download: %d %s", r.Status, r.Raw)
		}
		// Unknown media and other servers' media: 404 M_NOT_FOUND.
		for _, path := range []string{srv.Config.ServerName + "/doesnotexist", "remote.example.org/abcdef"} {
			r = rawMedia(t, "GET", srv.URL+"/_matrix/client/v1/media/download/"+path, alice.AccessToken, "", nil)
			if r.Status != 404 || r.errcode() != "M_NOT_FOUND" {
				t.Errorf("download %s: %d %s", path, r.Status, r.Raw)
			}
		}
		var httpErr mautrix.HTTPError
		if _, err := alice.DownloadBytes(ctx, id.ContentURI{Homeserver: srv.Config.ServerName, FileID: "nope"}); !errors.As(err, &httpErr) || httpErr.RespError.ErrCode != "M_NOT_FOUND" {
			t.Errorf("mautrix download of unknown media: %v", err)
		}

		// Oversized uploads: 413 M_TOO_LARGE, by Content-Length and by streaming.
		big := bytes.Repeat([]byte("x"), testMaxUpload+1)
		if _, err := alice.UploadBytes(ctx, big, "application/octet-stream"); !errors.As(err, &httpErr) || httpErr.Response.StatusCode != 413 || httpErr.RespError.ErrCode != "M_TOO_LARGE" {
			t.Errorf("oversized upload: %v", err)
		}
		req, _ := http.NewRequest("POST", srv.URL+"/_matrix/media/v3/upload", io.MultiReader(bytes.NewReader(big)))
		req.ContentLength = -1 // chunked: only the reader's cap can catch it
		req.Header.Set("Authorization", "Bearer "+alice.AccessToken)
		if resp, err := http.DefaultClient.Do(req); err != nil {
			t.Errorf("chunked oversized upload: %v", err)
		} else {
			resp.Body.Close()
			if resp.StatusCode != 413 {
				t.Errorf("chunked oversized upload: %d", resp.StatusCode)
			}
		}
		// Exactly the limit is fine, and uploads may exceed limits.max_request_bytes' JSON cap.
		if _, err := alice.UploadBytes(ctx, big[:testMaxUpload], "application/octet-stream"); err != nil {
			t.Errorf("upload of exactly the limit: %v", err)
		}
		// Config, authenticated and legacy.
		if cfg := must(alice.GetMediaConfig(ctx)); cfg.UploadSize != testMaxUpload {
			t.Errorf("m.upload.size = %d", cfg.UploadSize)
		}
		r = rawMedia(t, "GET", srv.URL+"/_matrix/media/v3/config", alice.AccessToken, "", nil)
		if r.Status != 200 || r.Body["m.upload.size"] != float64(testMaxUpload) {
			t.Errorf("legacy config: %d %s", r.Status, r.Raw)
		}
		// Versions announce authenticated media.
		r = rawMedia(t, "GET", srv.URL+"/_matrix/client/versions", "", "", nil)
		if uf, _ := r.Body["unstable_features"].(map[string]any); uf["org.matrix.msc3916.stable"] != true {
			t.Errorf("versions: %s", r.Raw)
		}
	})
}

func TestMediaLegacyUnauthenticated(t *testing.T) {
	forEachMediaBackend(t, func(m *config.Media) { m.LegacyUnauthenticated = true }, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		alice := srv.Register(t, "alice")
		up := must(alice.UploadBytes(ctx, pngBytes(t, 100, 50), "image/png"))
		r := rawMedia(t, "GET", srv.URL+"/_matrix/media/v3/download/"+mxcPath(up.ContentURI), "", "", nil)
		if r.Status != 200 || r.Header.Get("Content-Type") != "image/png" || !strings.Contains(r.Header.Get("Cache-Control"), "public") {
			t.Errorf("legacy download: %d %v", r.Status, r.Header)
		}
		r = rawMedia(t, "GET", srv.URL+"/_matrix/media/v3/thumbnail/"+mxcPath(up.ContentURI)+"?width=32&height=32&method=crop", "", "", nil)
		if r.Status != 200 || r.Header.Get("Content-Type") != "image/png" {
			t.Errorf("legacy thumbnail: %d %s", r.Status, r.Raw)
		}
		if w, h := imageSize(t, []byte(r.Raw)); w != 32 || h != 32 {
			t.Errorf("legacy thumbnail is %dx%d", w, h)
		}
		// Upload and config stay authenticated.
		r = rawMedia(t, "POST", srv.URL+"/_matrix/media/v3/upload", "", "text/plain", []byte("x"))
		if r.Status != 401 || r.errcode() != "M_MISSING_TOKEN" {
			t.Errorf("unauthenticated upload: %d %s", r.Status, r.Raw)
		}
	})
}

func TestMediaAsyncUpload(t *testing.T) {
	forEachMediaBackend(t, func(m *config.Media) { m.MaxPendingUploads = 3 }, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		created := must(alice.CreateMXC(ctx))
		if created.ContentURI.Homeserver != srv.Config.ServerName || created.UnusedExpiresAt.Before(time.Now().Add(23*time.Hour)) {
			t.Fatalf("create: %+v", created)
		}
		dl := srv.URL + "/_matrix/client/v1/media/download/" + mxcPath(created.ContentURI)
		r := rawMedia(t, "GET", dl+"?timeout_ms=0", alice.AccessToken, "", nil)
		if r.Status != 504 || r.errcode() != "M_NOT_YET_UPLOADED" {
			t.Errorf("download before upload: %d %s", r.Status, r.Raw)
		}
		// A download waiting for the content gets it when the upload lands.
		var wg sync.WaitGroup
		var waited rawResp
		wg.Add(1)
		go func() {
			defer wg.Done()
			waited = rawMedia(t, "GET", dl+"?timeout_ms=20000", bob.AccessToken, "", nil)
		}()
		time.Sleep(100 * time.Millisecond) // let the download start waiting (either order must work)
		put := srv.URL + "/_matrix/media/v3/upload/" + mxcPath(created.ContentURI)
		// Someone else may not fill alice's media ID.
		r = rawMedia(t, "PUT", put, bob.AccessToken, "text/plain", []byte("bob's"))
		if r.Status != 403 || r.errcode() != "M_FORBIDDEN" {
			t.Errorf("upload to another user's ID: %d %s", r.Status, r.Raw)
		}
		if _, err := alice.UploadMedia(ctx, mautrix.ReqUploadMedia{ContentBytes: []byte("async content"), ContentType: "text/plain", FileName: "a.txt", MXC: created.ContentURI}); err != nil {
			t.Fatalf("async upload: %v", err)
		}
		wg.Wait()
		if waited.Status != 200 || waited.Raw != "async content" || waited.Header.Get("Content-Disposition") != "inline; filename=a.txt" {
			t.Errorf("waiting download: %d %q %v", waited.Status, waited.Raw, waited.Header)
		}
		r = rawMedia(t, "PUT", put, alice.AccessToken, "text/plain", []byte("again"))
		if r.Status != 409 || r.errcode() != "M_CANNOT_OVERWRITE_MEDIA" {
			t.Errorf("second upload: %d %s", r.Status, r.Raw)
		}
		for _, path := range []string{srv.Config.ServerName + "/neverCreated", "other.example/abc", srv.Config.ServerName + "/bad.id"} {
			r = rawMedia(t, "PUT", srv.URL+"/_matrix/media/v3/upload/"+path, alice.AccessToken, "text/plain", []byte("x"))
			if r.Status != 404 || r.errcode() != "M_NOT_FOUND" {
				t.Errorf("upload to %s: %d %s", path, r.Status, r.Raw)
			}
		}
		// At most max_pending_uploads pending IDs per user.
		for i := 0; i < 3; i++ {
			must(alice.CreateMXC(ctx))
		}
		r = rawMedia(t, "POST", srv.URL+"/_matrix/media/v1/create", alice.AccessToken, "", nil)
		if r.Status != 429 || r.errcode() != "M_LIMIT_EXCEEDED" {
			t.Errorf("create over the pending cap: %d %s", r.Status, r.Raw)
		}
		must(bob.CreateMXC(ctx)) // others are not affected
	})
}

func TestMediaThumbnails(t *testing.T) {
	forEachMediaBackend(t, func(m *config.Media) { m.MaxImagePixels = 4_000_000 }, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		alice := srv.Register(t, "alice")
		pngMXC := must(alice.UploadBytes(ctx, pngBytes(t, 1000, 500), "image/png")).ContentURI
		jpgMXC := must(alice.UploadBytes(ctx, jpegBytes(t, 640, 480), "image/jpeg")).ContentURI
		gifData := gifBytes(t, 300, 200)
		gifMXC := must(alice.UploadBytes(ctx, gifData, "image/gif")).ContentURI
		smallMXC := must(alice.UploadBytes(ctx, pngBytes(t, 50, 40), "image/png")).ContentURI

		for _, tc := range []struct {
			name     string
			mxc      id.ContentURI
			w, h     int
			method   string
			animated bool
			wantType string
			wantW    int
			wantH    int
		}{
			{"png crop", pngMXC, 96, 96, "crop", false, "image/png", 96, 96},
			{"png scale", pngMXC, 320, 240, "scale", false, "image/png", 320, 160},
			{"png default method", pngMXC, 300, 200, "", false, "image/png", 320, 160},
			{"png crop odd size", pngMXC, 100, 30, "crop", false, "image/png", 128, 48}, // snapped, aspect kept
			{"jpeg scale", jpgMXC, 320, 240, "scale", false, "image/jpeg", 320, 240},
			{"jpeg crop", jpgMXC, 32, 32, "crop", false, "image/jpeg", 32, 32},
			{"gif first frame", gifMXC, 96, 96, "scale", false, "image/png", 96, 64},
			{"gif animated, small: original", gifMXC, 800, 600, "scale", true, "image/gif", 300, 200},
			{"gif not animated, small: still", gifMXC, 800, 600, "scale", false, "image/png", 300, 200},
			{"smaller than asked: original", smallMXC, 96, 96, "crop", false, "image/png", 50, 40},
			{"large request, no upscale", pngMXC, 2000, 2000, "scale", false, "image/png", 1000, 500},
		} {
			resp, err := alice.DownloadThumbnail(ctx, tc.mxc, tc.h, tc.w, mautrix.DownloadThumbnailExtra{Method: tc.method, Animated: tc.animated})
			if err != nil {
				t.Errorf("%s: %v", tc.name, err)
				continue
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if ct := resp.Header.Get("Content-Type"); ct != tc.wantType {
				t.Errorf("%s: Content-Type %q, want %q", tc.name, ct, tc.wantType)
			}
			if cd := resp.Header.Get("Content-Disposition"); !strings.HasPrefix(cd, "inline") {
				t.Errorf("%s: Content-Disposition %q", tc.name, cd)
			}
			if w, h := imageSize(t, body); w != tc.wantW || h != tc.wantH {
				t.Errorf("%s: %dx%d, want %dx%d", tc.name, w, h, tc.wantW, tc.wantH)
			}
			if tc.wantType == "image/gif" && !bytes.Equal(body, gifData) {
				t.Errorf("%s: not the original GIF", tc.name)
			}
		}
		// A cached thumbnail is the same content.
		thumb := srv.URL + "/_matrix/client/v1/media/thumbnail/" + mxcPath(pngMXC) + "?width=96&height=96&method=crop"
		a, b := rawMedia(t, "GET", thumb, alice.AccessToken, "", nil), rawMedia(t, "GET", thumb, alice.AccessToken, "", nil)
		if a.Status != 200 || a.Header.Get("ETag") == "" || a.Header.Get("ETag") != b.Header.Get("ETag") || a.Raw != b.Raw {
			t.Errorf("cached thumbnail differs: %v / %v", a.Header, b.Header)
		}
		// Over max_image_pixels (4 Mpx): 413, checked before decoding.
		bigMXC := must(alice.UploadBytes(ctx, pngBytes(t, 2100, 2000), "image/png")).ContentURI
		bombMXC := must(alice.UploadBytes(ctx, pngBomb(t, 100000, 100000), "image/png")).ContentURI
		textMXC := must(alice.UploadBytes(ctx, []byte("not an image"), "image/png")).ContentURI
		pdfMXC := must(alice.UploadBytes(ctx, []byte("%PDF-1.4"), "application/pdf")).ContentURI
		for _, tc := range []struct {
			name, path      string
			status          int
			errcode         string
			unauthenticated bool
		}{
			{"too many pixels", mxcPath(bigMXC) + "?width=32&height=32", 413, "M_TOO_LARGE", false},
			{"decompression bomb", mxcPath(bombMXC) + "?width=32&height=32", 413, "M_TOO_LARGE", false},
			{"not an image", mxcPath(textMXC) + "?width=32&height=32", 400, "M_UNKNOWN", false},
			{"pdf", mxcPath(pdfMXC) + "?width=32&height=32", 400, "M_UNKNOWN", false},
			{"missing width", mxcPath(pngMXC) + "?height=32", 400, "M_MISSING_PARAM", false},
			{"width not a number", mxcPath(pngMXC) + "?width=abc&height=32", 400, "M_INVALID_PARAM", false},
			{"negative width", mxcPath(pngMXC) + "?width=-5&height=32", 400, "M_INVALID_PARAM", false},
			{"zero height", mxcPath(pngMXC) + "?width=5&height=0", 400, "M_INVALID_PARAM", false},
			{"fractional width", mxcPath(pngMXC) + "?width=1.5&height=32", 400, "M_INVALID_PARAM", false},
			{"huge width", mxcPath(pngMXC) + "?width=99999999999999999999&height=32", 400, "M_INVALID_PARAM", false},
			{"bad method", mxcPath(pngMXC) + "?width=32&height=32&method=zoom", 400, "M_INVALID_PARAM", false},
			{"bad animated", mxcPath(pngMXC) + "?width=32&height=32&animated=maybe", 400, "M_INVALID_PARAM", false},
			{"bad timeout", mxcPath(pngMXC) + "?width=32&height=32&timeout_ms=-1", 400, "M_INVALID_PARAM", false},
			{"unknown media", srv.Config.ServerName + "/unknownmedia?width=32&height=32", 404, "M_NOT_FOUND", false},
			{"bad media ID", srv.Config.ServerName + "/bad.id?width=32&height=32", 400, "M_INVALID_PARAM", false},
			{"bad media ID chars", srv.Config.ServerName + "/%25%00x?width=32&height=32", 400, "M_INVALID_PARAM", false},
			{"bad server name", "bad_server!/abc?width=32&height=32", 400, "M_INVALID_PARAM", false},
			{"remote server", "remote.example/abc?width=32&height=32", 404, "M_NOT_FOUND", false},
			{"unauthenticated", mxcPath(pngMXC) + "?width=32&height=32", 401, "M_MISSING_TOKEN", true},
		} {
			token := alice.AccessToken
			if tc.unauthenticated {
				token = ""
			}
			r := rawMedia(t, "GET", srv.URL+"/_matrix/client/v1/media/thumbnail/"+tc.path, token, "", nil)
			if r.Status != tc.status || r.errcode() != tc.errcode {
				t.Errorf("%s: %d %s, want %d %s", tc.name, r.Status, r.Raw, tc.status, tc.errcode)
			}
		}
		// The same bad names on download.
		for _, tc := range []struct {
			path    string
			status  int
			errcode string
		}{
			{"bad_server!/abc", 400, "M_INVALID_PARAM"},
			{srv.Config.ServerName + "/bad.id", 400, "M_INVALID_PARAM"},
			{srv.Config.ServerName + "/" + strings.Repeat("a", 300), 400, "M_INVALID_PARAM"},
			{srv.Config.ServerName + "/abc?allow_redirect=sometimes", 400, "M_INVALID_PARAM"},
			{srv.Config.ServerName + "/abc?timeout_ms=soon", 400, "M_INVALID_PARAM"},
			{srv.Config.ServerName + "/abc?allow_redirect=true", 404, "M_NOT_FOUND"},
		} {
			r := rawMedia(t, "GET", srv.URL+"/_matrix/client/v1/media/download/"+tc.path, alice.AccessToken, "", nil)
			if r.Status != tc.status || r.errcode() != tc.errcode {
				t.Errorf("download %s: %d %s, want %d %s", tc.path, r.Status, r.Raw, tc.status, tc.errcode)
			}
		}
	})
}

func TestMediaURLPreviewRefusesPrivateAddresses(t *testing.T) {
	// A page on loopback that a preview must never reach.
	secret := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		_, _ = io.WriteString(w, `<html><head><meta property="og:title" content="internal secret"></head></html>`)
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = secret.Serve(ln) }()
	t.Cleanup(func() { secret.Close() })
	_, port, _ := net.SplitHostPort(ln.Addr().String())

	forEachMediaBackend(t, func(m *config.Media) { m.URLPreviews = true }, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		alice := srv.Register(t, "alice")
		for _, u := range []string{
			"http://127.0.0.1:" + port + "/",
			"http://[::1]:" + port + "/",
			"http://localhost:" + port + "/",
			"http://LocalHost.:" + port + "/",
			"http://10.0.0.1/",
			"http://10.255.1.1:8080/admin",
			"http://169.254.169.254/latest/meta-data/",
			"http://2130706433:" + port + "/",
			"http://0x7f.1:" + port + "/",
			"http://0177.0.0.1:" + port + "/",
			"http://0.0.0.0:" + port + "/",
			"http://[::ffff:127.0.0.1]:" + port + "/",
			"http://192.168.1.1/",
			"http://100.64.0.1/",
			"http://[fd00::1]/",
			"http://[fe80::1]/",
			"https://127.0.0.1:" + port + "/",
		} {
			_, err := alice.GetURLPreview(ctx, u)
			var httpErr mautrix.HTTPError
			if !errors.As(err, &httpErr) || httpErr.Response.StatusCode != 403 || httpErr.RespError.ErrCode != "M_FORBIDDEN" {
				t.Errorf("preview of %s: %v", u, err)
			}
		}
		for _, tc := range []struct {
			query, errcode string
		}{
			{"", "M_MISSING_PARAM"},
			{"?url=ftp://example.org/", "M_INVALID_PARAM"},
			{"?url=file:///etc/passwd", "M_INVALID_PARAM"},
			{"?url=gopher://127.0.0.1/", "M_INVALID_PARAM"},
			{"?url=not%20a%20url", "M_INVALID_PARAM"},
			{"?url=http://user:pass@example.org/", "M_INVALID_PARAM"},
			{"?url=http:///nohost", "M_INVALID_PARAM"},
			{"?url=https://example.org/&ts=yesterday", "M_INVALID_PARAM"},
		} {
			r := rawMedia(t, "GET", srv.URL+"/_matrix/client/v1/media/preview_url"+tc.query, alice.AccessToken, "", nil)
			if r.Status != 400 || r.errcode() != tc.errcode {
				t.Errorf("preview %q: %d %s, want %s", tc.query, r.Status, r.Raw, tc.errcode)
			}
		}
	})
}

func TestMediaURLPreviewOffByDefault(t *testing.T) {
	srv := mediaServer(t, "sqlite", nil)
	alice := srv.Register(t, "alice")
	for _, path := range []string{"/_matrix/client/v1/media/preview_url", "/_matrix/media/v3/preview_url"} {
		r := rawMedia(t, "GET", srv.URL+path+"?url=https://example.org/", alice.AccessToken, "", nil)
		if r.Status != 404 || r.errcode() != "M_UNRECOGNIZED" {
			t.Errorf("%s with previews off: %d %s", path, r.Status, r.Raw)
		}
	}
}

// ---- images for the tests ----

func testImage(w, h int) *image.NRGBA {
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			img.Set(x, y, color.NRGBA{uint8(x), uint8(y), uint8(x + y), 255})
		}
	}
	return img
}

func pngBytes(t *testing.T, w, h int) []byte {
	var buf bytes.Buffer
	if err := (&png.Encoder{CompressionLevel: png.BestSpeed}).Encode(&buf, testImage(w, h)); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func jpegBytes(t *testing.T, w, h int) []byte {
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, testImage(w, h), nil); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func gifBytes(t *testing.T, w, h int) []byte {
	pal := color.Palette{color.Black, color.White, color.NRGBA{255, 0, 0, 255}}
	anim := &gif.GIF{}
	for i := 0; i < 2; i++ {
		frame := image.NewPaletted(image.Rect(0, 0, w, h), pal)
		for y := 0; y < h; y++ {
			for x := 0; x < w; x++ {
				frame.SetColorIndex(x, y, uint8((x+y+i)%3))
			}
		}
		anim.Image = append(anim.Image, frame)
		anim.Delay = append(anim.Delay, 10)
	}
	var buf bytes.Buffer
	if err := gif.EncodeAll(&buf, anim); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// pngBomb is a tiny PNG whose header claims w×h pixels.
func pngBomb(t *testing.T, w, h uint32) []byte {
	b := pngBytes(t, 1, 1)
	// IHDR: 8-byte signature, 4-byte length, "IHDR", width, height, ..., CRC over type+data.
	binary.BigEndian.PutUint32(b[16:], w)
	binary.BigEndian.PutUint32(b[20:], h)
	binary.BigEndian.PutUint32(b[29:], crc32.ChecksumIEEE(b[12:29]))
	return b
}

func imageSize(t *testing.T, data []byte) (int, int) {
	t.Helper()
	cfg, _, err := image.DecodeConfig(bytes.NewReader(data))
	if err != nil {
		t.Errorf("decoding image (%d bytes): %v", len(data), err)
		return 0, 0
	}
	return cfg.Width, cfg.Height
}
