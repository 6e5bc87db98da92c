package mediaapi

import (
	"context"
	"io"
	"strings"
	"time"

	"github.com/myelin-chat/myelin/internal/mxhttp"
)

// Serving our media to other servers: GET /_matrix/federation/v1/media/
// download and /thumbnail (federationapi answers them as multipart/mixed).
// Only media whose origin is this server is served (never what we cached
// of a third server's), thumbnails are made as for our own clients, and the
// data-localization policy decides from the rooms referencing the item
// whether the requesting server may have it (residency.go). What is served
// is recorded as an audit flow.

// ServeMedia returns the content of our media item mediaID for the server
// origin: its type, Content-Disposition and bytes. timeout bounds the wait
// for an asynchronous upload (504 M_NOT_YET_UPLOADED after it).
func (s *Service) ServeMedia(ctx context.Context, origin, mediaID string, timeout time.Duration) (contentType, disposition string, body io.ReadCloser, err error) {
	m, err := s.lookupForServer(ctx, origin, mediaID, timeout)
	if err != nil {
		return "", "", nil, err
	}
	f, err := s.Open(m)
	if err != nil {
		return "", "", nil, err
	}
	s.flow(Outbound, origin, m.MXC(), m.Size)
	return m.ContentType, ContentDisposition(m.ContentType, m.Filename), f, nil
}

// ServeThumbnail returns a thumbnail of our media item mediaID for the
// server origin, made (and cached) as the client thumbnail endpoint makes it.
func (s *Service) ServeThumbnail(ctx context.Context, origin, mediaID string, width, height int, method string, animated bool, timeout time.Duration) (contentType, disposition string, body io.ReadCloser, err error) {
	m, err := s.lookupForServer(ctx, origin, mediaID, timeout)
	if err != nil {
		return "", "", nil, err
	}
	t, err := s.Thumbnail(ctx, m, ThumbnailRequest{Width: width, Height: height, Method: method, Animated: animated,
		Requester: "server:" + origin})
	if err != nil {
		return "", "", nil, err
	}
	f, err := s.OpenBlob(t.SHA256)
	if err != nil {
		return "", "", nil, err
	}
	s.flow(Outbound, origin, m.MXC(), t.Size)
	name := "thumbnail." + strings.TrimPrefix(t.ContentType, "image/")
	return t.ContentType, ContentDisposition(t.ContentType, name), f, nil
}

func (s *Service) lookupForServer(ctx context.Context, origin, mediaID string, timeout time.Duration) (*Media, error) {
	if !ValidMediaID(mediaID) {
		return nil, mxhttp.NotFound("Unknown media")
	}
	if err := s.allowServe(ctx, origin, mediaID); err != nil {
		return nil, err
	}
	return s.Lookup(ctx, s.serverName, mediaID, timeout, false)
}
