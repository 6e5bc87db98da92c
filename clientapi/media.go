package clientapi

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/myelin-chat/myelin/internal/authn"
	"github.com/myelin-chat/myelin/internal/mxhttp"
	"github.com/myelin-chat/myelin/internal/ratelimit"
	"github.com/myelin-chat/myelin/mediaapi"
)

// The content repository: authenticated /_matrix/client/v1/media/* (what
// current clients use), the /_matrix/media/v3 upload and create endpoints,
// and the deprecated unauthenticated /_matrix/media/v3 downloads, served only
// when media.legacy_unauthenticated is on (the spec's "freeze").

// Media is the content repository (mediaapi.Service).
type Media interface {
	ServerName() string
	MaxUploadBytes() int64
	Upload(ctx context.Context, up mediaapi.Upload) (*mediaapi.Media, error)
	Create(ctx context.Context, uploader string) (string, time.Time, error)
	UploadTo(ctx context.Context, serverName, mediaID string, up mediaapi.Upload) error
	Lookup(ctx context.Context, serverName, mediaID string, timeout time.Duration, allowRemote bool) (*mediaapi.Media, error)
	Open(m *mediaapi.Media) (mediaapi.ReadSeekCloser, error)
	OpenBlob(sha256 string) (mediaapi.ReadSeekCloser, error)
	ThumbnailOf(ctx context.Context, serverName, mediaID string, req mediaapi.ThumbnailRequest, timeout time.Duration, allowRemote bool) (*mediaapi.Thumbnail, time.Time, error)
	PreviewURL(ctx context.Context, user, url string) (map[string]any, error)
}

// defaultMediaTimeout is the spec's default timeout_ms.
const defaultMediaTimeout = 20 * time.Second

// isUploadPath reports whether a request path is a media upload, whose body
// is capped by media.max_upload_bytes instead of limits.max_request_bytes.
func isUploadPath(path string) bool {
	rest, ok := strings.CutPrefix(path, "/_matrix/media/")
	if !ok {
		return false
	}
	_, rest, _ = strings.Cut(rest, "/") // version
	return rest == "upload" || strings.HasPrefix(rest, "upload/")
}

// mediaRoutes mounts /_matrix/media.
func (a *API) mediaRoutes(r chi.Router) {
	if a.Media == nil {
		return
	}
	a.ensureUploadLimiter()
	r.Route("/_matrix/media", func(r chi.Router) {
		r.Use(a.rateLimitIP)
		r.Group(func(r chi.Router) {
			r.Use(a.requireAuth, a.rateLimitUser)
			r.With(a.rateLimitUpload).Method(http.MethodPost, "/v1/create", mxhttp.JSON(a.createMedia))
			for _, v := range []string{"/v3", "/r0"} {
				r.With(a.rateLimitUpload).Method(http.MethodPost, v+"/upload", mxhttp.JSON(a.uploadMedia))
				r.With(a.rateLimitUpload).Method(http.MethodPut, v+"/upload/{serverName}/{mediaId}", mxhttp.JSON(a.uploadMediaTo))
				r.Method(http.MethodGet, v+"/config", mxhttp.JSON(a.mediaConfig))
				// A preview makes the server fetch (and store): the upload limit.
				r.With(a.rateLimitUpload).Method(http.MethodGet, v+"/preview_url", mxhttp.JSON(a.previewURL))
			}
		})
		for _, v := range []string{"/v3", "/r0"} {
			r.Method(http.MethodGet, v+"/download/{serverName}/{mediaId}", a.downloadMedia(true))
			r.Method(http.MethodGet, v+"/download/{serverName}/{mediaId}/{fileName}", a.downloadMedia(true))
			r.Method(http.MethodGet, v+"/thumbnail/{serverName}/{mediaId}", a.thumbnailMedia(true))
		}
	})
}

// mediaRoutesV1 are the authenticated media endpoints under /_matrix/client/v1.
func (a *API) mediaRoutesV1(r chi.Router) {
	if a.Media == nil {
		return
	}
	a.ensureUploadLimiter()
	r.Method(http.MethodGet, "/media/config", mxhttp.JSON(a.mediaConfig))
	r.With(a.rateLimitUpload).Method(http.MethodGet, "/media/preview_url", mxhttp.JSON(a.previewURL))
	r.Method(http.MethodGet, "/media/download/{serverName}/{mediaId}", a.downloadMedia(false))
	r.Method(http.MethodGet, "/media/download/{serverName}/{mediaId}/{fileName}", a.downloadMedia(false))
	r.Method(http.MethodGet, "/media/thumbnail/{serverName}/{mediaId}", a.thumbnailMedia(false))
}

// ensureUploadLimiter creates the per-user upload limiter shared by the
// /_matrix/media and /_matrix/client/v1/media routes (whichever mounts first).
func (a *API) ensureUploadLimiter() {
	if a.uploadLimiter == nil {
		a.uploadLimiter = ratelimit.New(a.Config.Media.UploadsPerSecond, a.Config.Media.UploadBurst)
	}
}

func (a *API) rateLimitUpload(next http.Handler) http.Handler {
	return limitBy(a.uploadLimiter, func(r *http.Request) string { return authn.FromRequest(r).UserID.String() }, next)
}

func (a *API) mediaConfig(r *http.Request) (any, error) {
	return map[string]any{"m.upload.size": a.Media.MaxUploadBytes()}, nil
}

func (a *API) upload(r *http.Request) (mediaapi.Upload, error) {
	if max := a.Media.MaxUploadBytes(); r.ContentLength > max {
		return mediaapi.Upload{}, mxhttp.TooLarge("Cannot upload files larger than %d bytes", max)
	}
	return mediaapi.Upload{
		Uploader:    authn.FromRequest(r).UserID.String(),
		ContentType: r.Header.Get("Content-Type"),
		Filename:    r.URL.Query().Get("filename"),
		Length:      r.ContentLength,
		Body:        r.Body,
	}, nil
}

func (a *API) uploadMedia(r *http.Request) (any, error) {
	up, err := a.upload(r)
	if err != nil {
		return nil, err
	}
	m, err := a.Media.Upload(r.Context(), up)
	if err != nil {
		return nil, err
	}
	return map[string]string{"content_uri": m.MXC()}, nil
}

func (a *API) createMedia(r *http.Request) (any, error) {
	mediaID, expires, err := a.Media.Create(r.Context(), authn.FromRequest(r).UserID.String())
	if err != nil {
		return nil, err
	}
	return map[string]any{
		"content_uri":       "mxc://" + a.Media.ServerName() + "/" + mediaID,
		"unused_expires_at": expires.UnixMilli(),
	}, nil
}

func (a *API) uploadMediaTo(r *http.Request) (any, error) {
	up, err := a.upload(r)
	if err != nil {
		return nil, err
	}
	serverName, mediaID := mxhttp.PathParam(r, "serverName"), mxhttp.PathParam(r, "mediaId")
	if !mediaapi.ValidServerName(serverName) || !mediaapi.ValidMediaID(mediaID) {
		return nil, mxhttp.NotFound("Unknown media ID")
	}
	return mxhttp.EmptyOr(a.Media.UploadTo(r.Context(), serverName, mediaID, up))
}

func (a *API) previewURL(r *http.Request) (any, error) {
	q := r.URL.Query()
	if ts := q.Get("ts"); ts != "" {
		if _, err := strconv.ParseInt(ts, 10, 64); err != nil {
			return nil, mxhttp.InvalidParam("ts must be an integer")
		}
	}
	return a.Media.PreviewURL(r.Context(), authn.FromRequest(r).UserID.String(), q.Get("url"))
}

// lookupMedia resolves the path's media for a download request.
func (a *API) lookupMedia(r *http.Request, legacy bool) (*mediaapi.Media, error) {
	timeout, allowRemote, err := a.mediaParams(r, legacy)
	if err != nil {
		return nil, err
	}
	return a.Media.Lookup(r.Context(), mxhttp.PathParam(r, "serverName"), mxhttp.PathParam(r, "mediaId"), timeout, allowRemote)
}

// mediaParams reads a download or thumbnail request's timeout_ms and allow_remote.
func (a *API) mediaParams(r *http.Request, legacy bool) (time.Duration, bool, error) {
	if legacy && !a.Config.Media.LegacyUnauthenticated {
		return 0, false, mxhttp.NotFound("Unauthenticated media is frozen: use /_matrix/client/v1/media")
	}
	// With the data-localization policy on, the unauthenticated endpoints
	// cannot tell who asks (another server falling back to them, anyone):
	// media leaves only through the authenticated client and federation
	// endpoints, where the policy can decide.
	if legacy && a.Config.Residency.Enabled {
		return 0, false, mxhttp.Forbidden("Unauthenticated media downloads are refused under this server's data-localization policy: use /_matrix/client/v1/media, or /_matrix/federation/v1/media")
	}
	q := r.URL.Query()
	timeout := defaultMediaTimeout
	if v := q.Get("timeout_ms"); v != "" {
		ms, err := strconv.ParseInt(v, 10, 64)
		if err != nil || ms < 0 {
			return 0, false, mxhttp.InvalidParam("timeout_ms must be a non-negative integer")
		}
		timeout = time.Duration(min(ms, int64(time.Hour/time.Millisecond))) * time.Millisecond
	}
	allowRemote := true
	for _, name := range []string{"allow_remote", "allow_redirect"} {
		switch v := q.Get(name); v {
		case "", "true", "false":
			if name == "allow_remote" && v == "false" {
				allowRemote = false
			}
		default:
			return 0, false, mxhttp.InvalidParam("%s must be true or false", name)
		}
	}
	// allow_redirect is accepted; the content is always served directly.
	return timeout, allowRemote, nil
}

// setMediaHeaders sets the headers every served file gets: the spec's
// sandboxing CSP, cross-origin readability, no sniffing, and caching of
// content that never changes.
func setMediaHeaders(h http.Header, contentType, disposition, etag string, legacy bool) {
	h.Set("Content-Type", contentType)
	h.Set("Content-Disposition", disposition)
	h.Set("Content-Security-Policy", mediaapi.ContentSecurityPolicy)
	h.Set("Cross-Origin-Resource-Policy", "cross-origin")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("ETag", `"`+etag+`"`)
	if legacy {
		h.Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		// Behind authentication: browsers may cache, shared caches may not.
		h.Set("Cache-Control", "private, max-age=31536000, immutable")
	}
}

func (a *API) downloadMedia(legacy bool) http.Handler {
	return mxhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		m, err := a.lookupMedia(r, legacy)
		if err != nil {
			return err
		}
		f, err := a.Media.Open(m)
		if err != nil {
			return err
		}
		defer f.Close()
		filename := m.Filename
		if chi.URLParam(r, "fileName") != "" {
			filename = mxhttp.PathParam(r, "fileName")
		}
		setMediaHeaders(w.Header(), m.ContentType, mediaapi.ContentDisposition(m.ContentType, filename), m.SHA256, legacy)
		http.ServeContent(w, r, "", m.Created, f)
		return nil
	})
}

func (a *API) thumbnailMedia(legacy bool) http.Handler {
	return mxhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		req, err := thumbnailRequest(r)
		if err != nil {
			return err
		}
		req.Requester = "ip:" + clientIP(r)
		if d := authn.FromRequest(r); d != nil {
			req.Requester = d.UserID.String()
		}
		timeout, allowRemote, err := a.mediaParams(r, legacy)
		if err != nil {
			return err
		}
		t, modified, err := a.Media.ThumbnailOf(r.Context(), mxhttp.PathParam(r, "serverName"), mxhttp.PathParam(r, "mediaId"), req, timeout, allowRemote)
		if err != nil {
			return err
		}
		f, err := a.Media.OpenBlob(t.SHA256)
		if err != nil {
			return err
		}
		defer f.Close()
		name := "thumbnail." + strings.TrimPrefix(t.ContentType, "image/")
		setMediaHeaders(w.Header(), t.ContentType, `inline; filename="`+name+`"`, t.SHA256, legacy)
		http.ServeContent(w, r, "", modified, f)
		return nil
	})
}

func thumbnailRequest(r *http.Request) (mediaapi.ThumbnailRequest, error) {
	q := r.URL.Query()
	req := mediaapi.ThumbnailRequest{Method: mediaapi.MethodScale}
	for _, d := range []struct {
		name string
		v    *int
	}{{"width", &req.Width}, {"height", &req.Height}} {
		s := q.Get(d.name)
		if s == "" {
			return req, mxhttp.MissingParam("Missing %s parameter", d.name)
		}
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			return req, mxhttp.InvalidParam("%s must be a positive integer", d.name)
		}
		*d.v = n
	}
	if m := q.Get("method"); m != "" {
		if m != mediaapi.MethodCrop && m != mediaapi.MethodScale {
			return req, mxhttp.InvalidParam("method must be crop or scale")
		}
		req.Method = m
	}
	switch q.Get("animated") {
	case "", "false":
	case "true":
		req.Animated = true
	default:
		return req, mxhttp.InvalidParam("animated must be true or false")
	}
	return req, nil
}
