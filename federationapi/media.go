package federationapi

import (
	"context"
	"io"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/myelin-chat/myelin/federation"
	"github.com/myelin-chat/myelin/internal/mxhttp"
)

// Media serves our media to other servers (mediaapi.Service): the content,
// or a thumbnail, of a media item whose origin is this server, with its
// Content-Type and Content-Disposition.
type Media interface {
	ServeMedia(ctx context.Context, origin, mediaID string, timeout time.Duration) (contentType, disposition string, body io.ReadCloser, err error)
	ServeThumbnail(ctx context.Context, origin, mediaID string, width, height int, method string, animated bool, timeout time.Duration) (contentType, disposition string, body io.ReadCloser, err error)
}

// MediaAPI is GET /_matrix/federation/v1/media/download/{mediaId} and
// /thumbnail/{mediaId}, answered as the spec's multipart/mixed: a JSON
// metadata part ({}) and the content part. It is a federation.Mounter of its
// own, mounted beside the room API behind X-Matrix authentication.
type MediaAPI struct {
	media Media
	slots *originSlots // downloads running per origin
}

// MaxMediaPerOrigin bounds the media requests one server has running at
// once (each holds a file open and a connection busy for its transfer); more
// are 429 M_LIMIT_EXCEEDED. Higher than MaxHeavyPerOrigin: a server's users
// scrolling through a room fetch many images at once.
const MaxMediaPerOrigin = 16

// NewMedia builds the federation media endpoints over media.
func NewMedia(media Media) *MediaAPI {
	return &MediaAPI{media: media, slots: newOriginSlots(MaxMediaPerOrigin)}
}

// defaultMediaTimeout is the spec's default timeout_ms.
const defaultMediaTimeout = 20 * time.Second

// Mount adds the routes to r (under /_matrix/federation, authenticated).
func (a *MediaAPI) Mount(r chi.Router) {
	r.With(a.slots.bounded).Get("/v1/media/download/{mediaId}", mxhttp.HandlerFunc(a.download).ServeHTTP)
	r.With(a.slots.bounded).Get("/v1/media/thumbnail/{mediaId}", mxhttp.HandlerFunc(a.thumbnail).ServeHTTP)
}

func mediaTimeout(r *http.Request) (time.Duration, error) {
	v := r.URL.Query().Get("timeout_ms")
	if v == "" {
		return defaultMediaTimeout, nil
	}
	ms, err := strconv.ParseInt(v, 10, 64)
	if err != nil || ms < 0 {
		return 0, mxhttp.InvalidParam("timeout_ms must be a non-negative integer")
	}
	return time.Duration(min(ms, int64(time.Hour/time.Millisecond))) * time.Millisecond, nil
}

func (a *MediaAPI) download(w http.ResponseWriter, r *http.Request) error {
	timeout, err := mediaTimeout(r)
	if err != nil {
		return err
	}
	ct, disposition, body, err := a.media.ServeMedia(r.Context(), federation.Origin(r.Context()), mxhttp.PathParam(r, "mediaId"), timeout)
	if err != nil {
		return err
	}
	defer body.Close()
	return writeMultipart(w, ct, disposition, body)
}

func (a *MediaAPI) thumbnail(w http.ResponseWriter, r *http.Request) error {
	timeout, err := mediaTimeout(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	var size [2]int
	for i, name := range []string{"width", "height"} {
		s := q.Get(name)
		if s == "" {
			return mxhttp.MissingParam("Missing %s parameter", name)
		}
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			return mxhttp.InvalidParam("%s must be a positive integer", name)
		}
		size[i] = n
	}
	method := q.Get("method")
	switch method {
	case "":
		method = "scale"
	case "crop", "scale":
	default:
		return mxhttp.InvalidParam("method must be crop or scale")
	}
	var animated bool
	switch q.Get("animated") {
	case "", "false":
	case "true":
		animated = true
	default:
		return mxhttp.InvalidParam("animated must be true or false")
	}
	ct, disposition, body, err := a.media.ServeThumbnail(r.Context(), federation.Origin(r.Context()), mxhttp.PathParam(r, "mediaId"),
		size[0], size[1], method, animated, timeout)
	if err != nil {
		return err
	}
	defer body.Close()
	return writeMultipart(w, ct, disposition, body)
}

// writeMultipart writes the spec's two parts: metadata, then the content.
func writeMultipart(w http.ResponseWriter, contentType, disposition string, body io.Reader) error {
	mw := multipart.NewWriter(w)
	w.Header().Set("Content-Type", "multipart/mixed; boundary="+mw.Boundary())
	w.Header().Set("X-Content-Type-Options", "nosniff")
	meta, err := mw.CreatePart(textproto.MIMEHeader{"Content-Type": {"application/json"}})
	if err != nil {
		return err
	}
	if _, err := meta.Write([]byte("{}")); err != nil {
		return nil // the connection is gone: nothing to answer
	}
	content, err := mw.CreatePart(textproto.MIMEHeader{"Content-Type": {contentType}, "Content-Disposition": {disposition}})
	if err != nil {
		return nil
	}
	if _, err := io.Copy(content, body); err != nil {
		return nil // headers are sent: an error response is no longer possible
	}
	_ = mw.Close()
	return nil
}
