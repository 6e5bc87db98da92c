package tests

import (
	"bytes"
	"image"
	"image/png"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"testing"

	"github.com/myelin-chat/myelin/homeserver/testserver"
	"github.com/myelin-chat/myelin/internal/config"
	"github.com/myelin-chat/myelin/internal/netguard"
)

// privateListener listens on one of this machine's private-network addresses
// (a Docker bridge, a ULA), as Complement's web server is reached at
// host.docker.internal; the test is skipped on a machine without one.
func privateListener(t *testing.T) net.Listener {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		prefix, err := netip.ParsePrefix(a.String())
		if err != nil || !netguard.IsPrivateNetworkAddr(prefix.Addr()) {
			continue
		}
		if ln, err := net.Listen("tcp", net.JoinHostPort(prefix.Addr().String(), "0")); err == nil {
			return ln
		}
	}
	t.Skip("no private-network address to listen on")
	return nil
}

// TestMediaURLPreviewAllowPrivate: with media.url_preview_allow_private a
// preview fetches a page and its og:image from a private network (the
// Complement TestUrlPreview setup); without it the same URL is 403, and
// loopback and link-local stay refused either way.
func TestMediaURLPreviewAllowPrivate(t *testing.T) {
	var img bytes.Buffer
	if err := png.Encode(&img, image.NewRGBA(image.Rect(0, 0, 12, 7))); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/test.html", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		_, _ = w.Write([]byte(`<html><head><meta property="og:title" content="The Rock"><meta property="og:image" content="test.png"></head></html>`))
	})
	mux.HandleFunc("/test.png", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "image/png")
		_, _ = w.Write(img.Bytes())
	})
	ln := privateListener(t)
	web := &http.Server{Handler: mux}
	go func() { _ = web.Serve(ln) }()
	t.Cleanup(func() { web.Close() })
	page := "http://" + ln.Addr().String() + "/test.html"
	preview := func(t *testing.T, srv *testserver.Server, token, u string) rawResp {
		return rawMedia(t, "GET", srv.URL+"/_matrix/client/v1/media/preview_url?url="+url.QueryEscape(u), token, "", nil)
	}

	t.Run("allowed", func(t *testing.T) {
		forEachMediaBackend(t, func(m *config.Media) { m.URLPreviews, m.URLPreviewAllowPrivate = true, true }, func(t *testing.T, srv *testserver.Server) {
			alice := srv.Register(t, "alice")
			r := preview(t, srv, alice.AccessToken, page)
			mxc, _ := r.Body["og:image"].(string)
			if r.Status != 200 || r.Body["og:title"] != "The Rock" || !strings.HasPrefix(mxc, "mxc://") ||
				r.Body["matrix:image:size"] != float64(img.Len()) || r.Body["og:image:width"] != float64(12) || r.Body["og:image:height"] != float64(7) {
				t.Fatalf("preview of %s: %d %s", page, r.Status, r.Raw)
			}
			for _, u := range []string{"http://127.0.0.1:1/", "http://[::1]:1/", "http://169.254.169.254/latest/meta-data/", "http://localhost:1/"} {
				if r := preview(t, srv, alice.AccessToken, u); r.Status != 403 || r.errcode() != "M_FORBIDDEN" {
					t.Errorf("preview of %s with private networks allowed: %d %s", u, r.Status, r.Raw)
				}
			}
		})
	})
	t.Run("default", func(t *testing.T) {
		forEachMediaBackend(t, func(m *config.Media) { m.URLPreviews = true }, func(t *testing.T, srv *testserver.Server) {
			alice := srv.Register(t, "alice")
			if r := preview(t, srv, alice.AccessToken, page); r.Status != 403 || r.errcode() != "M_FORBIDDEN" {
				t.Fatalf("preview of a private address by default: %d %s", r.Status, r.Raw)
			}
		})
	})
}
