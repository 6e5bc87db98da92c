package mediaapi

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"github.com/myelin-chat/myelin/internal/netguard"
)

// The URL previewer fetches pages that users name: without care, a user could
// make the server request its own admin endpoints, cloud metadata
// (169.254.169.254) or anything else on the private network (SSRF). Every
// connection it makes goes through guardedDial, which resolves the host
// itself, refuses if any address is not public, dials the checked address
// (no second resolution, so no DNS rebinding) and checks again the address
// actually connected (Dialer.Control).

// ErrNonPublicAddress is returned for hosts that are or resolve to
// addresses that are not on the public internet.
var ErrNonPublicAddress = errors.New("address is not public")

// IsPublicAddr reports whether ip is a public unicast address a server may
// fetch from (shared with federation: internal/netguard).
func IsPublicAddr(ip netip.Addr) bool { return netguard.IsPublicAddr(ip) }

// parseHostIP parses host as an IP address in any form a resolver might
// accept (internal/netguard.ParseHostIP).
func parseHostIP(host string) (netip.Addr, bool) { return netguard.ParseHostIP(host) }

// resolver looks up a host's addresses (a test swaps it).
type resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// checkedAddrs resolves host and returns its addresses, or an error if it
// has none or any of them is not public (a host with one private address is
// refused whole: which address a client would get is the attacker's choice).
func checkedAddrs(ctx context.Context, r resolver, host string) ([]netip.Addr, error) {
	return checkedAddrsWith(ctx, r, IsPublicAddr, host)
}

func checkedAddrsWith(ctx context.Context, r resolver, allow func(netip.Addr) bool, host string) ([]netip.Addr, error) {
	if ip, ok := parseHostIP(host); ok {
		if !allow(ip) {
			return nil, fmt.Errorf("%s: %w", host, ErrNonPublicAddress)
		}
		return []netip.Addr{ip.Unmap()}, nil
	}
	if netguard.IsLocalhostName(host) {
		return nil, fmt.Errorf("%s: %w", host, ErrNonPublicAddress)
	}
	addrs, err := r.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil, fmt.Errorf("resolving %s: %w", host, err)
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("resolving %s: no addresses", host)
	}
	for _, ip := range addrs {
		if !allow(ip) {
			return nil, fmt.Errorf("%s resolves to %s: %w", host, ip, ErrNonPublicAddress)
		}
	}
	return addrs, nil
}

// guardedDialer dials only the addresses allow admits.
type guardedDialer struct {
	resolver resolver
	allow    func(netip.Addr) bool // IsPublicAddr; tests of the fetch path admit a loopback test server
	dialer   net.Dialer
}

// newGuardedDialer dials public addresses, and those of private networks
// too if allowPrivate (media.url_preview_allow_private, for closed networks).
func newGuardedDialer(allowPrivate bool) *guardedDialer {
	allow := IsPublicAddr
	if allowPrivate {
		allow = func(ip netip.Addr) bool { return IsPublicAddr(ip) || netguard.IsPrivateNetworkAddr(ip) }
	}
	d := &guardedDialer{resolver: net.DefaultResolver, allow: allow}
	d.dialer.Control = func(network, address string, _ syscall.RawConn) error {
		ap, err := netip.ParseAddrPort(address)
		if err != nil || !d.allow(ap.Addr()) {
			return fmt.Errorf("connecting to %s: %w", address, ErrNonPublicAddress)
		}
		return nil
	}
	return d
}

// DialContext is http.Transport's dialer: resolve, check, dial the checked IP.
func (d *guardedDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	addrs, err := d.check(ctx, host)
	if err != nil {
		return nil, err
	}
	var firstErr error
	for _, ip := range addrs {
		conn, err := d.dialer.DialContext(ctx, network, net.JoinHostPort(ip.String(), port))
		if err == nil {
			return conn, nil
		}
		if firstErr == nil {
			firstErr = err
		}
	}
	return nil, firstErr
}

// check resolves host and returns its addresses if all are allowed.
func (d *guardedDialer) check(ctx context.Context, host string) ([]netip.Addr, error) {
	return checkedAddrsWith(ctx, d.resolver, d.allow, host)
}
