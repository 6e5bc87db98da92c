// Package netguard decides which IP addresses the server may connect to on a
// user's or a remote server's say: only public unicast addresses, so that
// nobody can make the server reach its own private network (SSRF). The URL
// previewer, outbound federation and pusher URLs share it.
package netguard

import (
	"net/netip"
	"strconv"
	"strings"
)

// deniedPrefixes are special-purpose ranges (IANA IPv4/IPv6 special-purpose
// registries) that must never be fetched. IPv4-mapped IPv6 addresses are
// unmapped first; other IPv6 outside 2000::/3 is refused separately.
var deniedPrefixes = func() []netip.Prefix {
	var out []netip.Prefix
	for _, s := range []string{
		"0.0.0.0/8",       // "this network", incl. 0.0.0.0
		"10.0.0.0/8",      // private
		"100.64.0.0/10",   // carrier-grade NAT
		"127.0.0.0/8",     // loopback
		"169.254.0.0/16",  // link-local, cloud metadata
		"172.16.0.0/12",   // private
		"192.0.0.0/24",    // IETF protocol assignments
		"192.0.2.0/24",    // documentation
		"192.88.99.0/24",  // 6to4 relay anycast
		"192.168.0.0/16",  // private
		"198.18.0.0/15",   // benchmarking
		"198.51.100.0/24", // documentation
		"203.0.113.0/24",  // documentation
		"224.0.0.0/4",     // multicast
		"240.0.0.0/4",     // reserved, incl. broadcast
		"::/128",          // unspecified
		"::1/128",         // loopback
		"::/96",           // IPv4-compatible (deprecated)
		"64:ff9b::/96",    // NAT64: would reach IPv4 through a translator
		"64:ff9b:1::/48",  // local-use NAT64
		"100::/64",        // discard
		"2001::/23",       // IETF protocol assignments, incl. Teredo 2001::/32
		"2001:db8::/32",   // documentation
		"2002::/16",       // 6to4: embeds an IPv4 address
		"3fff::/20",       // documentation
		"5f00::/16",       // SRv6 SIDs
		"fc00::/7",        // unique local
		"fe80::/10",       // link-local
		"fec0::/10",       // site-local (deprecated)
		"ff00::/8",        // multicast
	} {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}()

// IsPublicAddr reports whether ip is a public unicast address a server may
// fetch from.
func IsPublicAddr(ip netip.Addr) bool {
	if !ip.IsValid() {
		return false
	}
	ip = ip.Unmap().WithZone("")
	if ip.Is6() && !netip.MustParsePrefix("2000::/3").Contains(ip) {
		return false // not global unicast
	}
	for _, p := range deniedPrefixes {
		if p.Contains(ip) {
			return false
		}
	}
	return true
}

// privateNetworks are the address ranges of closed networks: RFC 1918,
// carrier-grade NAT (which overlay VPNs such as Tailscale use) and IPv6
// unique local addresses. Loopback, link-local (cloud metadata) and the
// other special-purpose ranges are not among them.
var privateNetworks = []netip.Prefix{
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.168.0.0/16"),
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("fc00::/7"),
}

// IsPrivateNetworkAddr reports whether ip is on a private network (see
// privateNetworks): what an operator of a closed deployment may choose to
// let the server fetch from.
func IsPrivateNetworkAddr(ip netip.Addr) bool {
	if !ip.IsValid() {
		return false
	}
	ip = ip.Unmap().WithZone("")
	for _, p := range privateNetworks {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// ParseHostIP parses host as an IP address in any form a resolver might
// accept: standard forms, bracketed IPv6, and the inet_aton forms that
// getaddrinfo accepts and netip does not (2130706433, 0x7f.1, 0177.0.0.1,
// 127.1). It reports false for anything that must be resolved by name.
func ParseHostIP(host string) (netip.Addr, bool) {
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if ip, err := netip.ParseAddr(host); err == nil {
		return ip, true
	}
	return parseInetAton(host)
}

// parseInetAton implements inet_aton(3): 1 to 4 parts, each decimal, octal
// (leading 0) or hex (0x); the last part fills the remaining bytes.
func parseInetAton(s string) (netip.Addr, bool) {
	parts := strings.Split(s, ".")
	if len(parts) > 4 {
		return netip.Addr{}, false
	}
	vals := make([]uint64, len(parts))
	for i, p := range parts {
		base := 10
		switch {
		case strings.HasPrefix(p, "0x") || strings.HasPrefix(p, "0X"):
			base, p = 16, p[2:]
		case len(p) > 1 && p[0] == '0':
			base, p = 8, p[1:]
		}
		if p == "" && base != 16 {
			return netip.Addr{}, false
		}
		if p == "" { // "0x" alone is 0 to inet_aton
			p = "0"
		}
		v, err := strconv.ParseUint(p, base, 32)
		if err != nil {
			return netip.Addr{}, false
		}
		vals[i] = v
	}
	var n uint64
	for i, v := range vals[:len(vals)-1] {
		if v > 0xff {
			return netip.Addr{}, false
		}
		n |= v << (8 * (3 - i))
	}
	last := vals[len(vals)-1]
	if last >= 1<<(8*(4-(len(vals)-1))) {
		return netip.Addr{}, false
	}
	n |= last
	return netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}), true
}

// IsLocalhostName reports whether host is a localhost name (RFC 6761: such
// names never leave the machine, whatever DNS says).
func IsLocalhostName(host string) bool {
	h := strings.ToLower(strings.TrimSuffix(host, "."))
	return h == "localhost" || strings.HasSuffix(h, ".localhost")
}

// CheckHostLiteral refuses, without resolving anything, a host that names a
// non-public target: an IP address (in any form a resolver accepts) that is
// not public, or a localhost name. A name that resolves to a private address
// passes: that is for the dialer to refuse at connect time, as DNS may change.
func CheckHostLiteral(host string) bool {
	if ip, ok := ParseHostIP(host); ok {
		return IsPublicAddr(ip)
	}
	return host != "" && !IsLocalhostName(host)
}

// PublicOrIn returns the address check of a server that may also reach the
// ranges an operator listed (e.g. federation.allowed_private_networks): an
// address passes if it is public or inside one of allowed. IPv4-mapped IPv6
// addresses are unmapped first, as IsPublicAddr does, so ::ffff:10.0.0.1 is
// judged as 10.0.0.1. The unspecified address and multicast never pass,
// whatever is listed: nothing is served there.
func PublicOrIn(allowed []netip.Prefix) func(netip.Addr) bool {
	allowed = append([]netip.Prefix(nil), allowed...)
	return func(ip netip.Addr) bool {
		if IsPublicAddr(ip) {
			return true
		}
		if !ip.IsValid() {
			return false
		}
		ip = ip.Unmap().WithZone("")
		if ip.IsUnspecified() || ip.IsMulticast() || ip == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
			return false
		}
		for _, p := range allowed {
			if p.Contains(ip) {
				return true
			}
		}
		return false
	}
}
