package mediaapi

import (
	"context"
	"errors"
	"net/netip"
	"testing"
)

func TestIsPublicAddr(t *testing.T) {
	for _, tc := range []struct {
		ip     string
		public bool
	}{
		{"8.8.8.8", true},
		{"1.1.1.1", true},
		{"93.184.215.14", true},
		{"2606:4700:4700::1111", true},
		{"2a00:1450:4001:80b::200e", true},
		{"::ffff:8.8.8.8", true}, // mapped public is public

		{"0.0.0.0", false},
		{"0.1.2.3", false},
		{"127.0.0.1", false},
		{"127.255.255.254", false},
		{"10.0.0.1", false},
		{"10.255.255.255", false},
		{"172.16.0.1", false},
		{"172.31.255.255", false},
		{"192.168.1.1", false},
		{"169.254.169.254", false}, // cloud metadata
		{"169.254.0.1", false},
		{"100.64.0.1", false}, // CGNAT
		{"100.127.255.255", false},
		{"192.0.0.8", false},
		{"192.0.2.1", false},
		{"198.18.0.1", false},
		{"198.51.100.7", false},
		{"203.0.113.9", false},
		{"224.0.0.1", false},
		{"239.255.255.250", false},
		{"240.0.0.1", false},
		{"255.255.255.255", false},
		{"::", false},
		{"::1", false},
		{"::ffff:127.0.0.1", false}, // IPv4-mapped loopback
		{"::ffff:10.1.2.3", false},
		{"::ffff:169.254.169.254", false},
		{"::127.0.0.1", false}, // IPv4-compatible
		{"64:ff9b::7f00:1", false},
		{"2002:7f00:1::", false}, // 6to4 of 127.0.0.1
		{"2001:0:4136:e378::1", false},
		{"2001:db8::1", false},
		{"fc00::1", false},
		{"fd12:3456:789a::1", false},
		{"fe80::1", false},
		{"fe80::1%eth0", false},
		{"fec0::1", false},
		{"ff02::1", false},
		{"100::1", false},
		{"1::1", false}, // outside 2000::/3
	} {
		ip, err := netip.ParseAddr(tc.ip)
		if err != nil {
			t.Fatalf("%s: %v", tc.ip, err)
		}
		if got := IsPublicAddr(ip); got != tc.public {
			t.Errorf("IsPublicAddr(%s) = %v, want %v", tc.ip, got, tc.public)
		}
	}
	if IsPublicAddr(netip.Addr{}) {
		t.Error("the zero Addr is public")
	}
}

func TestParseHostIP(t *testing.T) {
	for _, tc := range []struct {
		host string
		want string // "" if it is a name
	}{
		{"127.0.0.1", "127.0.0.1"},
		{"[::1]", "::1"},
		{"::1", "::1"},
		{"[::ffff:127.0.0.1]", "::ffff:127.0.0.1"},
		{"2130706433", "127.0.0.1"},   // decimal
		{"017700000001", "127.0.0.1"}, // octal
		{"0x7f000001", "127.0.0.1"},   // hex
		{"0177.0.0.1", "127.0.0.1"},   // octal part
		{"0x7f.0.0.1", "127.0.0.1"},   // hex part
		{"127.1", "127.0.0.1"},        // short form
		{"127.0.1", "127.0.0.1"},      // short form
		{"0", "0.0.0.0"},              // zero
		{"10.0x10.1", "10.16.0.1"},    // mixed
		{"0xa9.0xfe.0xa9.0xfe", "169.254.169.254"},
		{"3232235777", "192.168.1.1"},
		{"example.com", ""},
		{"localhost", ""},
		{"1.2.3.4.example", ""},
		{"256.0.0.1", ""}, // part too large
		{"1.2.3.256", ""},
		{"4294967296", ""}, // > 32 bits
		{"08.0.0.1", ""},   // invalid octal
		{"1.2.3.4.5", ""},
		{"", ""},
		{"1..2", ""},
	} {
		ip, ok := parseHostIP(tc.host)
		switch {
		case tc.want == "" && ok:
			t.Errorf("parseHostIP(%q) = %s, want a name", tc.host, ip)
		case tc.want != "" && (!ok || ip.String() != tc.want):
			t.Errorf("parseHostIP(%q) = %v %v, want %s", tc.host, ip, ok, tc.want)
		}
	}
}

type fakeResolver map[string][]string

func (f fakeResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	var out []netip.Addr
	for _, s := range f[host] {
		out = append(out, netip.MustParseAddr(s))
	}
	if out == nil {
		return nil, errors.New("no such host")
	}
	return out, nil
}

func TestCheckedAddrs(t *testing.T) {
	r := fakeResolver{
		"public.example":   {"93.184.215.14"},
		"private.example":  {"10.0.0.5"},
		"mixed.example":    {"93.184.215.14", "127.0.0.1"}, // one bad address refuses the host
		"metadata.example": {"169.254.169.254"},
		"v6.example":       {"2606:4700:4700::1111"},
		"ula.example":      {"fd00::1"},
		"mapped.example":   {"::ffff:192.168.0.1"},
		"localhost":        {"93.184.215.14"}, // even if DNS lies, localhost is refused
		"a.localhost":      {"93.184.215.14"},
	}
	for host, ok := range map[string]bool{
		"public.example": true, "v6.example": true, "8.8.8.8": true, "[2606:4700:4700::1111]": true,
		"private.example": false, "mixed.example": false, "metadata.example": false, "ula.example": false,
		"mapped.example": false, "localhost": false, "LOCALHOST.": false, "a.localhost": false,
		"127.0.0.1": false, "[::1]": false, "2130706433": false, "0x7f.1": false, "0177.0.0.1": false,
		"10.1.2.3": false, "169.254.169.254": false, "0.0.0.0": false, "[::]": false, "[::ffff:127.0.0.1]": false,
	} {
		_, err := checkedAddrs(context.Background(), r, host)
		if ok && err != nil {
			t.Errorf("%s refused: %v", host, err)
		}
		if !ok && !errors.Is(err, ErrNonPublicAddress) {
			t.Errorf("%s: err = %v, want ErrNonPublicAddress", host, err)
		}
	}
	if _, err := checkedAddrs(context.Background(), r, "unknown.example"); err == nil || errors.Is(err, ErrNonPublicAddress) {
		t.Errorf("unknown host: %v", err)
	}
}

// The dialer refuses private addresses even when handed one directly (a
// redirect, a resolver answer that changed): its Control hook checks the
// address actually dialed.
func TestGuardedDialerRefusesPrivate(t *testing.T) {
	d := newGuardedDialer(false)
	d.resolver = fakeResolver{"rebind.example": {"127.0.0.1"}}
	for _, addr := range []string{"127.0.0.1:80", "[::1]:80", "rebind.example:80", "localhost:80", "169.254.169.254:80"} {
		if _, err := d.DialContext(context.Background(), "tcp", addr); !errors.Is(err, ErrNonPublicAddress) {
			t.Errorf("dial %s: %v, want ErrNonPublicAddress", addr, err)
		}
	}
	if err := d.dialer.Control("tcp", "127.0.0.1:80", nil); !errors.Is(err, ErrNonPublicAddress) {
		t.Errorf("Control(127.0.0.1) = %v", err)
	}
	if err := d.dialer.Control("tcp", "[fd00::1]:443", nil); !errors.Is(err, ErrNonPublicAddress) {
		t.Errorf("Control(fd00::1) = %v", err)
	}
	if err := d.dialer.Control("tcp", "93.184.215.14:443", nil); err != nil {
		t.Errorf("Control(public) = %v", err)
	}
}

// media.url_preview_allow_private admits private networks (RFC 1918, CGNAT,
// unique local) and nothing else: loopback and link-local stay refused.
func TestGuardedDialerAllowPrivate(t *testing.T) {
	d := newGuardedDialer(true)
	for _, addr := range []string{"10.1.2.3:80", "172.17.0.1:80", "192.168.1.1:80", "100.100.1.1:80", "[fd00::2]:80", "93.184.215.14:443"} {
		if err := d.dialer.Control("tcp", addr, nil); err != nil {
			t.Errorf("Control(%s) = %v, want allowed", addr, err)
		}
	}
	for _, addr := range []string{"127.0.0.1:80", "[::1]:80", "169.254.169.254:80", "[fe80::1]:80", "0.0.0.0:80", "224.0.0.1:80"} {
		if err := d.dialer.Control("tcp", addr, nil); !errors.Is(err, ErrNonPublicAddress) {
			t.Errorf("Control(%s) = %v, want ErrNonPublicAddress", addr, err)
		}
	}
}
