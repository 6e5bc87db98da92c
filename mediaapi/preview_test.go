package mediaapi

import (
	"bytes"
	"context"
	"errors"
	"image"
	"image/png"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/myelin-chat/myelin/internal/config"
	"github.com/myelin-chat/myelin/internal/mxhttp"
	"github.com/myelin-chat/myelin/storage"
)

// memStore is an in-memory Store for unit tests of the service.
type memStore struct {
	mu     sync.Mutex
	media  map[string]storage.MediaRow
	thumbs map[string]storage.MediaThumbnail
	refs   []storage.MediaRef          // the mxc reference record (references_test.go)
	tail   []storage.MediaRefCandidate // events past the record's follower
}

func newMemStore() *memStore {
	return &memStore{media: map[string]storage.MediaRow{}, thumbs: map[string]storage.MediaThumbnail{}}
}

func (m *memStore) InsertMedia(_ context.Context, r storage.MediaRow, _ int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.media[r.Origin+"/"+r.MediaID] = r
	return nil
}
func (m *memStore) CreatePendingMedia(_ context.Context, origin, mediaID, uploader string, now, expires int64, _ int) (bool, error) {
	return true, m.InsertMedia(context.Background(), storage.MediaRow{Origin: origin, MediaID: mediaID, Uploader: uploader, CreatedTS: now, ExpiresTS: expires}, 0)
}
func (m *memStore) CompletePendingMedia(_ context.Context, r storage.MediaRow, _ int64) error {
	return m.InsertMedia(context.Background(), r, 0)
}
func (m *memStore) MediaUsage(context.Context, string) (int64, error) { return 0, nil }
func (m *memStore) GetMedia(_ context.Context, origin, mediaID string) (*storage.MediaRow, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.media[origin+"/"+mediaID]
	if !ok {
		return nil, storage.ErrNotFound
	}
	return &r, nil
}
func (m *memStore) GetMediaThumbnail(context.Context, string, string, int, int, string, bool) (*storage.MediaThumbnail, error) {
	return nil, storage.ErrNotFound
}
func (m *memStore) PutMediaThumbnail(context.Context, storage.MediaThumbnail) error { return nil }
func (m *memStore) InsertRemoteMedia(ctx context.Context, r storage.MediaRow) error {
	return m.InsertMedia(ctx, r, 0)
}
func (m *memStore) InsertRemoteMediaPlaceholder(context.Context, string, string, int64) error {
	return nil
}
func (m *memStore) TouchRemoteMedia(context.Context, string, string, int64, int64) error { return nil }
func (m *memStore) RemoteMediaBytes(context.Context) (int64, error)                      { return 0, nil }
func (m *memStore) LeastRecentlyUsedRemoteMedia(context.Context, int) ([]storage.MediaRow, error) {
	return nil, nil
}
func (m *memStore) DeleteRemoteMedia(context.Context, string, string) ([]string, error) {
	return nil, nil
}
func (m *memStore) EraseUploads(context.Context, string, int64) ([]string, int, error) {
	return nil, 0, nil
}

func (m *memStore) DeleteMedia(context.Context, string, string) ([]string, error) {
	return nil, nil
}

// The fetch path, against a loopback server that this test admits as if it
// were public (and only it): OpenGraph parsing, og:image re-hosting, and
// redirects to private addresses refused at dial time.
func TestPreviewFetch(t *testing.T) {
	var img bytes.Buffer
	_ = png.Encode(&img, image.NewGray(image.Rect(0, 0, 12, 7)))
	mux := http.NewServeMux()
	mux.HandleFunc("/page", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write([]byte(`<html><head><title>t</title><meta property="og:title" content="Hello"><meta property="og:image" content="/img.png"></head></html>`))
	})
	mux.HandleFunc("/img.png", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "image/png")
		_, _ = w.Write(img.Bytes())
	})
	mux.HandleFunc("/to-private", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://10.0.0.1/secret", http.StatusFound)
	})
	mux.HandleFunc("/to-metadata", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://169.254.169.254/latest/meta-data/", http.StatusFound)
	})
	mux.HandleFunc("/loop", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/loop", http.StatusFound)
	})
	mux.HandleFunc("/private-image", func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(`<html><head><meta property="og:title" content="P"><meta property="og:image" content="http://192.168.0.1/x.png"></head></html>`))
	})
	ts := httptest.NewServer(mux)
	defer ts.Close()

	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.Media.URLPreviews = true
	store := newMemStore()
	s, err := New(Options{Store: store, Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	loopback := netip.MustParseAddr("127.0.0.1")
	s.previews.dialer.allow = func(ip netip.Addr) bool { return ip.Unmap() == loopback || IsPublicAddr(ip) }
	ctx := context.Background()

	og, err := s.PreviewURL(ctx, "@alice:localhost", ts.URL+"/page#frag")
	if err != nil {
		t.Fatal(err)
	}
	mxc, _ := og["og:image"].(string)
	if og["og:title"] != "Hello" || !strings.HasPrefix(mxc, "mxc://localhost/") || og["matrix:image:size"] != int64(img.Len()) ||
		og["og:image:width"] != 12 || og["og:image:height"] != 7 || og["og:image:type"] != "image/png" {
		t.Fatalf("preview: %v", og)
	}
	m, err := s.Lookup(ctx, "localhost", strings.TrimPrefix(mxc, "mxc://localhost/"), 0, false)
	if err != nil || m.Size != int64(img.Len()) || m.ContentType != "image/png" {
		t.Fatalf("re-hosted image: %+v %v", m, err)
	}

	for _, path := range []string{"/to-private", "/to-metadata"} {
		_, err := s.PreviewURL(ctx, "@alice:localhost", ts.URL+path)
		var mErr *mxhttp.Error
		if !errors.As(err, &mErr) || mErr.Status != 403 {
			t.Errorf("%s: %v, want 403", path, err)
		}
	}
	_, err = s.PreviewURL(ctx, "@alice:localhost", ts.URL+"/loop")
	var mErr *mxhttp.Error
	if !errors.As(err, &mErr) || mErr.Status != 502 {
		t.Errorf("redirect loop: %v", err)
	}
	// An og:image on a private address is dropped, the rest kept.
	og, err = s.PreviewURL(ctx, "@alice:localhost", ts.URL+"/private-image")
	if err != nil || og["og:title"] != "P" || og["og:image"] != nil {
		t.Errorf("private og:image: %v %v", og, err)
	}
	// Names for loopback stay refused even when the address would be admitted.
	if _, err := s.PreviewURL(ctx, "@alice:localhost", strings.Replace(ts.URL, "127.0.0.1", "localhost", 1)+"/page"); !errors.As(err, &mErr) || mErr.Status != 403 {
		t.Errorf("localhost: %v", err)
	}
	_, err = s.PreviewURL(ctx, "@alice:localhost", ts.URL+"/missing")
	if !errors.As(err, &mErr) || mErr.Status != 502 {
		t.Errorf("404 page: %v", err)
	}
}
