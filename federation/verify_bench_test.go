package federation

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"go.mau.fi/util/jsontime"
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
	skr.Signatures = map[string]map[id.KeyID]string{server: {}}
	for _, k := range keys {
		sig, err := k.SignJSON(skr)
		if err != nil {
			tb.Fatal(err)
		}
		skr.Signatures[server][k.ID] = sig
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
// self-signing keys costs the fetcher to check.
func BenchmarkCheckHostileResponse(b *testing.B) {
	resp := hostileKeyResponse(b, "evil.test", 4000)
	f := &KeyFetcher{}
	b.ResetTimer()
	for b.Loop() {
		_, _, _ = f.checkResponse("evil.test", resp)
	}
}
