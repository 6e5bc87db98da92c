package tests

import (
	"bytes"
	"net/url"
	"testing"

	"github.com/myelin-chat/myelin/homeserver/testserver"
	"github.com/myelin-chat/myelin/internal/config"
)

// Disk-exhaustion guards: the per-user upload quota and the upload rate
// limit on URL previews.

func TestMediaUploadQuota(t *testing.T) {
	const quota = 100 << 10
	forEachMediaBackend(t, func(m *config.Media) { m.MaxBytesPerUser = quota; m.MaxPendingUploads = 10 }, func(t *testing.T, srv *testserver.Server) {
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		upload := srv.URL + "/_matrix/media/v3/upload"
		chunk := func(b byte) []byte { return bytes.Repeat([]byte{b}, 60<<10) }
		if r := rawMedia(t, "POST", upload, alice.AccessToken, "application/octet-stream", chunk('a')); r.Status != 200 {
			t.Fatalf("first upload: %d %s", r.Status, r.Raw)
		}
		// 120 KiB in all would exceed the 100 KiB quota: 403 M_FORBIDDEN, as
		// the spec says for a reached quota (not 413, which is one file too large).
		r := rawMedia(t, "POST", upload, alice.AccessToken, "application/octet-stream", chunk('b'))
		if r.Status != 403 || r.Body["errcode"] != "M_FORBIDDEN" {
			t.Fatalf("upload over quota: %d %s", r.Status, r.Raw)
		}
		// Chunked (no Content-Length): refused when recorded.
		r = rawMedia(t, "POST", upload, alice.AccessToken, "application/octet-stream", chunk('c'), "Transfer-Encoding", "chunked")
		if r.Status != 403 || r.Body["errcode"] != "M_FORBIDDEN" {
			t.Fatalf("chunked upload over quota: %d %s", r.Status, r.Raw)
		}
		// Async upload: the PUT is checked too, and the ID stays usable.
		r = rawMedia(t, "POST", srv.URL+"/_matrix/media/v1/create", alice.AccessToken, "", nil)
		uri, _ := r.Body["content_uri"].(string)
		if r.Status != 200 || len(uri) < 7 {
			t.Fatalf("create: %d %s", r.Status, r.Raw)
		}
		put := upload + "/" + uri[len("mxc://"):]
		if r = rawMedia(t, "PUT", put, alice.AccessToken, "application/octet-stream", chunk('d')); r.Status != 403 || r.Body["errcode"] != "M_FORBIDDEN" {
			t.Fatalf("PUT over quota: %d %s", r.Status, r.Raw)
		}
		if r = rawMedia(t, "PUT", put, alice.AccessToken, "text/plain", []byte("small")); r.Status != 200 {
			t.Fatalf("small PUT within quota: %d %s", r.Status, r.Raw)
		}
		// Other users have their own quota.
		if r = rawMedia(t, "POST", upload, bob.AccessToken, "application/octet-stream", chunk('b')); r.Status != 200 {
			t.Fatalf("bob's upload: %d %s", r.Status, r.Raw)
		}
	})
}

func TestMediaURLPreviewRateLimited(t *testing.T) {
	forEachMediaBackend(t, func(m *config.Media) {
		m.URLPreviews = true
		m.UploadsPerSecond, m.UploadBurst = 0.001, 3
	}, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice")
		preview := srv.URL + "/_matrix/client/v1/media/preview_url?url=" + url.QueryEscape("http://10.0.0.1/")
		for i := range 3 {
			if r := rawMedia(t, "GET", preview, alice.AccessToken, "", nil); r.Status == 429 {
				t.Fatalf("preview %d within the burst: %d %s", i, r.Status, r.Raw)
			}
		}
		r := rawMedia(t, "GET", preview, alice.AccessToken, "", nil)
		if r.Status != 429 || r.Body["errcode"] != "M_LIMIT_EXCEEDED" {
			t.Fatalf("preview over the upload rate: %d %s", r.Status, r.Raw)
		}
		// The legacy path shares the limit.
		r = rawMedia(t, "GET", srv.URL+"/_matrix/media/v3/preview_url?url="+url.QueryEscape("http://10.0.0.1/"), alice.AccessToken, "", nil)
		if r.Status != 429 {
			t.Fatalf("v3 preview over the upload rate: %d %s", r.Status, r.Raw)
		}
	})
}
