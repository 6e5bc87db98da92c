package ratelimit

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// Proxies finds the client address of a request that may have come through
// trusted reverse proxies (listen.trusted_proxies). Without them every
// client behind the recommended TLS proxy would share the proxy's address,
// and its rate-limit bucket.
type Proxies struct {
	trusted []netip.Prefix
}

// NewProxies trusts X-Forwarded-For from peers in the given prefixes.
func NewProxies(trusted []netip.Prefix) *Proxies { return &Proxies{trusted: trusted} }

func (p *Proxies) isTrusted(a netip.Addr) bool {
	a = a.Unmap()
	for _, pr := range p.trusted {
		if pr.Contains(a) {
			return true
		}
	}
	return false
}

// ClientIP returns the request's client address: the peer's, or, when the
// peer is a trusted proxy, the rightmost X-Forwarded-For address that is not
// itself a trusted proxy. Entries left of that are whatever the client sent,
// so they are never believed; an entry that does not parse stops the walk at
// the last address known good (a proxy's, shared but not forgeable).
func (p *Proxies) ClientIP(r *http.Request) string {
	peer, ok := parseHop(r.RemoteAddr)
	if !ok {
		return r.RemoteAddr
	}
	if len(p.trusted) == 0 || !p.isTrusted(peer) {
		return peer.String()
	}
	hops := forwardedFor(r.Header)
	client := peer
	for i := len(hops) - 1; i >= 0; i-- {
		a, ok := parseHop(hops[i])
		if !ok {
			break
		}
		client = a
		if !p.isTrusted(a) {
			break
		}
	}
	return client.String()
}

// forwardedFor lists the X-Forwarded-For entries, left to right, across
// repeated headers.
func forwardedFor(h http.Header) []string {
	var out []string
	for _, v := range h.Values("X-Forwarded-For") {
		for _, e := range strings.Split(v, ",") {
			out = append(out, strings.TrimSpace(e))
		}
	}
	return out
}

// parseHop parses an address as a peer or a forwarding proxy writes it:
// bare, with a port, or bracketed IPv6.
func parseHop(s string) (netip.Addr, bool) {
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap().WithZone(""), true
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap().WithZone(""), true
	}
	if host, _, err := net.SplitHostPort(s); err == nil {
		if a, err := netip.ParseAddr(host); err == nil {
			return a.Unmap().WithZone(""), true
		}
	}
	if a, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")); err == nil {
		return a.Unmap().WithZone(""), true
	}
	return netip.Addr{}, false
}

// Forwarded reports whether a request says it came through a proxy (any
// forwarding header, trusted or not).
func Forwarded(r *http.Request) bool {
	for _, h := range []string{"X-Forwarded-For", "Forwarded", "X-Real-Ip", "X-Forwarded-Host", "X-Forwarded-Proto"} {
		if len(r.Header.Values(h)) > 0 {
			return true
		}
	}
	return false
}
