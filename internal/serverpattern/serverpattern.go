// Package serverpattern matches server names and Matrix IDs against the
// patterns m.room.server_acl uses (* any run of characters, ? one,
// case-insensitive), the one matching rule of every server policy: the
// federation allow/deny lists, server ACLs and residency zones.
package serverpattern

import (
	"net/netip"
	"strings"
)

// Host is the form of a server name that policy decisions are made on, as
// m.room.server_acl matches servers: the host without its port, lowercased,
// without trailing dots. evil.example.com, EVIL.example.com. and
// evil.example.com:8448 are one server to a policy.
func Host(server string) string {
	host := server
	if strings.HasPrefix(host, "[") {
		if end := strings.IndexByte(host, ']'); end >= 0 {
			host = host[:end+1]
		}
	} else if i := strings.IndexByte(host, ':'); i >= 0 {
		host = host[:i]
	}
	return canonicalIPHost(strings.TrimRight(strings.ToLower(host), "."))
}

// canonicalIPHost writes an IP literal host one way: an IPv6 address has many
// spellings ([2001:db8::1], [2001:0db8:0:0::1]) and an IPv4-mapped one
// ([::ffff:192.0.2.1]) reaches the IPv4 host, so a deny of one spelling must
// hold for all. Other hosts are returned as they are.
func canonicalIPHost(host string) string {
	inner := strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	a, err := netip.ParseAddr(inner)
	if err != nil || a.Zone() != "" {
		return host
	}
	if a = a.Unmap(); a.Is4() {
		return a.String()
	}
	return "[" + a.String() + "]"
}

// MatchesAny reports whether host (a Host) matches one of the patterns as
// m.room.server_acl entries match: case-insensitively, * any run of
// characters, ? one.
func MatchesAny(patterns []string, host string) bool {
	for _, pat := range patterns {
		pat = canonicalIPHost(strings.TrimRight(strings.ToLower(strings.TrimSpace(pat)), "."))
		if Glob(pat, host) {
			return true
		}
	}
	return false
}

// Glob matches s against pattern with * (any run of characters) and ? (one
// character) as the only wildcards; every other character stands for
// itself. Callers lowercase both sides when the match is case-insensitive.
// It backtracks only to the last *, so it is linear in practice and never
// worse than len(pattern)*len(s).
func Glob(pattern, s string) bool {
	p, str := []rune(pattern), []rune(s)
	pi, si, star, mark := 0, 0, -1, 0
	for si < len(str) {
		switch {
		case pi < len(p) && (p[pi] == '?' || p[pi] == str[si]):
			pi++
			si++
		case pi < len(p) && p[pi] == '*':
			star, mark = pi, si
			pi++
		case star >= 0:
			pi = star + 1
			mark++
			si = mark
		default:
			return false
		}
	}
	for pi < len(p) && p[pi] == '*' {
		pi++
	}
	return pi == len(p)
}
