package federation

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"go.mau.fi/util/jsontime"
	"maunium.net/go/mautrix/crypto/canonicaljson"
	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"
)

// hostileKeyResponse is a genuinely self-signed key response of server with
// n verify keys (each signing it), as a hostile server could serve.
func hostileKeyResponse(tb testing.TB, server string, n int) *mfed.ServerKeyResponse {
	tb.Helper()
	keys := make([]*mfed.SigningKey, n)
	skr := &mfed.ServerKeyResponse{ServerName: server, VerifyKeys: map[id.KeyID]mfed.ServerVerifyKey{},
		ValidUntilTS: jsontime.UM(time.Now().Add(time.Hour))}
	for i := range keys {
		keys[i] = mfed.GenerateSigningKey()
		keys[i].ID = id.NewKeyID(id.KeyAlgorithmEd25519, fmt.Sprintf("k%d", i))
		skr.VerifyKeys[keys[i].ID] = mfed.ServerVerifyKey{Key: keys[i].Pub}
	}
	msg, err := canonicaljson.Marshal(skr) // no signatures yet: the signed form, once
	if err != nil {
		tb.Fatal(err)
	}
	skr.Signatures = map[string]map[id.KeyID]string{server: {}}
	for _, k := range keys {
		skr.Signatures[server][k.ID] = base64.RawStdEncoding.EncodeToString(k.SignCanonicalJSON(msg))
	}
	raw, err := json.Marshal(skr)
	if err != nil {
		tb.Fatal(err)
	}
	var out mfed.ServerKeyResponse
	if err := json.Unmarshal(raw, &out); err != nil {
		tb.Fatal(err)
	}
	return &out
}

// BenchmarkCheckHostileResponse: what one hostile response with 4,000
// self-signing keys costs the fetcher to check (refused by the key cap).
func BenchmarkCheckHostileResponse(b *testing.B) {
	resp := hostileKeyResponse(b, "evil.test", 4000)
	f := &KeyFetcher{}
	b.ResetTimer()
	for b.Loop() {
		if _, _, err := f.checkResponse("evil.test", resp); err == nil {
			b.Fatal("accepted")
		}
	}
}

// BenchmarkVerify4000Keys compares checking 4,000 self-signatures without
// the cap: mautrix's VerifySelfSignature (canonicalizes the body per key)
// against verifySelfSignatures (once).
func BenchmarkVerify4000Keys(b *testing.B) {
	resp := hostileKeyResponse(b, "evil.test", 4000)
	b.Run("mautrix", func(b *testing.B) {
		for b.Loop() {
			if err := resp.VerifySelfSignature(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("once", func(b *testing.B) {
		for b.Loop() {
			if err := verifySelfSignatures(resp); err != nil {
				b.Fatal(err)
			}
		}
	})
}
