// Package mediaapi is the content repository: it stores uploaded files
// (synchronous uploads and asynchronous create-then-upload), serves them back
// with their metadata, generates and caches image thumbnails, and builds
// OpenGraph URL previews behind an SSRF-safe HTTP client.
//
// Files are content-addressed: each blob is stored once under
// <data_dir>/media/sha256/ab/cd/<sha256>, written to a temporary file,
// fsynced and renamed into place before the metadata row that names it is
// committed, so a crash never leaves a row without its bytes (at worst an
// unreferenced blob). Rows live in the shared store (storage/media.go).
//
// Media of other servers needs federation: a RemoteFetcher fetches it, and
// the data-localization policy (Residency, residency.go) decides whether it
// may be fetched at all, and whether ours may be served to another server.
// Without a fetcher, remote media is M_NOT_FOUND. Fetched media is cached
// (remote.go): one download per file however many ask at once, least
// recently used files evicted beyond media.remote_cache_bytes.
package mediaapi

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"regexp"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/myelin-chat/myelin/internal/config"
	"github.com/myelin-chat/myelin/internal/mxhttp"
	"github.com/myelin-chat/myelin/storage"
)

// Store is what the content repository needs from the shared store.
type Store interface {
	InsertMedia(ctx context.Context, m storage.MediaRow, quota int64) error
	CreatePendingMedia(ctx context.Context, origin, mediaID, uploader string, now, expires int64, maxPending int) (bool, error)
	CompletePendingMedia(ctx context.Context, m storage.MediaRow, quota int64) error
	MediaUsage(ctx context.Context, uploader string) (int64, error)
	GetMedia(ctx context.Context, origin, mediaID string) (*storage.MediaRow, error)
	GetMediaThumbnail(ctx context.Context, origin, mediaID string, width, height int, method string, animated bool) (*storage.MediaThumbnail, error)
	PutMediaThumbnail(ctx context.Context, t storage.MediaThumbnail) error

	// The remote media cache (storage/media_remote.go).
	InsertRemoteMedia(ctx context.Context, m storage.MediaRow) error
	InsertRemoteMediaPlaceholder(ctx context.Context, origin, mediaID string, now int64) error
	TouchRemoteMedia(ctx context.Context, origin, mediaID string, now, granularity int64) error
	RemoteMediaBytes(ctx context.Context) (int64, error)
	LeastRecentlyUsedRemoteMedia(ctx context.Context, limit int) ([]storage.MediaRow, error)
	DeleteRemoteMedia(ctx context.Context, origin, mediaID string) ([]string, error)

	// Deletion of any item (retention's purge): storage/retention.go.
	DeleteMedia(ctx context.Context, origin, mediaID string) ([]string, error)
	// Erasure (storage/erasure.go).
	EraseUploads(ctx context.Context, userID string, now int64) ([]string, int, error)

	// The mxc reference record (storage/media_refs.go).
	InsertMediaRefs(ctx context.Context, refs []storage.MediaRef) error
	MediaRefRooms(ctx context.Context, uri string, limit int) ([]string, error)
	MediaRefTail(ctx context.Context, uri string, limit int) ([]storage.MediaRefCandidate, error)
	// Encrypted rooms an uploader shares with a server (storage/media_refs.go).
	EncryptedRoomsShared(ctx context.Context, userID, server string, limit int) ([]string, error)
}

// RemoteFetcher fetches media that another server holds (federation's
// /_matrix/federation/v1/media/download and /thumbnail). FetchMedia returns
// the media's metadata and a reader over at most maxBytes of content;
// FetchThumbnail a thumbnail's content type and bytes (at most maxBytes).
// timeout is passed on as the request's timeout_ms (how long the other
// server waits for a pending upload). Their errors: ErrRemoteNotFound when
// the server says the media does not exist, an *mxhttp.Error to pass on
// (M_TOO_LARGE, M_NOT_YET_UPLOADED; a 400 the server answered, e.g. media it
// cannot thumbnail), anything else for a server that could not be reached
// or answered nonsense.
type RemoteFetcher interface {
	FetchMedia(ctx context.Context, serverName, mediaID string, maxBytes int64, timeout time.Duration) (contentType, filename string, body io.ReadCloser, err error)
	FetchThumbnail(ctx context.Context, serverName, mediaID string, req ThumbnailRequest, maxBytes int64, timeout time.Duration) (contentType string, body io.ReadCloser, err error)
}

// PendingUploadLifetime is how long a media ID created for an asynchronous
// upload waits for its content (the spec's recommended 24 hours).
const PendingUploadLifetime = 24 * time.Hour

// maxWait caps how long a download waits for a pending upload (timeout_ms).
const maxWait = 60 * time.Second

// Service is the content repository.
type Service struct {
	store      Store
	blobs      *blobStore
	serverName string
	cfg        config.Media
	now        func() time.Time

	remote    RemoteFetcher
	residency Residency
	audit     Audit

	mu      sync.Mutex
	waiters map[string]*waiter // media ID → downloads waiting for its pending upload

	cache *remoteCache

	thumbs   *thumbnailer
	previews *previewer
}

// Options are what the content repository is built from.
type Options struct {
	Store  Store
	Config *config.Config
	// Remote fetches other servers' media; nil: remote media is M_NOT_FOUND.
	Remote RemoteFetcher
	// Residency, when set, is asked before another server's media is
	// fetched and before ours is served to another server (residency.go).
	Residency Residency
	// Audit, when set, records media crossing the boundary and refusals.
	Audit Audit
	// Metrics, when set, receives the remote cache's size gauge.
	Metrics prometheus.Registerer
}

// New returns the content repository storing blobs under <data_dir>/media.
func New(o Options) (*Service, error) {
	blobs, err := newBlobStore(o.Config.DataDir + "/media")
	if err != nil {
		return nil, err
	}
	s := &Service{
		store:      o.Store,
		blobs:      blobs,
		serverName: o.Config.ServerName,
		cfg:        o.Config.Media,
		now:        time.Now,
		remote:     o.Remote,
		residency:  o.Residency,
		audit:      o.Audit,
		waiters:    map[string]*waiter{},
	}
	s.cache = newRemoteCache(s)
	s.thumbs = newThumbnailer(s)
	s.previews = newPreviewer(s)
	if o.Metrics != nil {
		if err := o.Metrics.Register(s.cache.sizeGauge()); err != nil {
			return nil, fmt.Errorf("registering media metrics: %w", err)
		}
	}
	// Finish any erasure a crash interrupted after the account was erased.
	if err := s.EraseUserMedia(context.Background(), ""); err != nil {
		return nil, err
	}
	return s, nil
}

// ServerName is the origin of the media uploaded here.
func (s *Service) ServerName() string { return s.serverName }

// MaxUploadBytes is the largest accepted upload.
func (s *Service) MaxUploadBytes() int64 { return s.cfg.MaxUploadBytes }

// Media is a media item's metadata.
type Media struct {
	Origin      string
	MediaID     string
	ContentType string
	Filename    string
	Size        int64
	SHA256      string
	Created     time.Time
}

// MXC is the item's content URI.
func (m *Media) MXC() string { return "mxc://" + m.Origin + "/" + m.MediaID }

// Upload is one upload request's content.
type Upload struct {
	Uploader    string
	ContentType string // "" for application/octet-stream
	Filename    string
	Length      int64 // declared length (Content-Length), -1 when unknown
	Body        io.Reader
}

var errQuota = mxhttp.Forbidden("Media upload quota reached (media.max_bytes_per_user)")

// checkQuota refuses, before the body is read, an upload that cannot fit in
// the uploader's quota. The authoritative check is the store's, when the
// upload is recorded (concurrent uploads, undeclared lengths).
func (s *Service) checkQuota(ctx context.Context, up Upload) error {
	if s.cfg.MaxBytesPerUser <= 0 {
		return nil
	}
	used, err := s.store.MediaUsage(ctx, up.Uploader)
	if err != nil {
		return err
	}
	if used+max(up.Length, 0) > s.cfg.MaxBytesPerUser || (up.Length < 0 && used >= s.cfg.MaxBytesPerUser) {
		return errQuota
	}
	return nil
}

var mediaIDPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,255}$`)

// ValidMediaID reports whether id is a media ID the spec allows (and so
// cannot traverse paths).
func ValidMediaID(id string) bool { return mediaIDPattern.MatchString(id) }

// ValidServerName reports whether name is a valid server name.
func ValidServerName(name string) bool {
	return len(name) <= 255 && config.ValidateServerName(name) == nil
}

// newMediaID is 26 base32 characters: 130 random bits, unguessable.
func newMediaID() string { return rand.Text() }

// cleanContentType keeps a syntactically valid media type (lowercased type,
// parameters kept) and otherwise answers application/octet-stream.
func cleanContentType(ct string) string {
	if ct == "" {
		return "application/octet-stream"
	}
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil || !strings.Contains(mt, "/") {
		return "application/octet-stream"
	}
	return mime.FormatMediaType(mt, params)
}

// cleanFilename drops path separators and control characters from a client's
// file name; the result goes into Content-Disposition.
func cleanFilename(name string) (string, error) {
	if len(name) > 255 {
		return "", mxhttp.InvalidParam("filename is too long")
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f {
			return "", mxhttp.InvalidParam("filename must not contain control characters")
		}
	}
	return name, nil
}

// sanitizeFilename makes a file name another server sent storable and
// servable: invalid UTF-8 and control characters dropped, cut to 255 bytes on
// a character boundary. Unlike cleanFilename it never refuses (the fetch
// itself was fine).
func sanitizeFilename(name string) string {
	name = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, strings.ToValidUTF8(name, ""))
	for len(name) > 255 {
		_, n := utf8.DecodeLastRuneInString(name)
		name = name[:len(name)-n]
	}
	return name
}

// Upload stores content under a new media ID: POST /upload.
func (s *Service) Upload(ctx context.Context, up Upload) (*Media, error) {
	name, err := cleanFilename(up.Filename)
	if err != nil {
		return nil, err
	}
	if err := s.checkQuota(ctx, up); err != nil {
		return nil, err
	}
	sum, size, release, err := s.blobs.put(up.Body, s.cfg.MaxUploadBytes)
	if err != nil {
		return nil, err
	}
	defer release()
	return s.storeBlob(ctx, up.Uploader, up.ContentType, &Media{Filename: name, SHA256: sum, Size: size})
}

// storeBlob gives a stored blob a new media ID.
func (s *Service) storeBlob(ctx context.Context, uploader, contentType string, m *Media) (*Media, error) {
	now := s.now().UnixMilli()
	row := storage.MediaRow{Origin: s.serverName, MediaID: newMediaID(), Uploader: uploader,
		ContentType: cleanContentType(contentType), Size: m.Size, Filename: m.Filename, SHA256: m.SHA256,
		CreatedTS: now, UploadedTS: now}
	if err := s.store.InsertMedia(ctx, row, s.cfg.MaxBytesPerUser); errors.Is(err, storage.ErrMediaQuota) {
		return nil, errQuota
	} else if err != nil {
		return nil, err
	}
	return mediaOf(&row), nil
}

// Create reserves a media ID for an asynchronous upload: POST /create. It
// answers M_LIMIT_EXCEEDED when the user has too many pending uploads.
func (s *Service) Create(ctx context.Context, uploader string) (mediaID string, expires time.Time, err error) {
	now := s.now()
	expires = now.Add(PendingUploadLifetime)
	mediaID = newMediaID()
	ok, err := s.store.CreatePendingMedia(ctx, s.serverName, mediaID, uploader, now.UnixMilli(), expires.UnixMilli(), s.cfg.MaxPendingUploads)
	if err != nil {
		return "", time.Time{}, err
	}
	if !ok {
		return "", time.Time{}, mxhttp.LimitExceeded("Too many pending media uploads").With("retry_after_ms", int64(60000))
	}
	return mediaID, expires, nil
}

// UploadTo fills a media ID reserved by Create: PUT /upload/{serverName}/{mediaId}.
func (s *Service) UploadTo(ctx context.Context, serverName, mediaID string, up Upload) error {
	if serverName != s.serverName || !ValidMediaID(mediaID) {
		return mxhttp.NotFound("Unknown media ID")
	}
	name, err := cleanFilename(up.Filename)
	if err != nil {
		return err
	}
	// Check before reading the body, so a wrong ID costs no disk writes.
	row, err := s.store.GetMedia(ctx, serverName, mediaID)
	if errors.Is(err, storage.ErrNotFound) {
		return mxhttp.NotFound("Unknown media ID")
	} else if err != nil {
		return err
	}
	if row.SHA256 != "" {
		return mxhttp.CannotOverwrite("Media already uploaded")
	}
	if row.Uploader != up.Uploader {
		return mxhttp.Forbidden("This media ID was created by another user")
	}
	if row.ExpiresTS <= s.now().UnixMilli() {
		return mxhttp.NotFound("The media ID has expired")
	}
	if err := s.checkQuota(ctx, up); err != nil {
		return err
	}
	sum, size, release, err := s.blobs.put(up.Body, s.cfg.MaxUploadBytes)
	if err != nil {
		return err
	}
	err = s.store.CompletePendingMedia(ctx, storage.MediaRow{Origin: serverName, MediaID: mediaID, Uploader: up.Uploader,
		ContentType: cleanContentType(up.ContentType), Size: size, Filename: name, SHA256: sum, UploadedTS: s.now().UnixMilli()}, s.cfg.MaxBytesPerUser)
	release()
	switch {
	case errors.Is(err, storage.ErrMediaQuota):
		return errQuota
	case errors.Is(err, storage.ErrMediaUploaded):
		return mxhttp.CannotOverwrite("Media already uploaded")
	case errors.Is(err, storage.ErrNotFound):
		return mxhttp.NotFound("Unknown media ID")
	case err != nil:
		return err
	}
	s.mu.Lock()
	if w, ok := s.waiters[mediaID]; ok {
		close(w.done)
		delete(s.waiters, mediaID)
	}
	s.mu.Unlock()
	return nil
}

// waiter is shared by the downloads waiting for one pending upload.
type waiter struct {
	done chan struct{} // closed when the upload completes
	n    int           // downloads holding it
}

// wait registers interest in mediaID's upload; release when done waiting.
func (s *Service) wait(mediaID string) (w *waiter, release func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	w = s.waiters[mediaID]
	if w == nil {
		w = &waiter{done: make(chan struct{})}
		s.waiters[mediaID] = w
	}
	w.n++
	return w, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if w.n--; w.n == 0 && s.waiters[mediaID] == w {
			delete(s.waiters, mediaID)
		}
	}
}

// Lookup returns a media item's metadata, waiting up to timeout for a pending
// upload to complete (M_NOT_YET_UPLOADED after that). allowRemote false keeps
// it from fetching other servers' media.
func (s *Service) Lookup(ctx context.Context, serverName, mediaID string, timeout time.Duration, allowRemote bool) (*Media, error) {
	if !ValidServerName(serverName) {
		return nil, mxhttp.InvalidParam("Invalid server name")
	}
	if !ValidMediaID(mediaID) {
		return nil, mxhttp.InvalidParam("Invalid media ID: only A-Z, a-z, 0-9, _ and - are allowed")
	}
	if serverName != s.serverName {
		return s.lookupRemote(ctx, serverName, mediaID, timeout, allowRemote)
	}
	timeout = min(max(timeout, 0), maxWait)
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	// Register interest before reading, so a completion in between is not missed.
	w, release := s.wait(mediaID)
	defer release()
	for {
		row, err := s.store.GetMedia(ctx, serverName, mediaID)
		switch {
		case err == nil && row.SHA256 != "":
			return mediaOf(row), nil
		case errors.Is(err, storage.ErrNotFound), err == nil && row.ExpiresTS <= s.now().UnixMilli():
			return nil, mxhttp.NotFound("Unknown media")
		case err != nil:
			return nil, err
		}
		select {
		case <-w.done:
			// Completed: read the row again. (A new waiter is registered only
			// if we must wait again, which a completed upload never needs.)
			w = &waiter{done: make(chan struct{})}
		case <-deadline.C:
			return nil, mxhttp.NotYetUploaded("Content has not yet been uploaded")
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Open opens the content of a media item.
func (s *Service) Open(m *Media) (ReadSeekCloser, error) { return s.OpenBlob(m.SHA256) }

// OpenBlob opens stored content by its SHA-256 (a media item or a thumbnail).
func (s *Service) OpenBlob(sum string) (ReadSeekCloser, error) {
	f, err := s.blobs.open(sum)
	if err != nil {
		slog.Error("media blob missing", "sha256", sum, "err", err)
		return nil, fmt.Errorf("opening media blob %s: %w", sum, err)
	}
	return f, nil
}

// ReadSeekCloser is an open blob.
type ReadSeekCloser interface {
	io.ReadSeeker
	io.Closer
}

func mediaOf(r *storage.MediaRow) *Media {
	return &Media{Origin: r.Origin, MediaID: r.MediaID, ContentType: r.ContentType, Filename: r.Filename,
		Size: r.Size, SHA256: r.SHA256, Created: time.UnixMilli(r.UploadedTS)}
}
