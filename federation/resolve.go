package federation

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sync/singleflight"
	mfed "maunium.net/go/mautrix/federation"

	"github.com/myelin-chat/myelin/internal/config"
)

// Server discovery (spec: server-server API, "Resolving server names"),
// built from mautrix's pieces (RequestWellKnown, RequestSRV) rather than
// its ResolveServerName and ServerResolvingTransport: those keep a lock and
// a cache entry per name ever asked for (names come from unauthenticated
// input), cache a failed .well-known for 24 hours, and send an invalid
// m.server as the Host header.

const (
	// maxCachedResolutions bounds the resolution cache (LRU).
	maxCachedResolutions = 4096
	// resolutionFailureTTL: discovery that failed somewhere (.well-known
	// unreachable or invalid, DNS error) is retried this soon; the spec
	// recommends caching errors briefly, with backoff.
	resolutionFailureTTL = 10 * time.Minute
	// resolutionTTL: a resolution that needed no lookup, or SRV alone.
	resolutionTTL = 24 * time.Hour
)

// resolver resolves server names, one lookup per name at a time, cached.
type resolver struct {
	opts  *mfed.ResolveServerNameOpts
	cache *lru[string, *mfed.ResolvedServerName]
	group singleflight.Group
	now   func() time.Time
}

func newResolver(opts *mfed.ResolveServerNameOpts) *resolver {
	return &resolver{opts: opts, cache: newLRU[string, *mfed.ResolvedServerName](maxCachedResolutions), now: time.Now}
}

// resolve returns where server is reached; the caller's ctx ends its wait,
// not the lookup others may share.
func (r *resolver) resolve(ctx context.Context, server string) (*mfed.ResolvedServerName, error) {
	if res, ok := r.cache.get(server); ok && r.now().Before(res.Expires) {
		return res, nil
	}
	ch := r.group.DoChan(server, func() (any, error) {
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*wellKnownTimeout)
		defer cancel()
		res, err := r.lookup(lctx, server)
		if err == nil {
			r.cache.put(server, res)
		}
		return res, err
	})
	select {
	case res := <-ch:
		if res.Err != nil {
			return nil, res.Err
		}
		return res.Val.(*mfed.ResolvedServerName), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// lookup runs the spec's discovery steps for a server name.
func (r *resolver) lookup(ctx context.Context, server string) (*mfed.ResolvedServerName, error) {
	host, port, err := config.ParseServerName(server)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadServerName, err)
	}
	now := r.now()
	out := &mfed.ResolvedServerName{ServerName: server, HostHeader: server, Expires: now.Add(resolutionTTL)}
	// Steps 1 and 2: an IP literal or an explicit port is used as it is.
	if isIPLiteral(host) || port != 0 {
		out.IPPort = []string{joinHostPort(host, port)}
		return out, nil
	}
	// Step 3: .well-known delegation, whose m.server must be a valid name.
	target := host
	wk, expires, err := mfed.RequestWellKnown(ctx, r.opts.HTTPClient, host)
	if err == nil {
		wkHost, wkPort, perr := config.ParseServerName(wk.Server)
		if perr != nil {
			err = fmt.Errorf("invalid m.server: %v", perr)
		} else {
			out.HostHeader, out.Expires = wk.Server, expires
			if isIPLiteral(wkHost) || wkPort != 0 {
				out.IPPort = []string{joinHostPort(wkHost, wkPort)}
				return out, nil
			}
			target = wkHost
		}
	}
	if err != nil {
		out.Expires = now.Add(resolutionFailureTTL) // as if none, and ask again soon
	}
	// Steps 3.3-6: SRV _matrix-fed._tcp, then _matrix._tcp, else port 8448.
	records, err := mfed.RequestSRV(ctx, r.opts.DNSClient, target)
	for _, rec := range records {
		out.IPPort = append(out.IPPort, net.JoinHostPort(strings.TrimRight(rec.Target, "."), strconv.Itoa(int(rec.Port))))
	}
	if len(out.IPPort) == 0 {
		out.IPPort = []string{joinHostPort(target, 0)}
		var dnsErr *net.DNSError
		if err != nil && !(errors.As(err, &dnsErr) && dnsErr.IsNotFound) {
			if soon := now.Add(resolutionFailureTTL); soon.Before(out.Expires) {
				out.Expires = soon // a DNS failure, not an answer
			}
		}
	}
	return out, nil
}

func isIPLiteral(host string) bool {
	_, err := netip.ParseAddr(strings.Trim(host, "[]"))
	return err == nil
}

// joinHostPort is host:port for dialling; port 0 is the default 8448.
func joinHostPort(host string, port int) string {
	if port == 0 {
		port = 8448
	}
	return net.JoinHostPort(strings.Trim(host, "[]"), strconv.Itoa(port))
}

type dialTargetsKey struct{}

// discoveredTransport sends a request to a discovered server: HTTPS to the
// resolved addresses (tried in order), with the resolved Host header and
// TLS name.
type discoveredTransport struct {
	resolver  *resolver
	transport *http.Transport
	dial      func(ctx context.Context, network, addr string) (net.Conn, error)
}

func (t *discoveredTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	res, err := t.resolver.resolve(req.Context(), req.URL.Host)
	if err != nil {
		return nil, fmt.Errorf("resolving %s: %w", req.URL.Host, err)
	}
	r := req.Clone(context.WithValue(req.Context(), dialTargetsKey{}, res.IPPort))
	r.URL.Scheme = "https"
	r.URL.Host = res.HostHeader
	r.Host = res.HostHeader
	return t.transport.RoundTrip(r)
}

func (t *discoveredTransport) dialResolved(ctx context.Context, network, _ string) (net.Conn, error) {
	targets, _ := ctx.Value(dialTargetsKey{}).([]string)
	if len(targets) == 0 {
		return nil, errors.New("no resolved federation address in context")
	}
	var errs []error
	for _, addr := range targets {
		conn, err := t.dial(ctx, network, addr)
		if err == nil {
			return conn, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, errors.Join(errs...)
}
