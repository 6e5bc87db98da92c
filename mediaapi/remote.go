package mediaapi

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"

	"github.com/myelin-chat/myelin/internal/mxhttp"
	"github.com/myelin-chat/myelin/storage"
)

// The remote media cache. Another server's file is fetched once (the
// RemoteFetcher), stored in the blob store like an upload, and recorded as a
// media row flagged remote under the other server's name; later downloads
// and thumbnails are served from here. Concurrent requests for one file
// share one download (singleflight), which runs detached from the requests
// and bounded by remoteFetchTimeout: a client that stops waiting (its
// timeout_ms) does not waste the download for the next one. Each download
// is capped by media.max_remote_bytes (502 M_TOO_LARGE beyond, the spec's
// answer for remote content too large). When the cache (remote originals
// and their thumbnails) is over media.remote_cache_bytes, the least
// recently served remote files are evicted, with their thumbnails and any
// blob no other row names; local uploads are never evicted.
//
// Thumbnails of remote media: see remote_thumbnail.go.

// ErrRemoteNotFound is what a RemoteFetcher returns when the other server
// says the media does not exist.
var ErrRemoteNotFound = errors.New("remote media not found")

const (
	// remoteFetchTimeout bounds one download from another server, however
	// many requests wait for it.
	remoteFetchTimeout = 60 * time.Second
	// minRemoteWait is the least a request waits for a download (a client's
	// timeout_ms of 0 means "do not wait for an upload", not "fail at once").
	minRemoteWait = time.Second
	// touchGranularity: a cached file's last access is written at most this often.
	touchGranularity = time.Minute
	// evictBatch is how many eviction candidates are read at once.
	evictBatch = 32
)

var errRemoteTooLarge = &mxhttp.Error{Status: http.StatusBadGateway, Code: "M_TOO_LARGE", Message: "Remote content is too large"}

type remoteCache struct {
	s        *Service
	flights  singleflight.Group
	evicting sync.Mutex // one eviction at a time
}

func newRemoteCache(s *Service) *remoteCache { return &remoteCache{s: s} }

// lookupRemote returns another server's media item: from the cache, else
// (allowRemote and a fetcher configured) fetched from its server, waiting
// for the download up to timeout.
func (s *Service) lookupRemote(ctx context.Context, serverName, mediaID string, timeout time.Duration, allowRemote bool) (*Media, error) {
	if err := s.allowFetch(ctx, serverName, mediaID); err != nil {
		return nil, err
	}
	row, err := s.store.GetMedia(ctx, serverName, mediaID)
	if err == nil && row.SHA256 != "" {
		s.cache.touch(ctx, row)
		return mediaOf(row), nil
	} else if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return nil, err
	}
	if !allowRemote || s.remote == nil {
		return nil, mxhttp.NotFound("Unknown media")
	}
	ch := s.cache.flights.DoChan(serverName+"/"+mediaID, func() (any, error) {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), remoteFetchTimeout)
		defer cancel()
		return s.cache.fetch(fctx, serverName, mediaID, min(max(timeout, minRemoteWait), remoteFetchTimeout))
	})
	wait := time.NewTimer(min(max(timeout, minRemoteWait), remoteFetchTimeout))
	defer wait.Stop()
	select {
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
		return r.Val.(*Media), nil
	case <-wait.C:
		// The download goes on; a retry will likely find it cached.
		return nil, mxhttp.NotYetUploaded("Remote media is still being fetched")
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// fetch downloads a remote file into the cache.
// timeout is passed on to the remote server (its wait for a pending upload).
func (c *remoteCache) fetch(ctx context.Context, serverName, mediaID string, timeout time.Duration) (*Media, error) {
	s := c.s
	limit := s.cfg.RemoteMaxBytes()
	contentType, filename, body, err := s.remote.FetchMedia(ctx, serverName, mediaID, limit, timeout)
	if err != nil {
		return nil, remoteError(ctx, serverName, mediaID, err)
	}
	defer body.Close()
	sum, size, release, err := s.blobs.put(body, limit)
	if err != nil {
		var mErr *mxhttp.Error
		switch {
		case errors.As(err, &mErr) && mErr.Code == "M_TOO_LARGE":
			return nil, errRemoteTooLarge
		case errors.As(err, &mErr): // reading the body failed
			return nil, remoteError(ctx, serverName, mediaID, err)
		}
		return nil, err
	}
	now := s.now().UnixMilli()
	row := storage.MediaRow{Origin: serverName, MediaID: mediaID, ContentType: cleanContentType(contentType),
		Filename: sanitizeFilename(filename), Size: size, SHA256: sum, CreatedTS: now, UploadedTS: now}
	err = s.store.InsertRemoteMedia(ctx, row)
	release()
	if err != nil {
		return nil, err
	}
	s.flow(Inbound, serverName, "mxc://"+serverName+"/"+mediaID, size)
	c.evict(ctx, serverName, mediaID)
	return mediaOf(&row), nil
}

// remoteError is the client's answer for a failed fetch.
func remoteError(ctx context.Context, serverName, mediaID string, err error) error {
	var mErr *mxhttp.Error
	switch {
	case errors.Is(err, ErrRemoteNotFound):
		return mxhttp.NotFound("Unknown media")
	case errors.As(err, &mErr) && (mErr.Code == "M_TOO_LARGE" || mErr.Code == "M_NOT_YET_UPLOADED" || mErr.Code == "M_FORBIDDEN"):
		if mErr.Code == "M_TOO_LARGE" {
			return errRemoteTooLarge
		}
		return mErr
	case errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil:
		slog.Info("remote media fetch timed out", "server", serverName, "media_id", mediaID, "err", err)
		return &mxhttp.Error{Status: http.StatusGatewayTimeout, Code: "M_UNKNOWN", Message: "Timed out fetching the media from " + serverName}
	}
	slog.Info("remote media fetch failed", "server", serverName, "media_id", mediaID, "err", err)
	return &mxhttp.Error{Status: http.StatusBadGateway, Code: "M_UNKNOWN", Message: "Could not fetch the media from " + serverName}
}

// touch records that a cached remote file was served (its LRU position).
func (c *remoteCache) touch(ctx context.Context, row *storage.MediaRow) {
	if err := c.s.store.TouchRemoteMedia(ctx, row.Origin, row.MediaID, c.s.now().UnixMilli(), touchGranularity.Milliseconds()); err != nil {
		slog.Warn("recording remote media access", "err", err)
	}
}

// evict removes least recently used remote files until the cache is within
// its budget, never the file just fetched (keepOrigin/keepID).
func (c *remoteCache) evict(ctx context.Context, keepOrigin, keepID string) {
	c.evicting.Lock()
	defer c.evicting.Unlock()
	budget := c.s.cfg.RemoteCacheBytes
	var victims []storage.MediaRow
	for range 10000 { // bounded: each round removes a file or stops
		// Read the size again after each removal (the store's running total,
		// one row): a file's thumbnails count too.
		total, err := c.s.store.RemoteMediaBytes(ctx)
		if err != nil {
			slog.Warn("remote media cache: reading its size", "err", err)
			return
		}
		if total <= budget {
			return
		}
		for len(victims) > 0 && victims[0].Origin == keepOrigin && victims[0].MediaID == keepID {
			victims = victims[1:]
		}
		if len(victims) == 0 {
			if victims, err = c.s.store.LeastRecentlyUsedRemoteMedia(ctx, evictBatch); err != nil {
				slog.Warn("remote media cache: listing files", "err", err)
				return
			}
			for len(victims) > 0 && victims[0].Origin == keepOrigin && victims[0].MediaID == keepID {
				victims = victims[1:]
			}
			if len(victims) == 0 {
				return
			}
		}
		v := victims[0]
		victims = victims[1:]
		if err := c.remove(ctx, v.Origin, v.MediaID); err != nil {
			slog.Warn("remote media cache: evicting", "origin", v.Origin, "media_id", v.MediaID, "err", err)
			return
		}
	}
}

// remove drops a cached remote file, its thumbnails and the blobs no row
// names any more. The blob store's gc lock is held across the store's
// reference check and the deletion, so no put can start naming a blob
// between the two.
func (c *remoteCache) remove(ctx context.Context, origin, mediaID string) error {
	c.s.blobs.gc.Lock()
	defer c.s.blobs.gc.Unlock()
	orphans, err := c.s.store.DeleteRemoteMedia(ctx, origin, mediaID)
	if err != nil {
		return err
	}
	for _, sum := range orphans {
		if err := c.s.blobs.remove(sum); err != nil {
			return err
		}
	}
	return nil
}

// sizeGauge is myelin_media_remote_cache_bytes: the store's running total,
// one row read at scrape time.
func (c *remoteCache) sizeGauge() prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "myelin_media_remote_cache_bytes", Help: "Bytes in the remote media cache (other servers' files and their thumbnails).",
	}, func() float64 {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		n, err := c.s.store.RemoteMediaBytes(ctx)
		if err != nil {
			slog.Warn("remote media cache: reading its size", "err", err)
			return math.NaN()
		}
		return float64(n)
	})
}
