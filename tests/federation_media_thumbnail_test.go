package tests

import (
	"mime/multipart"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

// TestFederationRemoteThumbnails: a thumbnail of remote media we cannot
// thumbnail (a video) is asked of its server's thumbnail endpoint, never by
// downloading the original: a.test (Myelin) cannot thumbnail it either, so
// b.test answers a.test's 400; a server that has a PNG thumbnail of a
// non-image gets it served by b.test (and counted in the cache gauge); one
// that sends HTML as a "thumbnail" is refused.
func TestFederationRemoteThumbnails(t *testing.T) {
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) {
			n := newFedNet(t, "a.test", "b.test", "thumbs.test")
			a := n.start(t, backend, "a.test")
			b := n.start(t, backend, "b.test")
			var aDownloads, aThumbs atomic.Int32
			n.relays["a.test"].point(countingProxy(t,
				countingProxy(t, a.Config.Listen.HTTP, "/_matrix/federation/v1/media/download/", &aDownloads),
				"/_matrix/federation/v1/media/thumbnail/", &aThumbs))
			alice := a.Register(t, "alice")
			bob := b.Register(t, "bob")

			up := rawMedia(t, "POST", a.URL+"/_matrix/media/v3/upload?filename=clip.mp4", alice.AccessToken, "video/mp4", []byte("\x00\x00\x00\x18ftypmp42 not a real video"))
			if up.Status != 200 {
				t.Fatalf("upload: %d %s", up.Status, up.Raw)
			}
			mxc := strings.TrimPrefix(up.Body["content_uri"].(string), "mxc://")
			r := rawMedia(t, "GET", b.URL+"/_matrix/client/v1/media/thumbnail/"+mxc+"?width=32&height=32&timeout_ms=5000", bob.AccessToken, "", nil)
			if r.Status != 400 || r.errcode() != "M_UNKNOWN" {
				t.Fatalf("thumbnail of a remote video: %d %s", r.Status, r.Raw)
			}
			r = rawMedia(t, "GET", b.URL+"/_matrix/client/v1/media/thumbnail/a.test/nosuchmedia?width=32&height=32", bob.AccessToken, "", nil)
			if r.Status != 404 || r.errcode() != "M_NOT_FOUND" {
				t.Fatalf("thumbnail of unknown remote media: %d %s", r.Status, r.Raw)
			}
			if aThumbs.Load() != 2 || aDownloads.Load() != 0 {
				t.Fatalf("a.test served %d thumbnails and %d downloads, want 2 and none", aThumbs.Load(), aDownloads.Load())
			}

			// thumbs.test has a PNG thumbnail of its (non-image) media, and
			// sends HTML for "html"; its originals must never be asked for.
			pic := testPNG(t, 40, 30)
			var thumbsDownloads atomic.Int32
			var timeoutMS atomic.Value
			n.relays["thumbs.test"].point(serveOn(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				id, ok := strings.CutPrefix(r.URL.Path, "/_matrix/federation/v1/media/thumbnail/")
				if !ok {
					thumbsDownloads.Add(1)
					w.WriteHeader(404)
					return
				}
				timeoutMS.Store(r.URL.Query().Get("timeout_ms"))
				mw := multipart.NewWriter(w)
				w.Header().Set("Content-Type", "multipart/mixed; boundary="+mw.Boundary())
				p, _ := mw.CreatePart(map[string][]string{"Content-Type": {"application/json"}})
				_, _ = p.Write([]byte("{}"))
				if id == "html" {
					p, _ = mw.CreatePart(map[string][]string{"Content-Type": {"text/html"}})
					_, _ = p.Write([]byte("<html><script>alert(document.cookie)</script></html>"))
				} else {
					p, _ = mw.CreatePart(map[string][]string{"Content-Type": {"image/png"}})
					_, _ = p.Write(pic)
				}
				_ = mw.Close()
			})))
			for range 2 { // the second from b.test's cache
				r = rawMedia(t, "GET", b.URL+"/_matrix/client/v1/media/thumbnail/thumbs.test/doc?width=64&height=64&timeout_ms=7000", bob.AccessToken, "", nil)
				if r.Status != 200 || r.Header.Get("Content-Type") != "image/png" || r.Raw != string(pic) {
					t.Fatalf("remote PNG thumbnail of a document: %d %q %s", r.Status, r.Header.Get("Content-Type"), r.Raw[:min(len(r.Raw), 200)])
				}
			}
			if got, _ := timeoutMS.Load().(string); got != "7000" {
				t.Fatalf("timeout_ms passed on as %q, want 7000", got)
			}
			r = rawMedia(t, "GET", b.URL+"/_matrix/client/v1/media/thumbnail/thumbs.test/html?width=64&height=64", bob.AccessToken, "", nil)
			if r.Status != 502 || strings.Contains(r.Raw, "<script>") {
				t.Fatalf("HTML as a remote thumbnail: %d %q", r.Status, r.Raw)
			}
			if thumbsDownloads.Load() != 0 {
				t.Fatalf("thumbs.test was asked %d times for something other than a thumbnail", thumbsDownloads.Load())
			}

			// The cache gauge counts the one cached thumbnail.
			metrics := do(t, b, "GET", "/metrics", "", nil).Raw
			m := regexp.MustCompile(`(?m)^myelin_media_remote_cache_bytes (\S+)$`).FindStringSubmatch(metrics)
			if m == nil || m[1] != strconv.Itoa(len(pic)) {
				t.Fatalf("myelin_media_remote_cache_bytes %v, want %d", m, len(pic))
			}
		})
	}
}
