package mediaapi

import (
	"bytes"
	"context"
	"image"
	"image/png"
	"net/http"
	"testing"
	"time"

	"github.com/myelin-chat/myelin/internal/mxhttp"
)

func encodePNG(t *testing.T, w, h int) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := png.Encode(&buf, image.NewGray(image.Rect(0, 0, w, h))); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// Thumbnails of remote media we cannot thumbnail come from the remote's
// thumbnail endpoint, without downloading the original, are cached (and
// counted) as thumbnail rows, and are served only if they are images we
// would have made; images we can thumbnail are made here from the cached
// original.
func TestRemoteThumbnails(t *testing.T) {
	ctx := context.Background()
	thumb := encodePNG(t, 32, 18)
	remote := &countingRemote{fetches: map[string]int{},
		files: map[string][]byte{"video": []byte("not really an mp4"), "pic": encodePNG(t, 300, 200)},
		types: map[string]string{"video": "video/mp4"},
		thumbs: map[string]remoteThumb{
			"video":    {contentType: "image/png", data: thumb},
			"uncached": {contentType: "image/png", data: thumb},
			"html":     {contentType: "text/html", data: []byte("<html><script>alert(1)</script></html>")},
			"liar":     {contentType: "image/jpeg", data: thumb}, // PNG bytes labelled JPEG
			"huge":     {contentType: "image/png", data: encodePNG(t, 3000, 4)},
			"pdf":      {err: mxhttp.Unknown("Cannot generate thumbnails for the requested content")},
		}}
	s, db := newCacheService(t, remote, 1<<20, 1<<30)
	req := ThumbnailRequest{Width: 32, Height: 32, Method: MethodScale, Requester: "@u:here.example"}

	// Not cached: the remote's thumbnail, the original never fetched; the
	// client's timeout passed on, bounded.
	th, _, err := s.ThumbnailOf(ctx, "there.example", "uncached", req, 3*time.Second, true)
	if err != nil || th.ContentType != "image/png" || th.Size != int64(len(thumb)) {
		t.Fatalf("remote thumbnail: %+v %v", th, err)
	}
	if remote.count("uncached") != 0 || remote.timeout != 3*time.Second {
		t.Fatalf("original fetched %d times; timeout passed %v", remote.count("uncached"), remote.timeout)
	}
	big := ThumbnailRequest{Width: 320, Height: 240, Method: MethodScale}
	if _, _, err := s.ThumbnailOf(ctx, "there.example", "uncached", big, time.Hour, true); err != nil || remote.timeout != remoteFetchTimeout {
		t.Fatalf("other size: %v, timeout passed %v", err, remote.timeout)
	}
	// Cached: served again without asking.
	if _, _, err := s.ThumbnailOf(ctx, "there.example", "uncached", req, 0, false); err != nil || remote.thumbed["uncached"] != 2 {
		t.Fatalf("cached remote thumbnail: %v, asked %d times", err, remote.thumbed["uncached"])
	}
	if total, err := db.RemoteMediaBytes(ctx); err != nil || total != 2*int64(len(thumb)) {
		t.Fatalf("cache size %d %v, want the two thumbnails' %d", total, err, 2*len(thumb))
	}

	// A cached non-image original: still the remote's thumbnail.
	if _, err := s.Lookup(ctx, "there.example", "video", time.Second, true); err != nil {
		t.Fatal(err)
	}
	if th, _, err := s.ThumbnailOf(ctx, "there.example", "video", req, time.Second, true); err != nil || th.ContentType != "image/png" || remote.thumbed["video"] != 1 {
		t.Fatalf("thumbnail of a cached video: %+v %v", th, err)
	}
	// A cached image: made here, the remote not asked.
	if _, err := s.Lookup(ctx, "there.example", "pic", time.Second, true); err != nil {
		t.Fatal(err)
	}
	if th, _, err := s.ThumbnailOf(ctx, "there.example", "pic", req, time.Second, true); err != nil || th.ContentType != "image/png" || remote.thumbed["pic"] != 0 {
		t.Fatalf("thumbnail of a cached image: %+v %v (remote asked %d)", th, err, remote.thumbed["pic"])
	}

	// Refused: what we would not serve, and the remote's own refusal.
	for _, id := range []string{"html", "liar", "huge"} {
		_, _, err := s.ThumbnailOf(ctx, "there.example", id, req, time.Second, true)
		wantCode(t, err, http.StatusBadGateway, "M_UNKNOWN")
	}
	_, _, err = s.ThumbnailOf(ctx, "there.example", "pdf", req, time.Second, true)
	wantCode(t, err, http.StatusBadRequest, "M_UNKNOWN")
	_, _, err = s.ThumbnailOf(ctx, "there.example", "missing", req, time.Second, true)
	wantCode(t, err, http.StatusNotFound, "M_NOT_FOUND")
	for _, id := range []string{"html", "liar", "huge", "pdf", "missing"} {
		if remote.count(id) != 0 {
			t.Fatalf("%s: original downloaded for a thumbnail", id)
		}
	}
	if total, err := db.RemoteMediaBytes(ctx); err != nil {
		t.Fatal(err)
	} else if sum, _ := db.SumRemoteMediaBytes(ctx); sum != total {
		t.Fatalf("running total %d, rows %d", total, sum)
	}
	_, _, err = s.ThumbnailOf(ctx, "there.example", "uncached", ThumbnailRequest{Width: 0, Height: 3, Method: MethodScale}, 0, true)
	wantCode(t, err, http.StatusBadRequest, "M_INVALID_PARAM")
}

// checkRemoteThumbnail admits only PNG, JPEG and GIF whose header decodes as
// the declared type, within the dimension bounds.
func TestCheckRemoteThumbnail(t *testing.T) {
	s, _ := newCacheService(t, &countingRemote{fetches: map[string]int{}}, 1<<20, 1<<30)
	ok := encodePNG(t, 64, 64)
	for _, tc := range []struct {
		ct   string
		data []byte
		want bool
	}{
		{"image/png", ok, true},
		{"IMAGE/PNG; charset=x", ok, true},
		{"image/jpeg", ok, false},
		{"image/svg+xml", []byte(`<svg xmlns="http://www.w3.org/2000/svg"/>`), false},
		{"text/html", ok, false},
		{"video/mp4", ok, false},
		{"image/png", []byte("\x89PNG\r\n\x1a\n garbage"), false},
		{"image/png", encodePNG(t, maxThumbnailSide+1, 1), false},
		{"", ok, false},
	} {
		_, err := s.checkRemoteThumbnail(tc.ct, tc.data)
		if (err == nil) != tc.want {
			t.Errorf("%q (%d bytes): %v, want accepted=%v", tc.ct, len(tc.data), err, tc.want)
		}
	}
}
