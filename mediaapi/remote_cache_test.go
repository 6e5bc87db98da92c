package mediaapi

import (
	"bytes"
	"context"
	"errors"
	"image"
	"image/png"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/myelin-chat/myelin/internal/config"
	"github.com/myelin-chat/myelin/internal/mxhttp"
	"github.com/myelin-chat/myelin/storage"
)

// countingRemote serves files from a map, counting fetches; gate, when set,
// holds every fetch until closed.
type countingRemote struct {
	mu      sync.Mutex
	files   map[string][]byte
	types   map[string]string // content type by media ID (default image/png)
	thumbs  map[string]remoteThumb
	thumbed map[string]int // thumbnail fetches
	timeout time.Duration  // the last timeout passed on
	fetches map[string]int
	gate    chan struct{}
	err     error
}

// remoteThumb is a remote server's answer to a thumbnail request.
type remoteThumb struct {
	contentType string
	data        []byte
	err         error
}

func (r *countingRemote) FetchThumbnail(ctx context.Context, server, mediaID string, req ThumbnailRequest, maxBytes int64, timeout time.Duration) (string, io.ReadCloser, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.thumbed == nil {
		r.thumbed = map[string]int{}
	}
	r.thumbed[mediaID]++
	r.timeout = timeout
	th, ok := r.thumbs[mediaID]
	switch {
	case !ok:
		return "", nil, ErrRemoteNotFound
	case th.err != nil:
		return "", nil, th.err
	}
	return th.contentType, io.NopCloser(bytes.NewReader(th.data)), nil
}

func (r *countingRemote) FetchMedia(ctx context.Context, server, mediaID string, maxBytes int64, timeout time.Duration) (string, string, io.ReadCloser, error) {
	r.mu.Lock()
	r.fetches[mediaID]++
	r.timeout = timeout
	ct := r.types[mediaID]
	if ct == "" {
		ct = "image/png"
	}
	gate, err := r.gate, r.err
	content, ok := r.files[mediaID]
	r.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return "", "", nil, ctx.Err()
		}
	}
	if err != nil {
		return "", "", nil, err
	}
	if !ok {
		return "", "", nil, ErrRemoteNotFound
	}
	return ct, mediaID + ".png", io.NopCloser(bytes.NewReader(content)), nil
}

func (r *countingRemote) count(mediaID string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.fetches[mediaID]
}

// newCacheService is a content repository over a real SQLite store.
func newCacheService(t *testing.T, remote RemoteFetcher, maxRemote, budget int64) (*Service, *storage.DB) {
	t.Helper()
	db, err := storage.Open(context.Background(), "sqlite:"+filepath.Join(t.TempDir(), "test.db"), 4)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.ServerName = "here.example"
	cfg.Media.MaxRemoteBytes = maxRemote
	cfg.Media.RemoteCacheBytes = budget
	s, err := New(Options{Store: db, Config: cfg, Remote: remote})
	if err != nil {
		t.Fatal(err)
	}
	return s, db
}

func filled(n int, b byte) []byte { return bytes.Repeat([]byte{b}, n) }

func wantCode(t *testing.T, err error, status int, code string) {
	t.Helper()
	var mErr *mxhttp.Error
	if !errors.As(err, &mErr) || mErr.Status != status || mErr.Code != code {
		t.Fatalf("got %v, want %d %s", err, status, code)
	}
}

// Concurrent requests for one remote file download it once; later requests
// are served from the cache.
func TestRemoteFetchedOnce(t *testing.T) {
	gate := make(chan struct{})
	remote := &countingRemote{files: map[string][]byte{"f": filled(3000, 'x')}, fetches: map[string]int{}, gate: gate}
	s, _ := newCacheService(t, remote, 1<<20, 1<<30)
	const n = 8
	var wg sync.WaitGroup
	var ok atomic.Int32
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m, err := s.Lookup(context.Background(), "there.example", "f", 10*time.Second, true)
			if err == nil && m.Size == 3000 && m.Origin == "there.example" {
				ok.Add(1)
			} else {
				t.Errorf("lookup: %v", err)
			}
		}()
	}
	time.Sleep(100 * time.Millisecond) // let them all join the one download
	close(gate)
	wg.Wait()
	if ok.Load() != n {
		t.Fatalf("%d of %d lookups succeeded", ok.Load(), n)
	}
	if got := remote.count("f"); got != 1 {
		t.Fatalf("remote file fetched %d times, want 1", got)
	}
	m, err := s.Lookup(context.Background(), "there.example", "f", 0, true)
	if err != nil {
		t.Fatal(err)
	}
	f, err := s.Open(m)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(f)
	f.Close()
	if !bytes.Equal(got, filled(3000, 'x')) || m.Filename != "f.png" || m.ContentType != "image/png" {
		t.Fatalf("cached file: %d bytes, %q, %q", len(got), m.Filename, m.ContentType)
	}
	if got := remote.count("f"); got != 1 {
		t.Fatalf("cached remote file fetched again (%d fetches)", got)
	}
	// allow_remote=false still serves what is cached.
	if _, err := s.Lookup(context.Background(), "there.example", "f", 0, false); err != nil {
		t.Fatalf("cached file with allow_remote=false: %v", err)
	}
}

func TestRemoteErrors(t *testing.T) {
	remote := &countingRemote{files: map[string][]byte{"big": filled(2049, 'b'), "ok": filled(2048, 'o')}, fetches: map[string]int{}}
	s, db := newCacheService(t, remote, 2048, 1<<30)
	ctx := context.Background()

	_, err := s.Lookup(ctx, "there.example", "big", time.Second, true)
	wantCode(t, err, 502, "M_TOO_LARGE")
	if _, err := db.GetMedia(ctx, "there.example", "big"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("oversized remote file was cached: %v", err)
	}
	if _, err := s.Lookup(ctx, "there.example", "ok", time.Second, true); err != nil {
		t.Fatalf("file of exactly max_remote_bytes: %v", err)
	}

	_, err = s.Lookup(ctx, "there.example", "missing", time.Second, true)
	wantCode(t, err, 404, "M_NOT_FOUND")

	_, err = s.Lookup(ctx, "there.example", "nocache", time.Second, false)
	wantCode(t, err, 404, "M_NOT_FOUND")
	if remote.count("nocache") != 0 {
		t.Fatal("allow_remote=false fetched")
	}

	remote.err = errors.New("connection refused")
	_, err = s.Lookup(ctx, "there.example", "down", time.Second, true)
	wantCode(t, err, 502, "M_UNKNOWN")

	// A slow server: the request gives up after its timeout (504), the
	// download goes on and a later request finds the file cached.
	remote.err = nil
	remote.files["slow"] = filled(10, 's')
	gate := make(chan struct{})
	remote.gate = gate
	start := time.Now()
	_, err = s.Lookup(ctx, "there.example", "slow", time.Second, true)
	wantCode(t, err, 504, "M_NOT_YET_UPLOADED")
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("timeout_ms not honoured: waited %v", d)
	}
	close(gate)
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := db.GetMedia(ctx, "there.example", "slow"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the download a timed-out request started was not cached")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if remote.count("slow") != 1 {
		t.Fatalf("slow file fetched %d times", remote.count("slow"))
	}
}

func blobExists(s *Service, sum string) bool {
	_, err := os.Stat(s.blobs.path(sum))
	return err == nil
}

// Over the budget, the least recently used remote files go (thumbnails and
// unshared blobs with them); local uploads never do, nor blobs they share.
func TestRemoteEviction(t *testing.T) {
	var img bytes.Buffer
	_ = png.Encode(&img, image.NewRGBA(image.Rect(0, 0, 200, 200)))
	remote := &countingRemote{fetches: map[string]int{}, files: map[string][]byte{
		"a": filled(1000, 'a'), "b": filled(1000, 'b'), "c": filled(1000, 'c'), "img": img.Bytes(),
	}}
	// Room for three 1000-byte files, or two and the image with its thumbnail.
	if img.Len() > 900 {
		t.Fatalf("test image is %d bytes", img.Len())
	}
	s, db := newCacheService(t, remote, 1<<20, 3000)
	ctx := context.Background()
	now := time.Unix(1_700_000_000, 0)
	s.now = func() time.Time { return now }
	fetch := func(id string) *Media {
		t.Helper()
		m, err := s.Lookup(ctx, "there.example", id, time.Second, true)
		if err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		now = now.Add(2 * touchGranularity)
		return m
	}
	// A local upload with b's content shares its blob.
	local, err := s.Upload(ctx, Upload{Uploader: "@u:here.example", ContentType: "text/plain", Body: bytes.NewReader(filled(1000, 'b')), Length: 1000})
	if err != nil {
		t.Fatal(err)
	}
	im := fetch("img")
	th, err := s.Thumbnail(ctx, im, ThumbnailRequest{Width: 32, Height: 32, Method: MethodScale, Requester: "t"})
	if err != nil {
		t.Fatal(err)
	}
	a, b := fetch("a"), fetch("b")
	fetch("a") // a is now more recently used than b
	fetch("b") // and b than img
	fetch("a")
	c := fetch("c") // over budget: img goes first (least recently used)
	if _, err := db.GetMedia(ctx, "there.example", "img"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("least recently used remote file not evicted: %v", err)
	}
	if blobExists(s, im.SHA256) || blobExists(s, th.SHA256) {
		t.Fatal("evicted file's blob or thumbnail blob left on disk")
	}
	if _, err := db.GetMediaThumbnail(ctx, "there.example", "img", 32, 32, MethodScale, false); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("evicted file's thumbnail row left: %v", err)
	}
	for _, m := range []*Media{a, b, c} {
		if _, err := db.GetMedia(ctx, "there.example", m.MediaID); err != nil {
			t.Fatalf("%s evicted too early: %v", m.MediaID, err)
		}
	}
	// One more: now b is the least recently used; its blob is shared with
	// the local upload and stays.
	remote.files["d"] = filled(1000, 'd')
	fetch("d")
	if _, err := db.GetMedia(ctx, "there.example", "b"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("b not evicted: %v", err)
	}
	if _, err := db.GetMedia(ctx, "there.example", "a"); err != nil {
		t.Fatalf("a (recently used) evicted: %v", err)
	}
	if !blobExists(s, b.SHA256) {
		t.Fatal("a blob shared with a local upload was deleted")
	}
	lm, err := s.Lookup(ctx, "here.example", local.MediaID, 0, false)
	if err != nil {
		t.Fatalf("local upload gone: %v", err)
	}
	f, err := s.Open(lm)
	if err != nil {
		t.Fatalf("local upload's blob gone: %v", err)
	}
	f.Close()
	total, err := db.RemoteMediaBytes(ctx)
	if err != nil || total > s.cfg.RemoteCacheBytes {
		t.Fatalf("cache holds %d bytes (budget %d): %v", total, s.cfg.RemoteCacheBytes, err)
	}
	// An evicted file is fetched again when asked for.
	fetch("b")
	if remote.count("b") != 2 {
		t.Fatalf("evicted file fetched %d times, want 2", remote.count("b"))
	}
}
