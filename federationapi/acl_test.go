package federationapi

import "testing"

// ACLAllows applies m.room.server_acl as the spec says: ports ignored,
// case-insensitive globs, deny before allow, nothing allowed by default,
// IP literals refused unless allow_ip_literals.
func TestACLAllows(t *testing.T) {
	for _, c := range []struct {
		content string
		server  string
		want    bool
	}{
		{`{"allow":["*"]}`, "a.test", true},
		{`{"allow":["*"],"deny":["evil.*"]}`, "evil.test", false},
		{`{"allow":["*"],"deny":["evil.*"]}`, "EVIL.test:8448", false},
		{`{"allow":["*"],"deny":["evil.*"]}`, "good.test:8448", true},
		{`{"allow":["*.good.test"]}`, "a.good.test", true},
		{`{"allow":["*.good.test"]}`, "good.test", false},
		{`{"allow":["?.test"]}`, "a.test", true},
		{`{"allow":["?.test"]}`, "ab.test", false},
		{`{}`, "a.test", false},
		{`{"deny":["b.test"]}`, "a.test", false},
		{`{"allow":["*"],"allow_ip_literals":false}`, "1.2.3.4", false},
		{`{"allow":["*"],"allow_ip_literals":false}`, "[::1]:8448", false},
		{`{"allow":["*"],"allow_ip_literals":false}`, "1.2.3.4.example", true},
		{`{"allow":["*"]}`, "1.2.3.4", true},
		{`{"allow":["*"],"allow_ip_literals":"no"}`, "1.2.3.4", true},
		{`{"allow":"*"}`, "a.test", false},
		{`{"allow":[5,"a.test"]}`, "a.test", true},
	} {
		if got := ACLAllows([]byte(`{"content":`+c.content+`}`), c.server); got != c.want {
			t.Errorf("%s for %s: %v, want %v", c.content, c.server, got, c.want)
		}
	}
}
