package federation

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// Response size limits of outbound federation requests, by endpoint. The
// body of every response (errors included) is read through a cap: a small
// default, larger ones only where the answer is a room's state or history.
// Room federation may set its own per request with WithResponseLimit.
const (
	ResponseLimitDefault    int64 = 1 << 20   // versions, profiles, queries, make_join, single events, transactions
	ResponseLimitServerKeys int64 = 64 << 10  // GET /_matrix/key/v2/server: a few keys, bounded in number
	ResponseLimitKeyQuery   int64 = 256 << 10 // POST /_matrix/key/v2/query about one server
	ResponseLimitSendJoin   int64 = 512 << 20 // send_join: the room's whole state and auth chain
	ResponseLimitState      int64 = 256 << 20 // /state, /event_auth: a room's state or auth chain
	ResponseLimitStateIDs   int64 = 64 << 20  // /state_ids: event IDs only
	ResponseLimitBackfill   int64 = 32 << 20  // /backfill, /get_missing_events: bounded counts of ≤ 64 KiB events
)

// ErrResponseTooLarge: a server answered more than the endpoint's limit.
var ErrResponseTooLarge = errors.New("federation response over the size limit")

type responseLimitKey struct{}

// WithResponseLimit sets the response size limit of the outbound requests
// made with ctx, overriding the endpoint's.
func WithResponseLimit(ctx context.Context, limit int64) context.Context {
	return context.WithValue(ctx, responseLimitKey{}, limit)
}

// responseLimit is the limit of a request: the context's, else the endpoint's.
func responseLimit(req *http.Request) int64 {
	if l, ok := req.Context().Value(responseLimitKey{}).(int64); ok && l > 0 {
		return l
	}
	p := req.URL.Path
	switch {
	case p == "/_matrix/key/v2/server":
		return ResponseLimitServerKeys
	case p == "/_matrix/key/v2/query" || strings.HasPrefix(p, "/_matrix/key/v2/query/"):
		return ResponseLimitKeyQuery
	}
	rest, ok := strings.CutPrefix(p, "/_matrix/federation/")
	if !ok {
		return ResponseLimitDefault
	}
	if _, rest, ok = strings.Cut(rest, "/"); !ok { // the version: v1, v2
		return ResponseLimitDefault
	}
	endpoint, _, _ := strings.Cut(rest, "/")
	switch endpoint {
	case "send_join":
		return ResponseLimitSendJoin
	case "state", "event_auth":
		return ResponseLimitState
	case "state_ids":
		return ResponseLimitStateIDs
	case "backfill", "get_missing_events":
		return ResponseLimitBackfill
	}
	return ResponseLimitDefault
}

// limitTransport caps response bodies at responseLimit.
type limitTransport struct {
	next http.RoundTripper
}

func (t *limitTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	limit := responseLimit(req)
	resp, err := t.next.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	if resp.ContentLength > limit {
		resp.Body.Close()
		return nil, fmt.Errorf("%s %s: %w (%d bytes announced, limit %d)", req.Method, req.URL.Path, ErrResponseTooLarge, resp.ContentLength, limit)
	}
	resp.Body = &limitedBody{rc: resp.Body, left: limit}
	return resp, nil
}

// limitedBody fails a read that goes past the limit (rather than ending
// quietly, which would turn a truncated body into a parse error at best).
type limitedBody struct {
	rc   io.ReadCloser
	left int64
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if int64(len(p)) > b.left+1 {
		p = p[:b.left+1]
	}
	n, err := b.rc.Read(p)
	b.left -= int64(n)
	if b.left < 0 {
		return n, ErrResponseTooLarge
	}
	return n, err
}

func (b *limitedBody) Close() error { return b.rc.Close() }
