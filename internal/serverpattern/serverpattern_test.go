package serverpattern

import "testing"

func TestGlob(t *testing.T) {
	for _, c := range []struct {
		pattern, s string
		want       bool
	}{
		{"*", "", true},
		{"*", "a/b:c", true},
		{"@*:corp.example", "@alice:corp.example", true},
		{"@*:corp.example", "@alice:corp.example.evil", false},
		{"#eu-*:a.example", "#eu-sales/2026:a.example", true}, // '/' is an ordinary character
		{"a?c", "abc", true},
		{"a?c", "ac", false},
		{"[a]", "[a]", true}, // no character classes
		{"[a]", "a", false},
		{`a\*`, `a\xyz`, true}, // no escapes
		{"*a*b*c*", "xxaxxbxxcxx", true},
		{"*a*b*c*", "xxaxxcxxbxx", false},
		{"é*", "été", true},
	} {
		if got := Glob(c.pattern, c.s); got != c.want {
			t.Errorf("Glob(%q, %q) = %v, want %v", c.pattern, c.s, got, c.want)
		}
	}
}

func TestHostAndMatchesAny(t *testing.T) {
	for in, want := range map[string]string{
		"EVIL.example.com.:8448": "evil.example.com",
		"[2001:0db8:0:0::1]:443": "[2001:db8::1]",
		"[::ffff:192.0.2.1]":     "192.0.2.1",
		"192.0.2.1:8448":         "192.0.2.1",
	} {
		if got := Host(in); got != want {
			t.Errorf("Host(%q) = %q, want %q", in, got, want)
		}
	}
	if !MatchesAny([]string{"*.Example.COM."}, Host("a.example.com:1")) || MatchesAny([]string{"*.example.com"}, "example.com") {
		t.Error("MatchesAny does not match as m.room.server_acl does")
	}
}
