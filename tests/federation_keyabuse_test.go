package tests

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.mau.fi/util/jsontime"
	mfed "maunium.net/go/mautrix/federation"

	"github.com/myelin-chat/myelin/internal/config"
	"github.com/myelin-chat/myelin/internal/testserver"
)

// rotatingKeyServer is a hostile "evil.test" whose every key response is
// genuinely self-signed but new: fresh old_verify_keys IDs, padding of pad
// bytes, valid for an hour from now().
func rotatingKeyServer(t *testing.T, oldKeys, pad int, now func() time.Time) (*httptest.Server, *mfed.SigningKey, *atomic.Int32) {
	key := mfed.GenerateSigningKey()
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := hits.Add(1)
		skr := map[string]any{
			"server_name":    "evil.test",
			"verify_keys":    map[string]any{string(key.ID): map[string]any{"key": string(key.Pub)}},
			"valid_until_ts": jsontime.UM(now().Add(time.Hour)),
			"pad":            strings.Repeat("p", pad),
		}
		old := map[string]any{}
		for i := range oldKeys {
			pub := make([]byte, 32)
			_, _ = rand.Read(pub)
			old[fmt.Sprintf("ed25519:r%d_%d", n, i)] = map[string]any{"key": base64.RawStdEncoding.EncodeToString(pub),
				"expired_ts": now().Add(-time.Hour).UnixMilli()}
		}
		skr["old_verify_keys"] = old
		sig, err := key.SignJSON(skr)
		if err != nil {
			t.Error(err)
			return
		}
		skr["signatures"] = map[string]any{"evil.test": map[string]any{string(key.ID): sig}}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(must(jsonMarshal(skr)))
	}))
	t.Cleanup(srv.Close)
	return srv, key, &hits
}

// dbBytes is the size of the server's database.
func dbBytes(t *testing.T, srv *testserver.Server, backend string) int64 {
	t.Helper()
	var n int64
	q := `SELECT pg_database_size(current_database())`
	if backend == "sqlite" {
		q = `SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()`
	}
	if err := srv.DB.QueryRow(ctxT(t), q).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// One notary query after another naming a hostile server whose responses
// always change: what is stored stays bounded (the latest responses, a
// bounded number of keys), and the notary serves only the latest responses.
func TestFederationKeyStorageBounded(t *testing.T) {
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) {
			var mu sync.Mutex
			clock := time.Now()
			now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
			evil, _, hits := rotatingKeyServer(t, 60, 50_000, now)
			a := testserver.Start(t, backend, testserver.Options{ServerName: "a.test", Configure: func(cfg *config.Config) {
				cfg.Federation.Hosts = map[string]string{"evil.test": strings.TrimPrefix(evil.URL, "http://")}
				cfg.Federation.InsecureHTTPHosts = []string{"evil.test"}
				cfg.Federation.RequestsPerSecond, cfg.Federation.Burst = 10000, 100000
				cfg.Federation.NotaryRequestsPerSecond, cfg.Federation.NotaryBurst = 10000, 100000
				cfg.Federation.KeyFetchesPerSecond, cfg.Federation.KeyFetchBurst = 10000, 100000
			}})
			a.Federation.Fetcher.Now = now
			before := dbBytes(t, a, backend)
			const queries = 20
			var served int
			for i := range queries {
				mu.Lock()
				clock = clock.Add(10 * time.Minute)
				mu.Unlock()
				// Validity wanted beyond what any response gives: every query refetches.
				r := doJSON(t, a, "POST", "/_matrix/key/v2/query", "", map[string]any{"server_keys": map[string]any{
					"evil.test": map[string]any{"ed25519:x": map[string]any{"minimum_valid_until_ts": now().Add(30 * 24 * time.Hour).UnixMilli()}}}})
				if r.Status != 200 {
					t.Fatalf("query %d: %d %s", i, r.Status, r.Raw)
				}
				served = len(r.Body["server_keys"].([]any))
			}
			grown := dbBytes(t, a, backend) - before
			t.Logf("%s: %d fetches, database grew by %d bytes, last answer has %d responses", backend, hits.Load(), grown, served)
			if hits.Load() < queries {
				t.Fatalf("only %d fetches for %d queries: the test does not exercise storage", hits.Load(), queries)
			}
			if grown > 4<<20 {
				t.Errorf("database grew by %d bytes for %d responses of ~55 KB", grown, queries)
			}
			if served > 2 {
				t.Errorf("the notary served %d responses of one server", served)
			}
		})
	}
}

func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }
