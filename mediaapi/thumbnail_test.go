package mediaapi

import (
	"bytes"
	"image"
	"image/color"
	"image/png"
	"strings"
	"testing"
)

func TestThumbnailSize(t *testing.T) {
	for _, tc := range []struct {
		w, h   int
		box    [2]int
		method string
		want   [4]int // tw, th, cw, ch
	}{
		{1000, 500, [2]int{96, 96}, MethodCrop, [4]int{192, 96, 96, 96}},
		{500, 1000, [2]int{96, 96}, MethodCrop, [4]int{96, 192, 96, 96}},
		{1000, 500, [2]int{320, 240}, MethodScale, [4]int{320, 160, 320, 160}},
		{500, 1000, [2]int{320, 240}, MethodScale, [4]int{120, 240, 120, 240}},
		{100, 50, [2]int{320, 240}, MethodScale, [4]int{100, 50, 100, 50}}, // never upscaled
		{100, 50, [2]int{96, 96}, MethodCrop, [4]int{100, 50, 96, 50}},     // cropped, not upscaled
		{10000, 1, [2]int{32, 32}, MethodScale, [4]int{32, 1, 32, 1}},      // never zero
	} {
		tw, th, cw, ch := thumbnailSize(tc.w, tc.h, tc.box, tc.method)
		if got := [4]int{tw, th, cw, ch}; got != tc.want {
			t.Errorf("%dx%d in %v %s: got %v, want %v", tc.w, tc.h, tc.box, tc.method, got, tc.want)
		}
	}
}

func TestThumbnailBox(t *testing.T) {
	for _, tc := range []struct {
		req  ThumbnailRequest
		want [2]int
	}{
		{ThumbnailRequest{Width: 32, Height: 32, Method: MethodScale}, [2]int{32, 32}},
		{ThumbnailRequest{Width: 50, Height: 20, Method: MethodScale}, [2]int{96, 96}},
		{ThumbnailRequest{Width: 300, Height: 200, Method: MethodScale}, [2]int{320, 240}},
		{ThumbnailRequest{Width: 801, Height: 10, Method: MethodScale}, [2]int{1024, 256}},
		{ThumbnailRequest{Width: 100000, Height: 100000, Method: MethodScale}, [2]int{2048, 2048}},
		// Crops snap too (so every crop is cacheable), to at least the
		// requested size and about its aspect ratio.
		{ThumbnailRequest{Width: 50, Height: 20, Method: MethodCrop}, [2]int{64, 32}},
		{ThumbnailRequest{Width: 20, Height: 50, Method: MethodCrop}, [2]int{32, 64}},
		{ThumbnailRequest{Width: 32, Height: 32, Method: MethodCrop}, [2]int{32, 32}},
		{ThumbnailRequest{Width: 96, Height: 96, Method: MethodCrop}, [2]int{96, 96}},
		{ThumbnailRequest{Width: 100, Height: 30, Method: MethodCrop}, [2]int{128, 48}},
		{ThumbnailRequest{Width: 777, Height: 333, Method: MethodCrop}, [2]int{1024, 512}},
		{ThumbnailRequest{Width: 5000, Height: 20, Method: MethodCrop}, [2]int{2048, 256}},
	} {
		if got := thumbnailBox(tc.req); got != tc.want {
			t.Errorf("%+v: got %v, want %v", tc.req, got, tc.want)
		}
	}
}

func TestContentDisposition(t *testing.T) {
	for _, tc := range []struct{ ct, name, want string }{
		{"image/png", "cat.png", `inline; filename=cat.png`},
		{"IMAGE/PNG; charset=binary", "", "inline"},
		{"text/html", "x.html", `attachment; filename=x.html`},
		{"image/svg+xml", "", "attachment"},
		{"application/octet-stream", "a b.bin", `attachment; filename="a b.bin"`},
		{"text/plain", "résumé.txt", `inline; filename*=utf-8''r%C3%A9sum%C3%A9.txt`},
		{"garbage", "", "attachment"},
	} {
		if got := ContentDisposition(tc.ct, tc.name); got != tc.want {
			t.Errorf("ContentDisposition(%q, %q) = %q, want %q", tc.ct, tc.name, got, tc.want)
		}
	}
}

func TestParseOpenGraph(t *testing.T) {
	og := parseOpenGraph(strings.NewReader(`<!doctype html><html><head>
		<title>Fallback title</title>
		<meta property="og:title" content="The Title">
		<meta property="og:description" content="Desc">
		<meta name="og:site_name" content="Site">
		<meta property="og:image" content="/img.png">
		<meta property="og:title" content="second title ignored">
		</head><body>hi</body></html>`))
	want := map[string]string{"og:title": "The Title", "og:description": "Desc", "og:site_name": "Site", "og:image": "/img.png"}
	for k, v := range want {
		if og[k] != v {
			t.Errorf("%s = %v, want %q", k, og[k], v)
		}
	}
	og = parseOpenGraph(strings.NewReader(`<html><head><title> Only a title </title><meta name="description" content="d"></head></html>`))
	if og["og:title"] != "Only a title" || og["og:description"] != "d" {
		t.Errorf("fallbacks: %v", og)
	}
}

func TestCleanContentTypeAndIDs(t *testing.T) {
	for in, want := range map[string]string{
		"":                          "application/octet-stream",
		"image/png":                 "image/png",
		"Text/Plain; charset=UTF-8": "text/plain; charset=UTF-8",
		"nonsense":                  "application/octet-stream",
		"a/b; =":                    "application/octet-stream",
	} {
		if got := cleanContentType(in); got != want {
			t.Errorf("cleanContentType(%q) = %q, want %q", in, got, want)
		}
	}
	for id, ok := range map[string]bool{"abcXYZ019_-": true, "": false, "../etc": false, "a.b": false, "a%2F": false, strings.Repeat("a", 256): false} {
		if ValidMediaID(id) != ok {
			t.Errorf("ValidMediaID(%q) != %v", id, ok)
		}
	}
	if id := newMediaID(); !ValidMediaID(id) || len(id) < 20 {
		t.Errorf("newMediaID() = %q", id)
	}
}

// Every crop box holds the request and is one of a bounded set.
func TestCropBoxBounded(t *testing.T) {
	seen := map[[2]int]bool{}
	for w := 1; w <= 2100; w += 7 {
		for h := 1; h <= 2100; h += 11 {
			b := thumbnailBox(ThumbnailRequest{Width: w, Height: h, Method: MethodCrop})
			if b[0] < min(w, maxThumbnailSide) || b[1] < min(h, maxThumbnailSide) {
				t.Fatalf("crop %dx%d snapped to %v, smaller than asked", w, h, b)
			}
			seen[b] = true
		}
	}
	if len(seen) > 2*8*len(cropLadder) {
		t.Fatalf("%d distinct crop boxes", len(seen))
	}
}

func TestDecodeCost(t *testing.T) {
	for _, tc := range []struct {
		img  image.Image
		want int64 // for a 1×1 output
	}{
		{image.NewRGBA64(image.Rect(0, 0, 100, 50)), 100*50*8 + 4}, // 16-bit PNG: 8 bytes a pixel
		{image.NewNRGBA(image.Rect(0, 0, 100, 50)), 100*50*4 + 4},
		{image.NewGray(image.Rect(0, 0, 100, 50)), 100*50 + 4},
		{image.NewPaletted(image.Rect(0, 0, 100, 50), color.Palette{color.Black, color.White}), 100*50 + 4},
	} {
		var buf bytes.Buffer
		if err := png.Encode(&buf, tc.img); err != nil {
			t.Fatal(err)
		}
		cfg, _, err := image.DecodeConfig(&buf)
		if err != nil {
			t.Fatal(err)
		}
		if got := decodeCost(cfg, [2]int{1, 1}); got != tc.want {
			t.Errorf("%T: cost %d, want %d", tc.img, got, tc.want)
		}
	}
}
