package federation

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	mfed "maunium.net/go/mautrix/federation"

	"github.com/myelin-chat/myelin/storage"
)

// memKeys is an in-memory KeyStore.
type memKeys map[string]storage.ServerKey

func (m memKeys) StoreServerKeys(_ context.Context, keys []storage.ServerKey) error {
	for _, k := range keys {
		m[k.ServerName+" "+k.KeyID] = k
	}
	return nil
}

func (m memKeys) GetServerKey(_ context.Context, server, keyID string) (*storage.ServerKey, error) {
	k, ok := m[server+" "+keyID]
	if !ok {
		return nil, storage.ErrNotFound
	}
	return &k, nil
}

func (m memKeys) StoreServerKeyResponse(ctx context.Context, _ storage.ServerKeyResponse, keys []storage.ServerKey) error {
	return m.StoreServerKeys(ctx, keys)
}

func (m memKeys) ServerKeys(context.Context, string) ([]storage.ServerKey, error) { return nil, nil }

func (m memKeys) ServerKeyResponses(context.Context, string) ([]storage.ServerKeyResponse, error) {
	return nil, nil
}

// BenchmarkAuthenticate: verifying one signed PUT with a 1 KiB body, the
// origin's key already stored (the common case for every inbound request).
func BenchmarkAuthenticate(b *testing.B) {
	origin := mfed.GenerateSigningKey()
	store := memKeys{}
	_ = store.StoreServerKeys(context.Background(), []storage.ServerKey{{ServerName: "a.test", KeyID: string(origin.ID),
		VerifyKey: string(origin.Pub), ValidUntilTS: time.Now().Add(time.Hour).UnixMilli()}})
	auth := &Authenticator{ServerName: "b.test", Policy: AllowAll{},
		Keys: &KeyFetcher{Own: &KeyRing{ServerName: "b.test", Key: mfed.GenerateSigningKey()}, Store: store, Policy: AllowAll{}}}
	body := `{"pdus":[],"edus":[{"edu_type":"m.typing","content":{"x":"` + strings.Repeat("a", 1000) + `"}}]}`
	sig, err := origin.SignJSON(signedRequest{Method: "PUT", URI: "/_matrix/federation/v1/send/1", Origin: "a.test",
		Destination: "b.test", Content: []byte(body)})
	if err != nil {
		b.Fatal(err)
	}
	header := mfed.XMatrixAuth{Origin: "a.test", Destination: "b.test", KeyID: origin.ID, Signature: sig}.String()
	b.ReportAllocs()
	for b.Loop() {
		r := httptest.NewRequest("PUT", "/_matrix/federation/v1/send/1", strings.NewReader(body))
		r.Header.Set("Authorization", header)
		if _, _, err := auth.Authenticate(r); err != nil {
			b.Fatal(err)
		}
	}
}
