package mediaapi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"io"
	"math"
	"runtime"
	"strconv"

	"golang.org/x/image/draw"
	"golang.org/x/sync/semaphore"
	"golang.org/x/sync/singleflight"

	"github.com/myelin-chat/myelin/internal/mxhttp"
	"github.com/myelin-chat/myelin/internal/ratelimit"
	"github.com/myelin-chat/myelin/storage"
)

// Thumbnails of PNG, JPEG and GIF (first frame) images, made with the
// standard library codecs and x/image/draw's Catmull-Rom resampler.
//
// Sizes follow the spec: "scale" fits the image inside the box keeping its
// aspect ratio, "crop" fills the box and cuts the overflow; never upscaled,
// and an image already inside the box is served as it is. Scale boxes are
// snapped to the spec's recommended sizes (or rounded up to multiples of
// 256), and so are crop boxes: a bounded set of thumbnails per image is
// generated, and every one is cached, whatever sizes clients ask for.
//
// Decompression bombs: the header's dimensions are checked (image.DecodeConfig)
// against media.max_image_pixels before anything is decoded, and each decode
// first reserves its estimated memory (pixels × bytes per pixel of the
// header's color model) from a weighted semaphore holding
// media.thumbnail_memory_bytes, so concurrent decodes stay within it. Only
// generation is rate-limited per user; cached thumbnails are not.

// Thumbnail methods.
const (
	MethodCrop  = "crop"
	MethodScale = "scale"
)

// maxThumbnailSide caps a requested thumbnail dimension.
const maxThumbnailSide = 2048

var standardBoxes = [][2]int{{32, 32}, {96, 96}, {320, 240}, {640, 480}, {800, 600}}

// ThumbnailRequest is what a client asked for.
type ThumbnailRequest struct {
	Width, Height int
	Method        string // crop or scale
	Animated      bool
	// Requester keys the generation rate limit: the user ID, or the client
	// address on unauthenticated endpoints.
	Requester string
}

// Thumbnail is the content to serve for a thumbnail request: a generated
// thumbnail or the original image.
type Thumbnail struct {
	ContentType string
	SHA256      string
	Size        int64
}

type thumbnailer struct {
	s       *Service
	sem     chan struct{}       // bounds concurrent decodes (CPU)
	mem     *semaphore.Weighted // bounds the memory of concurrent decodes, in bytes
	budget  int64
	limiter *ratelimit.Limiter // generations per requester
	flights singleflight.Group
}

func newThumbnailer(s *Service) *thumbnailer {
	return &thumbnailer{s: s, sem: make(chan struct{}, max(1, runtime.GOMAXPROCS(0))),
		mem: semaphore.NewWeighted(s.cfg.ThumbnailMemoryBytes), budget: s.cfg.ThumbnailMemoryBytes,
		limiter: ratelimit.New(s.cfg.ThumbnailsPerSecond, s.cfg.ThumbnailBurst)}
}

// decodeCost estimates the bytes a decode of an image with this header
// allocates: its pixels in the decoder's in-memory format, plus the output.
func decodeCost(cfg image.Config, out [2]int) int64 {
	var bpp float64
	switch cfg.ColorModel {
	case color.RGBA64Model, color.NRGBA64Model:
		bpp = 8
	case color.RGBAModel, color.NRGBAModel, color.CMYKModel:
		bpp = 4
	case color.YCbCrModel:
		bpp = 3 // 4:4:4 at worst
	case color.Gray16Model:
		bpp = 2
	case color.GrayModel, color.AlphaModel:
		bpp = 1
	default:
		if _, ok := cfg.ColorModel.(color.Palette); ok {
			bpp = 1
		} else {
			bpp = 8 // unknown: assume the widest
		}
	}
	return int64(math.Ceil(float64(cfg.Width)*float64(cfg.Height)*bpp)) + int64(out[0])*int64(out[1])*4
}

// Thumbnail returns a thumbnail of m, generating and caching it if needed.
func (s *Service) Thumbnail(ctx context.Context, m *Media, req ThumbnailRequest) (*Thumbnail, error) {
	if err := checkThumbnailRequest(req); err != nil {
		return nil, err
	}
	box := thumbnailBox(req)
	// Only GIFs can be animated here, and only by serving the original.
	animated := req.Animated && isGIF(m.ContentType)
	t, err := s.store.GetMediaThumbnail(ctx, m.Origin, m.MediaID, box[0], box[1], req.Method, animated)
	if err == nil {
		return &Thumbnail{ContentType: t.ContentType, SHA256: t.SHA256, Size: t.Size}, nil
	} else if !errors.Is(err, storage.ErrNotFound) {
		return nil, err
	}
	if ok, wait := s.thumbs.limiter.Allow(req.Requester); !ok {
		return nil, mxhttp.LimitExceeded("Too many thumbnails generated").With("retry_after_ms", wait.Milliseconds()+1)
	}
	key := m.Origin + "/" + m.MediaID + "/" + strconv.Itoa(box[0]) + "x" + strconv.Itoa(box[1]) + req.Method + strconv.FormatBool(animated)
	v, err, _ := s.thumbs.flights.Do(key, func() (any, error) {
		return s.thumbs.generate(context.WithoutCancel(ctx), m, box, req.Method, animated)
	})
	if err != nil {
		return nil, err
	}
	if m.Origin != s.serverName { // a thumbnail of cached remote media counts toward the cache
		s.cache.evict(context.WithoutCancel(ctx), m.Origin, m.MediaID)
	}
	return v.(*Thumbnail), nil
}

// thumbnailBox is the box a request is served with (see the package notes).
func thumbnailBox(req ThumbnailRequest) [2]int {
	w, h := min(req.Width, maxThumbnailSide), min(req.Height, maxThumbnailSide)
	if req.Method == MethodCrop {
		return cropBox(w, h)
	}
	for _, b := range standardBoxes {
		if b[0] >= w && b[1] >= h {
			return b
		}
	}
	roundUp := func(n int) int { return min(maxThumbnailSide, (n+255)/256*256) }
	return [2]int{roundUp(w), roundUp(h)}
}

// cropLadder are the long sides of crop boxes (each divisible by 8).
var cropLadder = []int{32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048}

// cropBox snaps a crop request to a bounded set of boxes, keeping what the
// spec asks of crops: at least the requested size, and the requested aspect
// ratio (to within 1/8 of the long side). The long side goes up to the
// ladder, the short side scales with it and rounds up to an eighth of it; so
// 32×32 and 96×96 stay themselves, and at most ~200 crops exist per image.
func cropBox(w, h int) [2]int {
	long, short := max(w, h), min(w, h)
	l := cropLadder[len(cropLadder)-1]
	for _, c := range cropLadder {
		if c >= long {
			l = c
			break
		}
	}
	step := l / 8
	s := min(l, (short*l+long*step-1)/(long*step)*step) // ceil(short·l/long) up to a multiple of step
	if w >= h {
		return [2]int{l, s}
	}
	return [2]int{s, l}
}

func isGIF(contentType string) bool { return baseType(contentType) == "image/gif" }

var cannotThumbnail = mxhttp.Unknown("Cannot generate thumbnails for the requested content")

func (t *thumbnailer) generate(ctx context.Context, m *Media, box [2]int, method string, animated bool) (*Thumbnail, error) {
	select {
	case t.sem <- struct{}{}:
		defer func() { <-t.sem }()
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	f, err := t.s.Open(m)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cfg, format, err := image.DecodeConfig(f)
	if err != nil || (format != "png" && format != "jpeg" && format != "gif") {
		return nil, cannotThumbnail
	}
	if int64(cfg.Width)*int64(cfg.Height) > t.s.cfg.MaxImagePixels || cfg.Width <= 0 || cfg.Height <= 0 {
		return nil, mxhttp.TooLarge("Image is too large to thumbnail")
	}
	tw, th, cw, ch := thumbnailSize(cfg.Width, cfg.Height, box, method)
	fits := tw == cfg.Width && th == cfg.Height && cw == tw && ch == th
	original := &Thumbnail{ContentType: "image/" + format, SHA256: m.SHA256, Size: m.Size}
	if fits && (format != "gif" || animated) {
		// Small enough already: the original is the thumbnail (an animated
		// GIF only when animation was asked for). Held like a put's blob:
		// the row about to name the original must not race its eviction.
		t.s.blobs.gc.RLock()
		defer t.s.blobs.gc.RUnlock()
		return t.record(ctx, m, box, method, animated, original)
	}
	cost := decodeCost(cfg, [2]int{cw, ch})
	if cost > t.budget {
		return nil, mxhttp.TooLarge("Image is too large to thumbnail")
	}
	if err := t.mem.Acquire(ctx, cost); err != nil {
		return nil, err
	}
	defer t.mem.Release(cost)
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("rewinding %s: %w", m.MXC(), err)
	}
	src, _, err := image.Decode(f) // a GIF decodes to its first frame
	if err != nil {
		return nil, cannotThumbnail
	}
	dst := image.NewNRGBA(image.Rect(0, 0, cw, ch))
	// Scale to tw×th and keep the centred cw×ch window of it.
	offX, offY := (tw-cw)/2, (th-ch)/2
	draw.CatmullRom.Scale(dst, image.Rect(-offX, -offY, tw-offX, th-offY), src, src.Bounds(), draw.Src, nil)
	var buf bytes.Buffer
	contentType := "image/png"
	if format == "jpeg" {
		contentType = "image/jpeg"
		err = jpeg.Encode(&buf, dst, &jpeg.Options{Quality: 85})
	} else {
		err = (&png.Encoder{CompressionLevel: png.BestSpeed}).Encode(&buf, dst)
	}
	if err != nil {
		return nil, fmt.Errorf("encoding thumbnail of %s: %w", m.MXC(), err)
	}
	sum, size, release, err := t.s.blobs.put(&buf, math.MaxInt64-1)
	if err != nil {
		return nil, err
	}
	defer release()
	return t.record(ctx, m, box, method, animated, &Thumbnail{ContentType: contentType, SHA256: sum, Size: size})
}

// record stores a thumbnail's row. The caller holds the blob store's gc
// lock shared; for cached remote media the item is checked to still be
// there under it (an eviction since the lookup would otherwise leave a
// thumbnail row naming a deleted blob).
func (t *thumbnailer) record(ctx context.Context, m *Media, box [2]int, method string, animated bool, th *Thumbnail) (*Thumbnail, error) {
	if m.Origin != t.s.serverName {
		if _, err := t.s.store.GetMedia(ctx, m.Origin, m.MediaID); errors.Is(err, storage.ErrNotFound) {
			return nil, mxhttp.NotFound("Unknown media")
		} else if err != nil {
			return nil, err
		}
	}
	err := t.s.store.PutMediaThumbnail(ctx, storage.MediaThumbnail{Origin: m.Origin, MediaID: m.MediaID,
		Width: box[0], Height: box[1], Method: method, Animated: animated,
		ContentType: th.ContentType, Size: th.Size, SHA256: th.SHA256, CreatedTS: t.s.now().UnixMilli()})
	if err != nil {
		return nil, err
	}
	return th, nil
}

// thumbnailSize computes, for a w×h image and a box, the scaled size tw×th
// and the final (cropped) size cw×ch. Nothing is ever upscaled.
func thumbnailSize(w, h int, box [2]int, method string) (tw, th, cw, ch int) {
	bw, bh := float64(box[0]), float64(box[1])
	fw, fh := float64(w), float64(h)
	var s float64
	if method == MethodCrop {
		s = math.Max(bw/fw, bh/fh)
	} else {
		s = math.Min(bw/fw, bh/fh)
	}
	s = math.Min(s, 1)
	tw = max(1, int(math.Round(fw*s)))
	th = max(1, int(math.Round(fh*s)))
	cw, ch = tw, th
	if method == MethodCrop {
		cw, ch = min(tw, box[0]), min(th, box[1])
	}
	return tw, th, cw, ch
}

// Make sure the GIF decoder is registered (thumbnails of GIFs) even if no
// other file imports image/gif.
var _ = gif.Decode
