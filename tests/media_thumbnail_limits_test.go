package tests

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"testing"

	"github.com/myelin-chat/myelin/homeserver/testserver"
	"github.com/myelin-chat/myelin/internal/config"
)

// Thumbnail generation limits: the decoded-bytes budget and the per-user
// generation rate (cached thumbnails are free).

func png16(t *testing.T, w, h int) []byte {
	img := image.NewRGBA64(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			img.SetRGBA64(x, y, color.RGBA64{uint16(x * 97), uint16(y * 89), 0x8000, 0xffff})
		}
	}
	var buf bytes.Buffer
	if err := (&png.Encoder{CompressionLevel: png.BestSpeed}).Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestMediaThumbnailMemoryBudget(t *testing.T) {
	forEachMediaBackend(t, func(m *config.Media) { m.ThumbnailMemoryBytes = 2 << 20 }, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		alice := srv.Register(t, "alice")
		// 600×600 at 8 bytes a pixel decodes to 2.9 MB: over the 2 MiB budget
		// though only 360,000 pixels (far under max_image_pixels).
		big := must(alice.UploadBytes(ctx, png16(t, 600, 600), "image/png")).ContentURI
		r := rawMedia(t, "GET", srv.URL+"/_matrix/client/v1/media/thumbnail/"+mxcPath(big)+"?width=96&height=96&method=crop", alice.AccessToken, "", nil)
		if r.Status != 413 || r.Body["errcode"] != "M_TOO_LARGE" {
			t.Fatalf("16-bit 600x600 thumbnail over the memory budget: %d %s", r.Status, r.Raw)
		}
		// The same pixels at 4 bytes a pixel fit (1.4 MB).
		small := must(alice.UploadBytes(ctx, pngBytes(t, 600, 600), "image/png")).ContentURI
		r = rawMedia(t, "GET", srv.URL+"/_matrix/client/v1/media/thumbnail/"+mxcPath(small)+"?width=96&height=96&method=crop", alice.AccessToken, "", nil)
		if r.Status != 200 {
			t.Fatalf("8-bit 600x600 thumbnail: %d %s", r.Status, r.Raw)
		}
	})
}

func TestMediaThumbnailGenerationRateLimit(t *testing.T) {
	forEachMediaBackend(t, func(m *config.Media) { m.ThumbnailsPerSecond, m.ThumbnailBurst = 0.001, 3 }, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		mxc := must(alice.UploadBytes(ctx, pngBytes(t, 1000, 700), "image/png")).ContentURI
		thumb := func(token string, w, h int, method string) rawResp {
			return rawMedia(t, "GET", fmt.Sprintf("%s/_matrix/client/v1/media/thumbnail/%s?width=%d&height=%d&method=%s",
				srv.URL, mxcPath(mxc), w, h, method), token, "", nil)
		}
		// Three generations (odd crop sizes included: they are snapped and cached).
		for _, s := range [][2]int{{32, 32}, {100, 30}, {320, 240}} {
			method := "crop"
			if s[0] == 320 {
				method = "scale"
			}
			if r := thumb(alice.AccessToken, s[0], s[1], method); r.Status != 200 {
				t.Fatalf("thumbnail %v: %d %s", s, r.Status, r.Raw)
			}
		}
		// A fourth size is a generation over the limit.
		r := thumb(alice.AccessToken, 640, 480, "scale")
		if r.Status != 429 || r.Body["errcode"] != "M_LIMIT_EXCEEDED" {
			t.Fatalf("fourth generation: %d %s", r.Status, r.Raw)
		}
		// Cached thumbnails are served without counting, also a crop size
		// that snaps to a cached box (110×33 → 128×48, like 100×30).
		for range 5 {
			if r := thumb(alice.AccessToken, 32, 32, "crop"); r.Status != 200 {
				t.Fatalf("cached thumbnail: %d %s", r.Status, r.Raw)
			}
		}
		if r := thumb(alice.AccessToken, 110, 33, "crop"); r.Status != 200 {
			t.Fatalf("crop snapped to a cached box: %d %s", r.Status, r.Raw)
		}
		// The limit is per user.
		if r := thumb(bob.AccessToken, 640, 480, "scale"); r.Status != 200 {
			t.Fatalf("bob's generation: %d %s", r.Status, r.Raw)
		}
	})
}
