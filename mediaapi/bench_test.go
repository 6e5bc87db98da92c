package mediaapi

import (
	"bytes"
	"context"
	"image"
	"image/jpeg"
	"testing"

	"github.com/myelin-chat/myelin/internal/config"
)

func benchService(b *testing.B) *Service {
	cfg := config.Default()
	cfg.DataDir = b.TempDir()
	s, err := New(Options{Store: newMemStore(), Config: cfg})
	if err != nil {
		b.Fatal(err)
	}
	return s
}

// BenchmarkUpload1MiB: hash, write, fsync, rename and directory fsync of a
// 1 MiB upload (distinct content each time).
func BenchmarkUpload1MiB(b *testing.B) {
	s := benchService(b)
	data := make([]byte, 1<<20)
	b.SetBytes(int64(len(data)))
	for i := 0; b.Loop(); i++ {
		data[0], data[1], data[2] = byte(i), byte(i>>8), byte(i>>16)
		if _, err := s.Upload(context.Background(), Upload{Uploader: "@a:b", ContentType: "application/octet-stream", Body: bytes.NewReader(data)}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkThumbnailJPEG: decode a 2000×1500 JPEG, scale to 320×240,
// encode and store (no cache hit: the in-memory store keeps none).
func BenchmarkThumbnailJPEG(b *testing.B) {
	s := benchService(b)
	src := image.NewRGBA(image.Rect(0, 0, 2000, 1500))
	for i := range src.Pix {
		src.Pix[i] = byte(i * 7)
	}
	var buf bytes.Buffer
	_ = jpeg.Encode(&buf, src, nil)
	m, err := s.Upload(context.Background(), Upload{Uploader: "@a:b", ContentType: "image/jpeg", Body: &buf})
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := s.Thumbnail(context.Background(), m, ThumbnailRequest{Width: 320, Height: 240, Method: MethodScale}); err != nil {
			b.Fatal(err)
		}
	}
}
