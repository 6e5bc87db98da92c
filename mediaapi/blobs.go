package mediaapi

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"

	"github.com/myelin-chat/myelin/internal/mxhttp"
)

// blobStore keeps files named by the SHA-256 of their content: identical
// uploads share one file, and a name never changes meaning.
type blobStore struct {
	root string // <data_dir>/media
	// gc orders blob deletion (evicted remote media) against new references:
	// put holds it shared from the moment the blob is in place until its
	// caller has recorded the row naming it (release); deleting an
	// unreferenced blob holds it exclusively, so a blob another row is about
	// to name is never deleted under it.
	gc sync.RWMutex
}

func newBlobStore(root string) (*blobStore, error) {
	for _, dir := range []string{filepath.Join(root, "tmp"), filepath.Join(root, "sha256")} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("creating media directory: %w", err)
		}
	}
	if err := sweepTmp(filepath.Join(root, "tmp")); err != nil {
		return nil, err
	}
	return &blobStore{root: root}, nil
}

// sweepTmp removes what a crash left in tmp (partial uploads, thumbnails).
// It runs at start-up, before any upload can be writing there.
func sweepTmp(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("reading %s: %w", dir, err)
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return fmt.Errorf("removing stale upload: %w", err)
		}
	}
	if len(entries) > 0 {
		slog.Info("removed stale media temporary files", "dir", dir, "count", len(entries))
	}
	return nil
}

func (b *blobStore) path(sum string) string {
	return filepath.Join(b.root, "sha256", sum[:2], sum[2:4], sum)
}

// put stores r (at most max bytes; M_TOO_LARGE beyond) and returns its hex
// SHA-256 and size. When put returns, the file is durably in place: written,
// fsynced, renamed and its directory fsynced. The caller must call release
// once it has recorded the row naming the blob (or given up): until then
// the blob cannot be garbage-collected.
func (b *blobStore) put(r io.Reader, max int64) (sum string, size int64, release func(), err error) {
	sum, size, err = b.write(r, max)
	if err != nil {
		return "", 0, nil, err
	}
	return sum, size, b.gc.RUnlock, nil
}

// write is put without the release: it returns holding gc shared.
func (b *blobStore) write(r io.Reader, max int64) (sum string, size int64, err error) {
	tmp, err := os.CreateTemp(filepath.Join(b.root, "tmp"), "upload-*")
	if err != nil {
		return "", 0, fmt.Errorf("creating upload file: %w", err)
	}
	defer func() {
		if tmp != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	h := sha256.New()
	size, err = io.Copy(io.MultiWriter(tmp, h), io.LimitReader(r, max+1))
	if err != nil {
		var maxErr *http.MaxBytesError
		if errors.As(err, &maxErr) {
			return "", 0, mxhttp.TooLarge("Upload exceeds %d bytes", max)
		}
		return "", 0, mxhttp.Unknown("Could not read the upload: %v", err)
	}
	if size > max {
		return "", 0, mxhttp.TooLarge("Upload exceeds %d bytes", max)
	}
	if err := tmp.Sync(); err != nil {
		return "", 0, fmt.Errorf("syncing upload: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return "", 0, fmt.Errorf("closing upload: %w", err)
	}
	sum = hex.EncodeToString(h.Sum(nil))
	dst := b.path(sum)
	b.gc.RLock()
	defer func() {
		if err != nil {
			b.gc.RUnlock()
		}
	}()
	if _, err := os.Stat(dst); err == nil {
		os.Remove(tmp.Name()) // already stored: identical content
		tmp = nil
		return sum, size, nil
	}
	dir := filepath.Dir(dst)
	_, statErr := os.Stat(dir)
	newDir := statErr != nil
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", 0, fmt.Errorf("creating media directory: %w", err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return "", 0, fmt.Errorf("storing upload: %w", err)
	}
	tmp = nil
	if err := syncDir(dir); err != nil {
		return "", 0, err
	}
	if newDir { // the fan-out directories themselves must survive a crash
		if err := syncDir(filepath.Dir(dir)); err != nil {
			return "", 0, err
		}
		if err := syncDir(filepath.Dir(filepath.Dir(dir))); err != nil {
			return "", 0, err
		}
	}
	return sum, size, nil
}

// remove deletes an unreferenced blob; the caller holds gc exclusively and
// has checked, under it, that no row names the blob.
func (b *blobStore) remove(sum string) error {
	if len(sum) != 64 {
		return fmt.Errorf("invalid blob name %q", sum)
	}
	if err := os.Remove(b.path(sum)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing blob %s: %w", sum, err)
	}
	return nil
}

// open opens a stored blob.
func (b *blobStore) open(sum string) (*os.File, error) {
	if len(sum) != 64 {
		return nil, fmt.Errorf("invalid blob name %q", sum)
	}
	return os.Open(b.path(sum))
}

// OpenBlob opens, read only, the content a media row names (its SHA-256) in
// the blob store under dataDir: for tools that run beside a live server
// (myelin export-user), which must not build a Service (New sweeps tmp).
func OpenBlob(dataDir, sum string) (*os.File, error) {
	return (&blobStore{root: filepath.Join(dataDir, "media")}).open(sum)
}

// syncDir makes a rename into dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("opening %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", dir, err)
	}
	return nil
}
