package homeserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"syscall"
	"time"

	"maunium.net/go/mautrix"
	mfed "maunium.net/go/mautrix/federation"

	"github.com/myelin-chat/myelin/federation"
	"github.com/myelin-chat/myelin/internal/config"
	"github.com/myelin-chat/myelin/internal/mxhttp"
	"github.com/myelin-chat/myelin/internal/netguard"
	"github.com/myelin-chat/myelin/mediaapi"
)

// mediaRemote backs mediaapi.RemoteFetcher with the transport's client:
//
//  1. GET /_matrix/federation/v1/media/download/{mediaId}, X-Matrix signed
//     (spec v1.11+). The answer is multipart/mixed: a JSON metadata part,
//     then either the content or a Location to fetch it from. A Location is
//     followed with a client of its own that connects only to the addresses
//     federation may reach (public ones, and federation.allowed_private_networks),
//     http or https, at most maxMediaRedirects redirects, no credentials.
//  2. When the server does not know that endpoint — 404 or 400 with
//     M_UNRECOGNIZED or no Matrix error at all (a proxy's page), 405, 501 —
//     the legacy GET /_matrix/media/v3/download/{serverName}/{mediaId}?allow_remote=false,
//     unauthenticated, to the same resolved server (the transport's routing).
//     A 404 M_NOT_FOUND from the federation endpoint is final: the media does
//     not exist, there is nothing older to ask.
//
// Bodies are capped by the transport at the caller's limit plus room for
// the multipart framing; mediaapi caps the content itself.
type mediaRemote struct {
	c        *mfed.Client
	redirect *http.Client
}

// newMediaRemote builds the fetcher over the transport's client.
func newMediaRemote(cfg *config.Config, c *mfed.Client) mediaapi.RemoteFetcher {
	return mediaRemote{c: c, redirect: mediaRedirectClient(netguard.PublicOrIn(cfg.Federation.AllowedPrivatePrefixes()))}
}

const (
	maxMediaRedirects  = 5
	mediaFramingSlack  = 64 << 10 // multipart boundaries and headers around the content
	maxMediaMetadata   = 64 << 10
	mediaDialTimeout   = 10 * time.Second
	mediaHeaderTimeout = 30 * time.Second
)

// errNonPublicAddress: a Location pointed at an address federation may not reach.
var errNonPublicAddress = errors.New("refusing to connect to a non-public address")

// mediaRedirectClient fetches Location URLs: connects only where allowed
// admits (checked on the address dialled, after resolution), bounded
// redirects, no cookie jar, no credentials.
func mediaRedirectClient(allowed func(netip.Addr) bool) *http.Client {
	dialer := &net.Dialer{Timeout: mediaDialTimeout, Control: func(_, address string, _ syscall.RawConn) error {
		ap, err := netip.ParseAddrPort(address)
		if err != nil || !allowed(ap.Addr()) {
			return fmt.Errorf("%s: %w", address, errNonPublicAddress)
		}
		return nil
	}}
	return &http.Client{
		Transport: &http.Transport{
			DialContext:           dialer.DialContext,
			Proxy:                 nil, // a proxy would dial for us, unchecked
			TLSHandshakeTimeout:   mediaDialTimeout,
			ResponseHeaderTimeout: mediaHeaderTimeout,
			MaxIdleConnsPerHost:   2,
		},
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) > maxMediaRedirects {
				return errors.New("too many media redirects")
			}
			return checkMediaURL(req.URL)
		},
	}
}

func checkMediaURL(u *url.URL) error {
	if u.Scheme != "https" && u.Scheme != "http" {
		return fmt.Errorf("media redirect to a %q URL", u.Scheme)
	}
	if u.User != nil {
		return errors.New("media redirect URL carries credentials")
	}
	return nil
}

// rawPath is a request path used as it is (mautrix prefixes URLPath with
// /_matrix/federation; the legacy endpoint is under /_matrix/media).
type rawPath []any

func (p rawPath) FullPath() []any { return p }

// timeoutQuery is the timeout_ms passed on to the other server.
func timeoutQuery(timeout time.Duration) url.Values {
	return url.Values{"timeout_ms": {strconv.FormatInt(timeout.Milliseconds(), 10)}}
}

func (r mediaRemote) FetchMedia(ctx context.Context, server, mediaID string, maxBytes int64, timeout time.Duration) (string, string, io.ReadCloser, error) {
	ctx = federation.WithResponseLimit(ctx, maxBytes+mediaFramingSlack)
	_, resp, err := r.c.MakeFullRequest(ctx, mfed.RequestParams{ServerName: server, Method: http.MethodGet,
		Path: mfed.URLPath{"v1", "media", "download", mediaID}, Query: timeoutQuery(timeout), Authenticate: true, DontReadBody: true})
	if err != nil {
		if resp == nil || errors.Is(err, federation.ErrResponseTooLarge) || !legacyMediaFallback(resp.StatusCode, err) {
			return "", "", nil, mediaFetchError(resp, err)
		}
		return r.fetchLegacy(ctx, server, mediaID, maxBytes, timeout)
	}
	ct, filename, body, err := r.readMultipart(ctx, resp, maxBytes)
	if err != nil {
		resp.Body.Close()
		return "", "", nil, fmt.Errorf("media from %s: %w", server, err)
	}
	return ct, filename, body, nil
}

// FetchThumbnail asks the server for a thumbnail of its media: the
// federation endpoint (multipart, as a download), else, as for downloads,
// the legacy /_matrix/media/v3/thumbnail with allow_remote=false. A 400 the
// server answers (it cannot thumbnail the media) comes back as an
// *mxhttp.Error with that status.
func (r mediaRemote) FetchThumbnail(ctx context.Context, server, mediaID string, req mediaapi.ThumbnailRequest, maxBytes int64, timeout time.Duration) (string, io.ReadCloser, error) {
	ctx = federation.WithResponseLimit(ctx, maxBytes+mediaFramingSlack)
	q := timeoutQuery(timeout)
	q.Set("width", strconv.Itoa(req.Width))
	q.Set("height", strconv.Itoa(req.Height))
	q.Set("method", req.Method)
	q.Set("animated", strconv.FormatBool(req.Animated))
	_, resp, err := r.c.MakeFullRequest(ctx, mfed.RequestParams{ServerName: server, Method: http.MethodGet,
		Path: mfed.URLPath{"v1", "media", "thumbnail", mediaID}, Query: q, Authenticate: true, DontReadBody: true})
	if err != nil {
		if resp == nil || errors.Is(err, federation.ErrResponseTooLarge) || !legacyMediaFallback(resp.StatusCode, err) {
			return "", nil, thumbnailFetchError(resp, err)
		}
		q.Set("allow_remote", "false")
		_, resp, err = r.c.MakeFullRequest(ctx, mfed.RequestParams{ServerName: server, Method: http.MethodGet,
			Path: rawPath{"_matrix", "media", "v3", "thumbnail", server, mediaID}, Query: q, DontReadBody: true})
		if err != nil {
			return "", nil, thumbnailFetchError(resp, err)
		}
		ct, _, body, err := contentAnswer(resp, maxBytes)
		return ct, body, err
	}
	ct, _, body, err := r.readMultipart(ctx, resp, maxBytes)
	if err != nil {
		resp.Body.Close()
		return "", nil, fmt.Errorf("thumbnail from %s: %w", server, err)
	}
	return ct, body, nil
}

// thumbnailFetchError is mediaFetchError, with a 400 (the server cannot
// thumbnail the media) passed on as such.
func thumbnailFetchError(resp *http.Response, err error) error {
	if resp != nil && resp.StatusCode == http.StatusBadRequest {
		var httpErr mautrix.HTTPError
		code := "M_UNKNOWN"
		if errors.As(err, &httpErr) && httpErr.RespError != nil && httpErr.RespError.ErrCode != "" && httpErr.RespError.ErrCode != "M_TOO_LARGE" {
			code = httpErr.RespError.ErrCode
		}
		return &mxhttp.Error{Status: http.StatusBadRequest, Code: code, Message: "The remote server cannot thumbnail this media"}
	}
	return mediaFetchError(resp, err)
}

// legacyMediaFallback reports whether a failed federation download means
// "endpoint unknown" (an older server), not "media unknown".
func legacyMediaFallback(status int, err error) bool {
	var httpErr mautrix.HTTPError
	errcode := ""
	if errors.As(err, &httpErr) && httpErr.RespError != nil {
		errcode = httpErr.RespError.ErrCode
	}
	switch status {
	case http.StatusMethodNotAllowed, http.StatusNotImplemented:
		return true
	case http.StatusNotFound, http.StatusBadRequest:
		return errcode == "M_UNRECOGNIZED" || errcode == ""
	}
	return false
}

// mediaFetchError maps a remote server's error answer for mediaapi.
func mediaFetchError(resp *http.Response, err error) error {
	if errors.Is(err, federation.ErrResponseTooLarge) { // announced larger than the limit
		return mxhttp.TooLarge("Remote content is too large")
	}
	if resp == nil {
		return err
	}
	var httpErr mautrix.HTTPError
	errcode := ""
	if errors.As(err, &httpErr) && httpErr.RespError != nil {
		errcode = httpErr.RespError.ErrCode
	}
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return mediaapi.ErrRemoteNotFound
	case errcode == "M_TOO_LARGE":
		return mxhttp.TooLarge("Remote content is too large")
	case resp.StatusCode == http.StatusGatewayTimeout && errcode == "M_NOT_YET_UPLOADED":
		return mxhttp.NotYetUploaded("The remote media has not been uploaded yet")
	}
	return err
}

// readMultipart reads the federation answer: metadata part, then content
// or Location.
func (r mediaRemote) readMultipart(ctx context.Context, resp *http.Response, maxBytes int64) (string, string, io.ReadCloser, error) {
	mt, params, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/mixed" || params["boundary"] == "" {
		return "", "", nil, fmt.Errorf("answer is %q, not multipart/mixed with a boundary", resp.Header.Get("Content-Type"))
	}
	mr := multipart.NewReader(resp.Body, params["boundary"])
	meta, err := mr.NextPart()
	if err != nil {
		return "", "", nil, fmt.Errorf("reading the metadata part: %w", err)
	}
	if mt, _, _ := mime.ParseMediaType(meta.Header.Get("Content-Type")); mt != "application/json" {
		return "", "", nil, fmt.Errorf("metadata part is %q, not application/json", meta.Header.Get("Content-Type"))
	}
	var obj map[string]json.RawMessage
	if err := json.NewDecoder(io.LimitReader(meta, maxMediaMetadata)).Decode(&obj); err != nil {
		return "", "", nil, fmt.Errorf("metadata part is not a JSON object: %w", err)
	}
	part, err := mr.NextPart()
	if err != nil {
		return "", "", nil, fmt.Errorf("reading the content part: %w", err)
	}
	if loc := part.Header.Get("Location"); loc != "" {
		resp.Body.Close()
		return r.followLocation(ctx, loc, maxBytes)
	}
	return part.Header.Get("Content-Type"), dispositionFilename(part.Header.Get("Content-Disposition")),
		readCloser{Reader: part, Closer: resp.Body}, nil
}

// followLocation fetches the content a federation answer points to.
func (r mediaRemote) followLocation(ctx context.Context, loc string, maxBytes int64) (string, string, io.ReadCloser, error) {
	u, err := url.Parse(loc)
	if err != nil {
		return "", "", nil, fmt.Errorf("bad Location %q: %w", loc, err)
	}
	if err := checkMediaURL(u); err != nil {
		return "", "", nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return "", "", nil, err
	}
	resp, err := r.redirect.Do(req)
	if err != nil {
		return "", "", nil, fmt.Errorf("fetching Location: %w", err)
	}
	return contentAnswer(resp, maxBytes)
}

// fetchLegacy asks the unauthenticated legacy endpoint of the same server.
func (r mediaRemote) fetchLegacy(ctx context.Context, server, mediaID string, maxBytes int64, timeout time.Duration) (string, string, io.ReadCloser, error) {
	q := timeoutQuery(timeout)
	q.Set("allow_remote", "false")
	_, resp, err := r.c.MakeFullRequest(ctx, mfed.RequestParams{ServerName: server, Method: http.MethodGet,
		Path:  rawPath{"_matrix", "media", "v3", "download", server, mediaID},
		Query: q, DontReadBody: true})
	if err != nil {
		return "", "", nil, mediaFetchError(resp, err)
	}
	return contentAnswer(resp, maxBytes)
}

// contentAnswer takes a plain HTTP answer carrying the content.
func contentAnswer(resp *http.Response, maxBytes int64) (string, string, io.ReadCloser, error) {
	switch {
	case resp.StatusCode == http.StatusNotFound:
		resp.Body.Close()
		return "", "", nil, mediaapi.ErrRemoteNotFound
	case resp.StatusCode != http.StatusOK:
		resp.Body.Close()
		return "", "", nil, fmt.Errorf("media answer %d", resp.StatusCode)
	case resp.ContentLength > maxBytes:
		resp.Body.Close()
		return "", "", nil, mxhttp.TooLarge("Remote content is %d bytes", resp.ContentLength)
	}
	return resp.Header.Get("Content-Type"), dispositionFilename(resp.Header.Get("Content-Disposition")), resp.Body, nil
}

// dispositionFilename is the file name a Content-Disposition carries (RFC
// 2231 filename* decoded by mime), "" if none.
func dispositionFilename(v string) string {
	if v == "" {
		return ""
	}
	_, params, err := mime.ParseMediaType(v)
	if err != nil {
		return ""
	}
	return params["filename"]
}

type readCloser struct {
	io.Reader
	io.Closer
}
