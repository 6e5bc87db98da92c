package accounts

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"strings"
)

// randomString returns n random bytes, URL-safe base64 encoded.
func randomString(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand never fails on supported platforms
	return base64.RawURLEncoding.EncodeToString(b)
}

// newToken returns an opaque token with a recognizable prefix (useful in secret scanners).
func newToken(prefix string) string { return prefix + randomString(32) }

// hashToken is how tokens are stored: SHA-256, hex. Tokens carry 256 bits of
// entropy, so a fast hash is enough; lookups by hash make timing attacks on
// the comparison moot.
func hashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// newDeviceID returns a device ID in the style clients expect (upper-case letters).
func newDeviceID() string {
	const letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
	b := make([]byte, 10)
	_, _ = rand.Read(b)
	var sb strings.Builder
	for _, c := range b {
		sb.WriteByte(letters[int(c)%len(letters)])
	}
	return sb.String()
}
