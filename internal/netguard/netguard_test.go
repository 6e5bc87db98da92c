package netguard

import (
	"net/netip"
	"testing"
)

// PublicOrIn admits public addresses and the listed ranges, nothing else;
// IPv4-mapped addresses are judged as IPv4, and the unspecified address and
// multicast stay refused even inside a listed range.
func TestPublicOrIn(t *testing.T) {
	allowed := PublicOrIn([]netip.Prefix{netip.MustParsePrefix("127.0.0.1/32"), netip.MustParsePrefix("10.20.0.0/16"),
		netip.MustParsePrefix("fd00:1::/64"), netip.MustParsePrefix("224.0.0.0/4"), netip.MustParsePrefix("0.0.0.0/8")})
	none := PublicOrIn(nil)
	for addr, want := range map[string]bool{
		"127.0.0.1": true, "::ffff:127.0.0.1": true, "127.0.0.2": false, "::1": false,
		"10.20.255.1": true, "10.21.0.1": false, "192.168.1.1": false, "169.254.169.254": false,
		"fd00:1::5": true, "fd00:2::5": false, "8.8.8.8": true, "2001:4860:4860::8888": true,
		"224.0.0.1": false, "0.0.0.0": false, "fe80::1%eth0": false,
	} {
		ip := netip.MustParseAddr(addr)
		if got := allowed(ip); got != want {
			t.Errorf("%s: allowed %v, want %v", addr, got, want)
		}
		if got := none(ip); got != IsPublicAddr(ip) {
			t.Errorf("%s: with no ranges %v, want IsPublicAddr's %v", addr, got, !got)
		}
	}
	if allowed(netip.Addr{}) {
		t.Error("the zero address must be refused")
	}
}
