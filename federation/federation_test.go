package federation

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/federation/signutil"
)

func TestParseXMatrix(t *testing.T) {
	ok := []struct {
		header string
		want   mfed.XMatrixAuth
	}{
		{`X-Matrix origin="a.test",destination="b.test",key="ed25519:k1",sig="c2ln"`,
			mfed.XMatrixAuth{Origin: "a.test", Destination: "b.test", KeyID: "ed25519:k1", Signature: "c2ln"}},
		// Scheme and names case-insensitive, several spaces, whitespace around commas, any order.
		{"x-matrix   SIG=\"c2ln\" ,\tKey=\"ed25519:k1\" , Origin=\"a.test\"",
			mfed.XMatrixAuth{Origin: "a.test", KeyID: "ed25519:k1", Signature: "c2ln"}},
		// Bare values, colons allowed for older servers; unknown parameters ignored.
		{`X-Matrix origin=a.test:8448,key=ed25519:k1,sig=c2ln,extra="x,y"`,
			mfed.XMatrixAuth{Origin: "a.test:8448", KeyID: "ed25519:k1", Signature: "c2ln"}},
		// Backslash escapes in quoted values.
		{`X-Matrix origin="a\.test",key="ed25519:k\"1",sig="c2ln"`,
			mfed.XMatrixAuth{Origin: "a.test", KeyID: `ed25519:k"1`, Signature: "c2ln"}},
	}
	for _, tc := range ok {
		got, err := ParseXMatrix(tc.header)
		if err != nil || got != tc.want {
			t.Errorf("%s: got %+v, %v", tc.header, got, err)
		}
	}
	for _, bad := range []string{
		"",
		"Bearer abc",
		"X-Matrix",
		`X-Matrix origin="a.test",key="ed25519:k1"`,               // no sig
		`X-Matrix origin="a.test,key="ed25519:k1",sig="c2ln"`,     // unterminated quote
		`X-Matrix origin="a.test" key="ed25519:k1",sig="c2ln"`,    // missing comma
		`X-Matrix =x,origin="a.test",key="ed25519:k1",sig="c2ln"`, // empty name
		`X-Matrixorigin="a.test"`,
	} {
		if got, err := ParseXMatrix(bad); err == nil {
			t.Errorf("%q parsed as %+v", bad, got)
		}
	}
}

func TestServerListPolicy(t *testing.T) {
	ctx := context.Background()
	p := ServerListPolicy{Allowed: []string{"*.partner.example", "solo.example", "IP.Example."}, Denied: []string{"bad.partner.example", "[x]"}}
	for server, want := range map[string]bool{
		"a.partner.example":   true,
		"A.Partner.Example":   true,
		"partner.example":     false, // *. needs a label
		"bad.partner.example": false, // denied wins
		"solo.example":        true,
		"solo.example:8448":   true, // hosts are matched without port, as server ACLs do
		"ip.example":          true, // patterns are normalized too
		"other.example":       false,
		"[x]":                 false,
	} {
		if got := p.AllowServer(ctx, server, PurposeInbound); got != want {
			t.Errorf("%s: %v, want %v", server, got, want)
		}
	}
	if !(ServerListPolicy{Denied: []string{"evil.*"}}).AllowServer(ctx, "good.example", PurposeKeyFetch) {
		t.Error("an empty allow list must allow all but the denied")
	}
	reg := prometheus.NewRegistry()
	c := NewCountingPolicy(ServerListPolicy{Denied: []string{"*"}}, reg)
	c.AllowServer(ctx, "x.example", PurposeProfile)
	c.AllowServer(ctx, "y.example", PurposeProfile)
	if got := testutil.ToFloat64(c.refusals.WithLabelValues("profile")); got != 2 {
		t.Fatalf("refusals counted: %v", got)
	}
}

// A deny of evil.example.com holds whatever spelling of the name is used:
// case, trailing dot, port. Malformed names are refused outright.
func TestPolicyNormalizesNames(t *testing.T) {
	ctx := context.Background()
	deny := NewCountingPolicy(ServerListPolicy{Denied: []string{"evil.example.com"}}, nil)
	for _, name := range []string{"evil.example.com", "EVIL.Example.Com", "evil.example.com.", "evil.example.com:8448",
		"Evil.Example.Com.:443", "evil.example.com:99999", "bad name", ""} {
		if deny.AllowServer(ctx, name, PurposeKeyFetch) {
			t.Errorf("%q passed a deny of evil.example.com", name)
		}
	}
	allow := NewCountingPolicy(ServerListPolicy{Allowed: []string{"good.example", "[::1]"}}, nil)
	for name, want := range map[string]bool{"good.example": true, "GOOD.example:8448": true, "[::1]:8448": true,
		"good.example.evil.test": false, "good.example:0": false} {
		if got := allow.AllowServer(ctx, name, PurposeInbound); got != want {
			t.Errorf("allow list, %q: %v, want %v", name, got, want)
		}
	}
	for name, want := range map[string]string{"A.Example.:8448": "a.example", "[::1]:8448": "[::1]", "x.test": "x.test"} {
		if got := PolicyHost(name); got != want {
			t.Errorf("PolicyHost(%q) = %q, want %q", name, got, want)
		}
	}
}

// A deny of an IP literal holds for every spelling of the address: IPv6
// zero compression and leading zeros, and IPv4-mapped IPv6 (which reaches
// the IPv4 host). Patterns are normalized the same way.
func TestPolicyIPLiteralSpellings(t *testing.T) {
	ctx := context.Background()
	deny := NewCountingPolicy(ServerListPolicy{Denied: []string{"[2001:db8::1]", "192.0.2.1", "[0:0::0:2]"}}, nil)
	for _, name := range []string{"[2001:db8::1]", "[2001:DB8::1]:8448", "[2001:db8:0:0:0:0:0:1]", "[2001:0db8::0001]",
		"192.0.2.1:443", "[::ffff:192.0.2.1]", "[::ffff:c000:201]:8448", "[::2]", "[0:0:0:0:0:0:0:2]"} {
		if deny.AllowServer(ctx, name, PurposeKeyFetch) {
			t.Errorf("%q passed the deny list", name)
		}
	}
	if !deny.AllowServer(ctx, "[2001:db8::2]", PurposeKeyFetch) || !deny.AllowServer(ctx, "192.0.2.2", PurposeKeyFetch) {
		t.Error("other addresses must pass")
	}
	allow := ServerListPolicy{Allowed: []string{"[2001:0DB8::1]"}}
	if !allow.AllowServer(ctx, "[2001:db8:0::1]:8448", PurposeInbound) {
		t.Error("an allow list entry must match the address in another spelling")
	}
}

func TestOldKeysAndRotation(t *testing.T) {
	dir := t.TempDir()
	first, err := LoadOrGenerateSigningKey(filepath.Join(dir, SigningKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	at := time.UnixMilli(1_700_000_000_000)
	second, err := RotateSigningKey(dir, at)
	if err != nil {
		t.Fatal(err)
	}
	if second.ID == first.ID {
		t.Fatal("rotation kept the key ID")
	}
	reloaded, err := LoadOrGenerateSigningKey(filepath.Join(dir, SigningKeyFile))
	if err != nil || reloaded.Pub != second.Pub {
		t.Fatalf("new key not installed: %v", err)
	}
	old, err := LoadOldKeys(filepath.Join(dir, OldSigningKeysDir))
	if err != nil || len(old) != 1 || old[0].ID != first.ID || old[0].Key != first.Pub || !old[0].ExpiredTS.Equal(at) {
		t.Fatalf("old keys: %+v %v", old, err)
	}
	// The published response lists both, signed by the new key only.
	ring := &KeyRing{ServerName: "a.test", Key: second, Old: old, Validity: time.Hour}
	raw, err := ring.Response(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var skr mfed.ServerKeyResponse
	if err := json.Unmarshal(raw, &skr); err != nil || skr.VerifySelfSignature() != nil {
		t.Fatalf("response: %s %v", raw, err)
	}
	if skr.OldVerifyKeys[first.ID].Key != first.Pub || len(skr.VerifyKeys) != 1 {
		t.Fatalf("response: %s", raw)
	}
	// Old keys still verify what they signed, until their expiry.
	if k, until, ok := ring.Lookup(first.ID, time.Now()); !ok || k != first.Pub || !until.Equal(at) {
		t.Fatalf("lookup of the old key: %v %v %v", k, until, ok)
	}
	// Co-signing keeps the origin's signature and adds ours.
	notary := &KeyRing{ServerName: "n.test", Key: mfed.GenerateSigningKey()}
	co, err := notary.CoSign(raw)
	if err != nil {
		t.Fatal(err)
	}
	if signutil.VerifyJSON("a.test", second.ID, second.Pub, co) != nil || signutil.VerifyJSON("n.test", notary.Key.ID, notary.Key.Pub, co) != nil {
		t.Fatalf("co-signed: %s", co)
	}

	// Bad lines are errors naming the file and line.
	bad := filepath.Join(t.TempDir(), "old")
	for _, line := range []string{
		"ed25519 v1 notbase64! 1",
		"ed25519 v1 " + string(first.Pub) + " yesterday",
		"curve25519 v1 " + string(first.Pub) + " 1",
		"ed25519 v.1 " + string(first.Pub) + " 1",
		"ed25519 v1 " + string(first.Pub),
	} {
		os.MkdirAll(bad, 0o700)
		if err := os.WriteFile(filepath.Join(bad, "k"), []byte("# c\n\n"+line+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadOldKeys(bad); err == nil || !strings.Contains(err.Error(), "k:3") {
			t.Errorf("%q: %v", line, err)
		}
	}
	if keys, err := LoadOldKeys(filepath.Join(dir, "missing")); err != nil || keys != nil {
		t.Fatalf("missing dir: %v %v", keys, err)
	}
}
