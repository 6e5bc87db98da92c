package ratelimit

import (
	"net/http"
	"net/netip"
	"testing"
)

func TestProxiesClientIP(t *testing.T) {
	trusting := NewProxies([]netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("::1/128")})
	none := NewProxies(nil)
	for _, tc := range []struct {
		name string
		p    *Proxies
		peer string
		xff  []string
		want string
	}{
		{"no proxies configured: the header is ignored", none, "10.0.0.1:5000", []string{"203.0.113.7"}, "10.0.0.1"},
		{"untrusted peer: the header is ignored", trusting, "198.51.100.1:5000", []string{"203.0.113.7"}, "198.51.100.1"},
		{"trusted peer without a header", trusting, "10.0.0.1:5000", nil, "10.0.0.1"},
		{"trusted peer", trusting, "10.0.0.1:5000", []string{"203.0.113.7"}, "203.0.113.7"},
		{"IPv6 loopback proxy", trusting, "[::1]:5000", []string{"2001:db8::5"}, "2001:db8::5"},
		{"client-sent entries left of the real one are not believed", trusting, "10.0.0.1:5000",
			[]string{"1.1.1.1, 203.0.113.7"}, "203.0.113.7"},
		{"a chain of trusted proxies is walked", trusting, "10.0.0.1:5000",
			[]string{"203.0.113.7, 10.0.0.9", "10.0.0.8"}, "203.0.113.7"},
		{"garbage stops the walk at the last good hop", trusting, "10.0.0.1:5000",
			[]string{"203.0.113.7, not-an-ip, 10.0.0.9"}, "10.0.0.9"},
		{"entries with ports and brackets", trusting, "10.0.0.1:5000", []string{"[2001:db8::7]:443"}, "2001:db8::7"},
		{"IPv4-mapped peer", trusting, "[::ffff:10.0.0.1]:5000", []string{"203.0.113.7"}, "203.0.113.7"},
		{"only trusted hops: the leftmost", trusting, "10.0.0.1:5000", []string{"10.0.0.3, 10.0.0.2"}, "10.0.0.3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, _ := http.NewRequest("GET", "http://x/", nil)
			r.RemoteAddr = tc.peer
			for _, v := range tc.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			if got := tc.p.ClientIP(r); got != tc.want {
				t.Fatalf("ClientIP = %s, want %s", got, tc.want)
			}
		})
	}
}

func TestForwarded(t *testing.T) {
	for _, h := range []string{"X-Forwarded-For", "Forwarded", "X-Real-IP"} {
		r, _ := http.NewRequest("GET", "http://x/", nil)
		if Forwarded(r) {
			t.Fatal("a plain request is Forwarded")
		}
		r.Header.Set(h, "for=1.2.3.4")
		if !Forwarded(r) {
			t.Fatalf("a request with %s is not Forwarded", h)
		}
	}
}
