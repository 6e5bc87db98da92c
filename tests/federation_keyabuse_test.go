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

	"github.com/myelin-chat/myelin/homeserver/testserver"
	"github.com/myelin-chat/myelin/internal/config"
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

// manyNamesKeyServer answers key requests for any server name (its Host)
// with a genuine response signed by a key of that name, counting requests.
func manyNamesKeyServer(t *testing.T) (*httptest.Server, *atomic.Int32) {
	var mu sync.Mutex
	keys := map[string]*mfed.SigningKey{}
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		mu.Lock()
		if keys[r.Host] == nil {
			keys[r.Host] = mfed.GenerateSigningKey()
		}
		key := keys[r.Host]
		mu.Unlock()
		skr := map[string]any{"server_name": r.Host, "valid_until_ts": time.Now().Add(time.Hour).UnixMilli(),
			"verify_keys": map[string]any{string(key.ID): map[string]any{"key": string(key.Pub)}}}
		sig := must(key.SignJSON(skr))
		skr["signatures"] = map[string]any{r.Host: map[string]any{string(key.ID): sig}}
		_, _ = w.Write(must(json.Marshal(skr)))
	}))
	t.Cleanup(srv.Close)
	return srv, &hits
}

// An unauthenticated notary query naming many servers fetches only a few of
// them (the rest are answered from the store), key IDs per server are
// bounded, and notary queries are rate-limited per IP.
func TestFederationNotaryFanOutBounded(t *testing.T) {
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) {
			keySrv, hits := manyNamesKeyServer(t)
			names := map[string]any{}
			a := testserver.Start(t, backend, testserver.Options{ServerName: "a.test", Configure: func(cfg *config.Config) {
				cfg.Federation.Hosts = map[string]string{}
				for i := range 30 {
					name := fmt.Sprintf("s%d.test", i)
					names[name] = map[string]any{}
					cfg.Federation.Hosts[name] = strings.TrimPrefix(keySrv.URL, "http://")
					cfg.Federation.InsecureHTTPHosts = append(cfg.Federation.InsecureHTTPHosts, name)
				}
				cfg.Federation.RequestsPerSecond, cfg.Federation.Burst = 10000, 100000
				cfg.Federation.KeyFetchesPerSecond, cfg.Federation.KeyFetchBurst = 10000, 100000
				cfg.Federation.NotaryRequestsPerSecond, cfg.Federation.NotaryBurst = 0.001, 3
			}})
			query := func() rawResp {
				return doJSON(t, a, "POST", "/_matrix/key/v2/query", "", map[string]any{"server_keys": names})
			}
			r := query()
			if r.Status != 200 {
				t.Fatalf("query: %d %s", r.Status, r.Raw)
			}
			if n := hits.Load(); n > 10 {
				t.Fatalf("one query caused %d fetches", n)
			}
			if got := len(r.Body["server_keys"].([]any)); got != int(hits.Load()) {
				t.Fatalf("%d responses for %d fetched servers", got, hits.Load())
			}
			// The next query fetches a few more and answers the known ones from the store.
			r = query()
			if got := len(r.Body["server_keys"].([]any)); r.Status != 200 || got != int(hits.Load()) || got <= 10 {
				t.Fatalf("second query: %d, %d responses, %d fetches", r.Status, got, hits.Load())
			}
			// Too many key IDs for one server.
			ids := map[string]any{}
			for i := range 33 {
				ids[fmt.Sprintf("ed25519:k%d", i)] = map[string]any{}
			}
			r = doJSON(t, a, "POST", "/_matrix/key/v2/query", "", map[string]any{"server_keys": map[string]any{"s1.test": ids}})
			if r.Status != 400 || r.errcode() != "M_INVALID_PARAM" {
				t.Fatalf("33 key IDs: %d %s", r.Status, r.Raw)
			}
			// The burst of 3 notary queries is spent.
			r = do(t, a, "GET", "/_matrix/key/v2/query/s1.test", "", nil)
			if r.Status != 429 || r.errcode() != "M_LIMIT_EXCEEDED" {
				t.Fatalf("fourth notary query: %d %s", r.Status, r.Raw)
			}
			// Other key endpoints are not held back by the notary limit.
			if r := do(t, a, "GET", "/_matrix/key/v2/server", "", nil); r.Status != 200 {
				t.Fatalf("own keys: %d", r.Status)
			}
		})
	}
}
