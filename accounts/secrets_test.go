package accounts

import (
	"strings"
	"testing"
	"time"

	"github.com/myelin-chat/myelin/internal/config"
)

func TestPasswordHashing(t *testing.T) {
	h := HashPassword("correct horse")
	if !strings.HasPrefix(h, "$argon2id$v=19$") {
		t.Fatalf("hash %q is not PHC argon2id", h)
	}
	if h == HashPassword("correct horse") {
		t.Fatal("hashes of the same password must differ (random salt)")
	}
	cases := []struct {
		hash, password string
		want           bool
	}{
		{h, "correct horse", true},
		{h, "correct horse ", false},
		{h, "", false},
		{"", "correct horse", false},
		{"$argon2id$v=19$m=bad$x$y", "correct horse", false},
		{"$bcrypt$whatever", "correct horse", false},
		{strings.Replace(h, "$argon2id$", "$argon2i$", 1), "correct horse", false},
		{h[:len(h)-4] + "AAAA", "correct horse", false},
	}
	for i, c := range cases {
		if got := CheckPassword(c.hash, c.password); got != c.want {
			t.Errorf("case %d: CheckPassword = %v, want %v", i, got, c.want)
		}
	}
}

func TestTokenHashing(t *testing.T) {
	a, b := newToken("myl_"), newToken("myl_")
	if a == b || !strings.HasPrefix(a, "myl_") || len(a) < 40 {
		t.Fatalf("tokens %q %q", a, b)
	}
	if hashToken(a) != hashToken(a) || hashToken(a) == hashToken(b) {
		t.Fatal("token hash must be deterministic and distinct")
	}
	// SHA-256 of "abc", hex: the stored form is stable across releases.
	if got := hashToken("abc"); got != "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" {
		t.Fatalf("hashToken(abc) = %s", got)
	}
	if strings.Contains(hashToken(a), a) {
		t.Fatal("hash contains the token")
	}
	if d := newDeviceID(); len(d) != 10 || strings.ToUpper(d) != d {
		t.Fatalf("device ID %q", d)
	}
}

func TestSharedSecretMAC(t *testing.T) {
	// Computed independently with Python:
	// hmac.new(b"secret", b"nonce\x00alice\x00pw\x00admin", hashlib.sha1).hexdigest()
	const sharedSecretVector = "d7b3ebc9fec30d9bed19eb81e3902aa4ad214333"
	got := SharedSecretMAC("secret", "nonce", "alice", "pw", true, "")
	if got != sharedSecretVector {
		t.Fatalf("MAC = %s, want %s", got, sharedSecretVector)
	}
	if SharedSecretMAC("secret", "nonce", "alice", "pw", false, "") == got {
		t.Fatal("admin flag must change the MAC")
	}
	if SharedSecretMAC("secret", "nonce", "alice", "pw", true, "bot") == got {
		t.Fatal("user_type must change the MAC")
	}
	// Field separators matter: moving a byte between fields changes the MAC.
	if SharedSecretMAC("secret", "nonce", "alic", "epw", true, "") == got {
		t.Fatal("fields must be separated")
	}
}

func TestNoncesSingleUseAndExpire(t *testing.T) {
	now := time.Unix(1000, 0)
	s := New(Options{Config: config.Default()})
	s.now = func() time.Time { return now }
	n := s.NewRegistrationNonce()
	if !s.takeNonce(n) {
		t.Fatal("fresh nonce refused")
	}
	if s.takeNonce(n) {
		t.Fatal("nonce accepted twice")
	}
	n = s.NewRegistrationNonce()
	now = now.Add(nonceLifetime + time.Second)
	if s.takeNonce(n) {
		t.Fatal("expired nonce accepted")
	}
	if s.takeNonce("never-issued") {
		t.Fatal("unknown nonce accepted")
	}
}

func TestRegistrationTokenSyntax(t *testing.T) {
	for tok, want := range map[string]bool{
		"abc": true, "A-b_c.d~9": true, strings.Repeat("a", 64): true,
		"": false, strings.Repeat("a", 65): false, "with space": false, "slash/": false, "ünï": false,
	} {
		if got := ValidRegistrationTokenSyntax(tok); got != want {
			t.Errorf("ValidRegistrationTokenSyntax(%q) = %v", tok, got)
		}
	}
}

func TestConfigTokensConstantTimeMatch(t *testing.T) {
	cfg := config.Default()
	cfg.Register.Tokens = []string{"alpha", "beta"}
	s := New(Options{Config: cfg})
	for tok, want := range map[string]bool{"alpha": true, "beta": true, "alph": false, "alphaa": false, "": false} {
		if got := s.configToken(tok); got != want {
			t.Errorf("configToken(%q) = %v", tok, got)
		}
	}
}
