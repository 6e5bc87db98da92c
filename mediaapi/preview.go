package mediaapi

import (
	"context"
	"errors"
	"fmt"
	"image"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"golang.org/x/net/html"

	"github.com/myelin-chat/myelin/internal/mxhttp"
)

// URL previews (GET /media/preview_url): the server fetches a page a user
// names and returns its OpenGraph metadata, with og:image re-hosted as media.
// Off by default (media.url_previews): fetching arbitrary URLs on behalf of
// users reveals their links to the server and to the linked site. When on,
// every fetch goes through guardedDialer (netguard.go; private networks only
// with media.url_preview_allow_private), follows at most
// maxPreviewRedirects redirects (each checked the same way), and is capped in
// time and size.

const (
	maxPreviewRedirects = 5
	maxPreviewHTMLBytes = 1 << 20
	maxPreviewImage     = 10 << 20
	maxPreviewURLLength = 2048
	previewTimeout      = 15 * time.Second
	previewCacheTTL     = time.Hour
	previewCacheSize    = 1024
	maxOGValueLength    = 2000
	maxOGProperties     = 64
)

type previewer struct {
	s      *Service
	dialer *guardedDialer
	client *http.Client

	mu    sync.Mutex
	cache map[string]cachedPreview
}

type cachedPreview struct {
	og      map[string]any
	fetched time.Time
}

func newPreviewer(s *Service) *previewer {
	p := &previewer{s: s, dialer: newGuardedDialer(s.cfg.URLPreviewAllowPrivate), cache: map[string]cachedPreview{}}
	transport := &http.Transport{
		Proxy:                  nil, // never through an environment proxy: it would dial for us, unchecked
		DialContext:            p.dialer.DialContext,
		TLSHandshakeTimeout:    5 * time.Second,
		ResponseHeaderTimeout:  10 * time.Second,
		MaxResponseHeaderBytes: 64 << 10,
		MaxIdleConns:           16,
		IdleConnTimeout:        30 * time.Second,
	}
	p.client = &http.Client{
		Transport: transport,
		Timeout:   previewTimeout,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= maxPreviewRedirects {
				return errors.New("too many redirects")
			}
			if req.URL.Scheme != "http" && req.URL.Scheme != "https" {
				return fmt.Errorf("redirect to a %s URL", req.URL.Scheme)
			}
			return nil // the new connection goes through the guarded dialer
		},
	}
	return p
}

// URLPreviewsEnabled reports whether media.url_previews is on.
func (s *Service) URLPreviewsEnabled() bool { return s.cfg.URLPreviews }

// PreviewURL returns the OpenGraph data of rawURL for user. Images found are
// stored as media uploaded by user.
func (s *Service) PreviewURL(ctx context.Context, user, rawURL string) (map[string]any, error) {
	if !s.cfg.URLPreviews {
		return nil, mxhttp.Unrecognized("URL previews are disabled on this server")
	}
	u, err := checkPreviewURL(rawURL)
	if err != nil {
		return nil, err
	}
	p := s.previews
	key := u.String()
	p.mu.Lock()
	if c, ok := p.cache[key]; ok && s.now().Sub(c.fetched) < previewCacheTTL {
		p.mu.Unlock()
		return c.og, nil
	}
	p.mu.Unlock()
	// Refuse early with a clear answer; the dialer checks again for every connection.
	if _, err := p.dialer.check(ctx, u.Hostname()); err != nil {
		return nil, previewError(err)
	}
	ctx, cancel := context.WithTimeout(ctx, previewTimeout)
	defer cancel()
	og, err := p.fetch(ctx, user, u)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	if len(p.cache) >= previewCacheSize {
		for k, c := range p.cache { // drop the expired, or else one arbitrary entry
			if s.now().Sub(c.fetched) >= previewCacheTTL || len(p.cache) >= previewCacheSize {
				delete(p.cache, k)
			}
			if len(p.cache) < previewCacheSize/2 {
				break
			}
		}
	}
	p.cache[key] = cachedPreview{og: og, fetched: s.now()}
	p.mu.Unlock()
	return og, nil
}

// checkPreviewURL accepts absolute http(s) URLs without credentials.
func checkPreviewURL(raw string) (*url.URL, error) {
	if raw == "" {
		return nil, mxhttp.MissingParam("Missing url parameter")
	}
	if len(raw) > maxPreviewURLLength {
		return nil, mxhttp.InvalidParam("url is too long")
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" {
		return nil, mxhttp.InvalidParam("url must be an absolute http or https URL")
	}
	if u.User != nil {
		return nil, mxhttp.InvalidParam("url must not contain credentials")
	}
	u.Fragment, u.RawFragment = "", ""
	return u, nil
}

// previewError turns a fetch failure into the client's answer: refused
// addresses are M_FORBIDDEN, anything else a 502.
func previewError(err error) error {
	if errors.Is(err, ErrNonPublicAddress) {
		return mxhttp.Forbidden("URL previews of this address are not allowed")
	}
	var mErr *mxhttp.Error
	if errors.As(err, &mErr) {
		return mErr
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return &mxhttp.Error{Status: http.StatusBadGateway, Code: "M_UNKNOWN", Message: "Could not resolve the URL's host"}
	}
	return &mxhttp.Error{Status: http.StatusBadGateway, Code: "M_UNKNOWN", Message: "Could not fetch the URL"}
}

func (p *previewer) get(ctx context.Context, u *url.URL, accept string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, mxhttp.InvalidParam("Invalid url")
	}
	req.Header.Set("User-Agent", "Myelin URL preview (Matrix homeserver)")
	req.Header.Set("Accept", accept)
	resp, err := p.client.Do(req)
	if err != nil {
		return nil, previewError(err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		resp.Body.Close()
		return nil, &mxhttp.Error{Status: http.StatusBadGateway, Code: "M_UNKNOWN", Message: fmt.Sprintf("The URL answered HTTP %d", resp.StatusCode)}
	}
	return resp, nil
}

func (p *previewer) fetch(ctx context.Context, user string, u *url.URL) (map[string]any, error) {
	resp, err := p.get(ctx, u, "text/html, application/xhtml+xml, image/*;q=0.9, */*;q=0.5")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	ct := resp.Header.Get("Content-Type")
	switch mt := baseType(ct); {
	case mt == "text/html" || mt == "application/xhtml+xml":
		og := parseOpenGraph(io.LimitReader(resp.Body, maxPreviewHTMLBytes))
		if img, ok := og["og:image"].(string); ok {
			delete(og, "og:image")
			if ref, err := resp.Request.URL.Parse(img); err == nil && (ref.Scheme == "http" || ref.Scheme == "https") {
				if _, err := p.dialer.check(ctx, ref.Hostname()); err == nil {
					if iresp, err := p.get(ctx, ref, "image/*"); err == nil {
						p.storeImage(ctx, user, iresp.Body, iresp.Header.Get("Content-Type"), og)
						iresp.Body.Close()
					}
				}
			}
		}
		return og, nil
	case strings.HasPrefix(mt, "image/"):
		og := map[string]any{}
		p.storeImage(ctx, user, resp.Body, ct, og)
		return og, nil
	default:
		return map[string]any{}, nil
	}
}

// storeImage stores a previewed image as media and describes it in og.
func (p *previewer) storeImage(ctx context.Context, user string, body io.Reader, contentType string, og map[string]any) {
	limit := min(int64(maxPreviewImage), p.s.cfg.MaxUploadBytes)
	sum, size, release, err := p.s.blobs.put(body, limit)
	if err != nil {
		return
	}
	defer release()
	m := &Media{SHA256: sum, Size: size}
	if f, err := p.s.blobs.open(sum); err == nil {
		if cfg, format, err := image.DecodeConfig(f); err == nil {
			og["og:image:width"], og["og:image:height"] = cfg.Width, cfg.Height
			contentType = "image/" + format
		}
		f.Close()
	}
	if !strings.HasPrefix(baseType(contentType), "image/") {
		return
	}
	stored, err := p.s.storeBlob(ctx, user, contentType, m)
	if err != nil {
		return
	}
	og["og:image"] = stored.MXC()
	og["og:image:type"] = baseType(contentType)
	og["matrix:image:size"] = size
}

// parseOpenGraph reads og:* properties (and the title and description as
// fallbacks) from an HTML document.
func parseOpenGraph(r io.Reader) map[string]any {
	og := map[string]any{}
	var title, description string
	z := html.NewTokenizer(r)
	inTitle := false
	for {
		tt := z.Next()
		switch tt {
		case html.ErrorToken:
			if _, ok := og["og:title"]; !ok && title != "" {
				og["og:title"] = clip(title)
			}
			if _, ok := og["og:description"]; !ok && description != "" {
				og["og:description"] = clip(description)
			}
			return og
		case html.StartTagToken, html.SelfClosingTagToken:
			tok := z.Token()
			switch tok.Data {
			case "title":
				inTitle = tt == html.StartTagToken
			case "meta":
				var prop, name, content string
				for _, a := range tok.Attr {
					switch strings.ToLower(a.Key) {
					case "property":
						prop = strings.ToLower(strings.TrimSpace(a.Val))
					case "name":
						name = strings.ToLower(strings.TrimSpace(a.Val))
					case "content":
						content = strings.TrimSpace(a.Val)
					}
				}
				if prop == "" && strings.HasPrefix(name, "og:") {
					prop = name
				}
				if strings.HasPrefix(prop, "og:") && len(prop) < 100 && content != "" && len(og) < maxOGProperties {
					if _, dup := og[prop]; !dup {
						og[prop] = clip(content)
					}
				}
				if name == "description" && description == "" {
					description = content
				}
			}
		case html.EndTagToken:
			if z.Token().Data == "title" {
				inTitle = false
			}
		case html.TextToken:
			if inTitle && title == "" {
				title = strings.TrimSpace(string(z.Text()))
			}
		}
	}
}

// clip bounds a value's length without splitting a character.
func clip(s string) string {
	if len(s) <= maxOGValueLength {
		return s
	}
	s = s[:maxOGValueLength]
	for !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}
