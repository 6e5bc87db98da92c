package mediaapi

import (
	"bytes"
	"context"
	"errors"
	"image"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/myelin-chat/myelin/internal/mxhttp"
	"github.com/myelin-chat/myelin/storage"
)

// Thumbnails of other servers' media. What we can thumbnail ourselves (a
// PNG, JPEG or GIF original, once cached) is thumbnailed here, as for local
// media (thumbnail.go). Anything else is asked of its server's thumbnail
// endpoint, so that a thumbnail of a video or a PDF costs a thumbnail's
// transfer, not the whole original's (which we could not thumbnail anyway):
// when the original is cached we know its type; when it is not, the
// thumbnail is asked for first and the original is never fetched for it.
//
// A thumbnail another server sends is served only if we would have made it:
// an image type we decode and serve inline (PNG, JPEG, GIF), its header
// decoding as that type, its dimensions within maxThumbnailSide and
// media.max_image_pixels, at most maxRemoteThumbnailBytes. It is cached as a
// thumbnail row of the media item (a placeholder row with no content when
// the original is not cached), so it counts toward media.remote_cache_bytes
// and is evicted with the item.

// maxRemoteThumbnailBytes caps a thumbnail fetched from another server.
const maxRemoteThumbnailBytes = 4 << 20

// errBadRemoteThumbnail: the remote server's "thumbnail" is not one we would serve.
var errBadRemoteThumbnail = &mxhttp.Error{Status: http.StatusBadGateway, Code: "M_UNKNOWN",
	Message: "The remote server's thumbnail is not an image we serve"}

// thumbnailFormats are the thumbnail types we make or pass on, by the
// decoder's format name.
var thumbnailFormats = map[string]string{"image/png": "png", "image/jpeg": "jpeg", "image/gif": "gif"}

// canThumbnail reports whether we generate thumbnails of this content type.
func canThumbnail(contentType string) bool { return thumbnailFormats[baseType(contentType)] != "" }

// checkThumbnailRequest validates what a client asked for.
func checkThumbnailRequest(req ThumbnailRequest) error {
	if req.Width <= 0 || req.Height <= 0 {
		return mxhttp.InvalidParam("width and height must be positive integers")
	}
	if req.Method != MethodCrop && req.Method != MethodScale {
		return mxhttp.InvalidParam("method must be crop or scale")
	}
	return nil
}

// ThumbnailOf returns a thumbnail of serverName's media item mediaID, and
// the time to serve it as last modified. Local media is looked up (waiting
// up to timeout for a pending upload) and thumbnailed here; remote media as
// the notes above say (allowRemote false: only what is cached).
func (s *Service) ThumbnailOf(ctx context.Context, serverName, mediaID string, req ThumbnailRequest, timeout time.Duration, allowRemote bool) (*Thumbnail, time.Time, error) {
	if err := checkThumbnailRequest(req); err != nil {
		return nil, time.Time{}, err
	}
	if serverName == s.serverName || !ValidServerName(serverName) || !ValidMediaID(mediaID) {
		m, err := s.Lookup(ctx, serverName, mediaID, timeout, allowRemote)
		if err != nil {
			return nil, time.Time{}, err
		}
		t, err := s.Thumbnail(ctx, m, req)
		return t, m.Created, err
	}
	if err := s.allowFetch(ctx, serverName, mediaID); err != nil {
		return nil, time.Time{}, err
	}
	row, err := s.store.GetMedia(ctx, serverName, mediaID)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return nil, time.Time{}, err
	}
	if row != nil && row.SHA256 != "" && canThumbnail(row.ContentType) {
		s.cache.touch(ctx, row)
		m := mediaOf(row)
		t, err := s.Thumbnail(ctx, m, req)
		return t, m.Created, err
	}
	box := thumbnailBox(req)
	if row != nil {
		t, err := s.store.GetMediaThumbnail(ctx, serverName, mediaID, box[0], box[1], req.Method, req.Animated)
		if err == nil {
			s.cache.touch(ctx, row)
			return &Thumbnail{ContentType: t.ContentType, SHA256: t.SHA256, Size: t.Size}, time.UnixMilli(t.CreatedTS), nil
		} else if !errors.Is(err, storage.ErrNotFound) {
			return nil, time.Time{}, err
		}
	}
	if !allowRemote || s.remote == nil {
		return nil, time.Time{}, mxhttp.NotFound("Unknown media")
	}
	// The remote's answer is cached for everyone: it is fetched detached
	// from this request, like a download (remote.go).
	wait := min(max(timeout, minRemoteWait), remoteFetchTimeout)
	key := "thumb/" + serverName + "/" + mediaID + "/" + strconv.Itoa(box[0]) + "x" + strconv.Itoa(box[1]) + req.Method + strconv.FormatBool(req.Animated)
	ch := s.cache.flights.DoChan(key, func() (any, error) {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), remoteFetchTimeout)
		defer cancel()
		return s.cache.fetchThumbnail(fctx, serverName, mediaID, box, req, wait)
	})
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case r := <-ch:
		if r.Err != nil {
			return nil, time.Time{}, r.Err
		}
		return r.Val.(*Thumbnail), s.now(), nil
	case <-timer.C:
		return nil, time.Time{}, mxhttp.NotYetUploaded("Remote thumbnail is still being fetched")
	case <-ctx.Done():
		return nil, time.Time{}, ctx.Err()
	}
}

// fetchThumbnail asks the media's server for a thumbnail, checks it and
// caches it under box.
func (c *remoteCache) fetchThumbnail(ctx context.Context, serverName, mediaID string, box [2]int, req ThumbnailRequest, timeout time.Duration) (*Thumbnail, error) {
	s := c.s
	limit := min(int64(maxRemoteThumbnailBytes), s.cfg.RemoteMaxBytes())
	contentType, body, err := s.remote.FetchThumbnail(ctx, serverName, mediaID, req, limit, timeout)
	if err != nil {
		var mErr *mxhttp.Error
		if errors.As(err, &mErr) && mErr.Status == http.StatusBadRequest {
			// The server cannot thumbnail it (a video, say): so neither can we.
			return nil, cannotThumbnail
		}
		return nil, remoteError(ctx, serverName, mediaID, err)
	}
	data, err := io.ReadAll(io.LimitReader(body, limit+1))
	body.Close()
	if err != nil {
		return nil, remoteError(ctx, serverName, mediaID, err)
	}
	if int64(len(data)) > limit {
		return nil, errRemoteTooLarge
	}
	ct, err := s.checkRemoteThumbnail(contentType, data)
	if err != nil {
		slog.Info("refusing a remote thumbnail", "server", serverName, "media_id", mediaID, "content_type", contentType, "err", err)
		return nil, errBadRemoteThumbnail
	}
	sum, size, release, err := s.blobs.put(bytes.NewReader(data), limit)
	if err != nil {
		return nil, err
	}
	th := &Thumbnail{ContentType: ct, SHA256: sum, Size: size}
	err = func() error {
		s.blobs.gc.RLock() // no eviction between the rows and the blob they name
		defer s.blobs.gc.RUnlock()
		if err := s.store.InsertRemoteMediaPlaceholder(ctx, serverName, mediaID, s.now().UnixMilli()); err != nil {
			return err
		}
		_, err := s.thumbs.record(ctx, &Media{Origin: serverName, MediaID: mediaID}, box, req.Method, req.Animated, th)
		return err
	}()
	release()
	if err != nil {
		return nil, err
	}
	s.flow(Inbound, serverName, "mxc://"+serverName+"/"+mediaID, size)
	c.evict(ctx, serverName, mediaID)
	return th, nil
}

// checkRemoteThumbnail returns the content type to serve a remote
// thumbnail with, or why it is refused.
func (s *Service) checkRemoteThumbnail(contentType string, data []byte) (string, error) {
	ct := baseType(contentType)
	format := thumbnailFormats[ct]
	if format == "" || !InlineSafe(ct) {
		return "", errors.New("not an image type we serve as a thumbnail")
	}
	cfg, got, err := image.DecodeConfig(bytes.NewReader(data))
	if err != nil {
		return "", err
	}
	if got != format {
		return "", errors.New("content is " + got + ", not " + format)
	}
	if cfg.Width <= 0 || cfg.Height <= 0 || cfg.Width > maxThumbnailSide || cfg.Height > maxThumbnailSide ||
		int64(cfg.Width)*int64(cfg.Height) > s.cfg.MaxImagePixels {
		return "", errors.New("dimensions out of bounds")
	}
	return ct, nil
}
