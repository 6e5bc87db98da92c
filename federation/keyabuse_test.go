package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tidwall/sjson"
	"go.mau.fi/util/jsontime"
	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/federation/signutil"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/internal/config"
	"github.com/myelin-chat/myelin/internal/ratelimit"
	"github.com/myelin-chat/myelin/storage"
)

// Hostile key servers on loopback, reached through the real outbound client
// (federation.hosts mapping, plain HTTP), with an in-memory store.

// memStore is a KeyStore in memory that counts stored responses.
type memStore struct {
	mu        sync.Mutex
	keys      memKeys
	responses map[string][]storage.ServerKeyResponse
}

func newMemStore() *memStore {
	return &memStore{keys: memKeys{}, responses: map[string][]storage.ServerKeyResponse{}}
}

func (m *memStore) StoreServerKeyResponse(ctx context.Context, resp storage.ServerKeyResponse, keys []storage.ServerKey) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.responses[resp.ServerName] = append(m.responses[resp.ServerName], resp)
	return m.keys.StoreServerKeys(ctx, keys)
}

func (m *memStore) GetServerKey(ctx context.Context, server, keyID string) (*storage.ServerKey, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.keys.GetServerKey(ctx, server, keyID)
}

func (m *memStore) ServerKeys(context.Context, string) ([]storage.ServerKey, error) { return nil, nil }

func (m *memStore) ServerKeyResponses(_ context.Context, server string) ([]storage.ServerKeyResponse, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.responses[server], nil
}

// testFetcher is a fetcher whose client sends the given names to srv.
func testFetcher(t *testing.T, srv *httptest.Server, names ...string) (*KeyFetcher, *memStore) {
	t.Helper()
	cfg := config.Default()
	cfg.ServerName = "me.test"
	cfg.Federation.Hosts = map[string]string{}
	for _, n := range names {
		cfg.Federation.Hosts[n] = strings.TrimPrefix(srv.URL, "http://")
		cfg.Federation.InsecureHTTPHosts = append(cfg.Federation.InsecureHTTPHosts, n)
	}
	own := mfed.GenerateSigningKey()
	c, err := NewClient(cfg, own, AllowAll{})
	if err != nil {
		t.Fatal(err)
	}
	store := newMemStore()
	return &KeyFetcher{Own: &KeyRing{ServerName: "me.test", Key: own}, Store: store, Client: c, Policy: AllowAll{}}, store
}

// signedResponse is server's key response signed by key, edited by edit
// before signing.
func signedResponse(t testing.TB, server string, key *mfed.SigningKey, validUntil time.Time, edit func(map[string]any)) []byte {
	skr := map[string]any{
		"server_name":    server,
		"verify_keys":    map[string]any{string(key.ID): map[string]any{"key": string(key.Pub)}},
		"valid_until_ts": jsontime.UM(validUntil),
	}
	if edit != nil {
		edit(skr)
	}
	sig, err := key.SignJSON(skr)
	if err != nil {
		t.Fatal(err)
	}
	sigs, _ := skr["signatures"].(map[string]any)
	if sigs == nil {
		sigs = map[string]any{server: map[string]any{}}
		skr["signatures"] = sigs
	}
	sigs[server].(map[string]any)[string(key.ID)] = sig
	raw, err := json.Marshal(skr)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// Responses over the key caps or with key IDs outside the grammar are
// refused whole, and nothing is stored.
func TestKeyResponseBounds(t *testing.T) {
	key := mfed.GenerateSigningKey()
	pub := string(mfed.GenerateSigningKey().Pub)
	oldKeys := func(n int, id func(int) string) func(map[string]any) {
		return func(skr map[string]any) {
			old := map[string]any{}
			for i := range n {
				old[id(i)] = map[string]any{"key": pub, "expired_ts": 1}
			}
			skr["old_verify_keys"] = old
		}
	}
	plain := func(i int) string { return fmt.Sprintf("ed25519:o%d", i) }
	cases := map[string]func(map[string]any){
		"65 old keys":         oldKeys(65, plain),
		"old key ID with '/'": oldKeys(1, func(int) string { return "ed25519:a/b" }),
		"old key ID too long": oldKeys(1, func(int) string { return "ed25519:" + strings.Repeat("a", 248) }),
		"old key ID empty":    oldKeys(1, func(int) string { return "ed25519:" }),
		"other algorithm":     oldKeys(1, func(int) string { return "curve25519:x" }),
	}
	var current func(map[string]any)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write(signedResponse(t, "evil.test", key, time.Now().Add(time.Hour), current))
	}))
	t.Cleanup(srv.Close)
	for name, edit := range cases {
		t.Run(name, func(t *testing.T) {
			f, store := testFetcher(t, srv, "evil.test")
			current = edit
			if err := f.fetchDirect(context.Background(), "evil.test"); !errors.Is(err, ErrBadKeyResponse) {
				t.Fatalf("accepted: %v", err)
			}
			if len(store.keys) != 0 || len(store.responses) != 0 {
				t.Fatalf("stored %d keys", len(store.keys))
			}
		})
	}
	// At the caps, the response is taken, once.
	f, store := testFetcher(t, srv, "evil.test")
	current = oldKeys(64, plain)
	if err := f.fetchDirect(context.Background(), "evil.test"); err != nil {
		t.Fatal(err)
	}
	if len(store.keys) != 65 || len(store.responses["evil.test"]) != 1 {
		t.Fatalf("stored %d keys, %d responses", len(store.keys), len(store.responses["evil.test"]))
	}
	// 17 verify keys, each genuinely self-signing.
	resp := hostileKeyResponse(t, "evil.test", 17)
	if _, _, err := f.checkResponse("evil.test", resp); !errors.Is(err, ErrBadKeyResponse) {
		t.Fatalf("17 verify keys: %v", err)
	}
}

// A response with thousands of self-signing keys is refused before any
// signature is checked: it costs nothing like the 12.9 s of CPU it did.
func TestManyVerifyKeysCheap(t *testing.T) {
	resp := hostileKeyResponse(t, "evil.test", 4000)
	f := &KeyFetcher{}
	start := time.Now()
	if _, _, err := f.checkResponse("evil.test", resp); !errors.Is(err, ErrBadKeyResponse) {
		t.Fatalf("4000 verify keys: %v", err)
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Fatalf("refusing 4000 keys took %s", d)
	}
}

// Every verify key must have signed: one bad signature among several fails
// the response (the single canonical form is checked against each key).
func TestSelfSignaturesEveryKey(t *testing.T) {
	resp := hostileKeyResponse(t, "evil.test", 3)
	if err := verifySelfSignatures(resp); err != nil {
		t.Fatalf("genuine: %v", err)
	}
	for keyID := range resp.VerifyKeys {
		resp.Signatures["evil.test"][keyID] = resp.Signatures["evil.test"]["ed25519:k0"]
	}
	if err := verifySelfSignatures(resp); !errors.Is(err, ErrBadKeyResponse) {
		t.Fatalf("a key's signature replaced by another's: %v", err)
	}
	// Unsigned content is outside the signature, as the spec says.
	resp = hostileKeyResponse(t, "evil.test", 2)
	resp.Raw = must(sjson.SetBytes(resp.Raw, "unsigned", map[string]any{"x": 1}))
	if err := verifySelfSignatures(resp); err != nil {
		t.Fatalf("with unsigned: %v", err)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// countingKeyServer answers key requests for any name with a response
// signed by a key per name (rotated by rotate), counting requests by name.
type countingKeyServer struct {
	*httptest.Server
	mu   sync.Mutex
	keys map[string]*mfed.SigningKey
	hits map[string]int
	fail atomic.Bool
}

func newCountingKeyServer(t *testing.T) *countingKeyServer {
	s := &countingKeyServer{keys: map[string]*mfed.SigningKey{}, hits: map[string]int{}}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.hits[r.Host]++
		key := s.key(r.Host)
		s.mu.Unlock()
		if s.fail.Load() {
			http.Error(w, "down", http.StatusBadGateway)
			return
		}
		_, _ = w.Write(signedResponse(t, r.Host, key, time.Now().Add(time.Hour), nil))
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *countingKeyServer) key(name string) *mfed.SigningKey {
	if s.keys[name] == nil {
		s.keys[name] = mfed.GenerateSigningKey()
	}
	return s.keys[name]
}

func (s *countingKeyServer) rotate(name string) *mfed.SigningKey {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys[name] = mfed.GenerateSigningKey()
	return s.keys[name]
}

func (s *countingKeyServer) count(name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hits[name]
}

// fakeClock is a settable clock.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// Forged key IDs (any X-Matrix header names any) cost one fetch per
// refetch interval, not one per request; the server is not put into
// backoff, and a real new key is found once the interval has passed.
func TestForgedKeyIDsRefetchInterval(t *testing.T) {
	ks := newCountingKeyServer(t)
	f, _ := testFetcher(t, ks.Server, "victim.test")
	clock := &fakeClock{now: time.Now()}
	f.Now = clock.Now
	ctx := context.Background()
	for i := range 50 {
		if _, err := f.Lookup(ctx, "victim.test", id.KeyID(fmt.Sprintf("ed25519:forged%d", i)), clock.Now()); !errors.Is(err, ErrKeyNotFound) {
			t.Fatalf("forged %d: %v", i, err)
		}
	}
	if n := ks.count("victim.test"); n != 1 {
		t.Fatalf("%d fetches for 50 forged key IDs", n)
	}
	newKey := ks.rotate("victim.test")
	clock.add(minRefetchInterval + time.Second)
	k, err := f.Lookup(ctx, "victim.test", newKey.ID, clock.Now())
	if err != nil || k.VerifyKey != string(newKey.Pub) {
		t.Fatalf("the real new key after the interval: %+v %v", k, err)
	}
	if n := ks.count("victim.test"); n != 2 {
		t.Fatalf("%d fetches", n)
	}
}

// Fetches caused by one requester (a remote IP) are limited; lookups the
// server makes for itself (no requester) are not.
func TestRequesterFetchBudget(t *testing.T) {
	ks := newCountingKeyServer(t)
	f, _ := testFetcher(t, ks.Server, "s1.test", "s2.test", "s3.test")
	f.RequesterFetches = ratelimit.New(0.001, 2)
	ctx := WithRequester(context.Background(), "192.0.2.1")
	for _, s := range []string{"s1.test", "s2.test"} {
		ks.mu.Lock()
		k := ks.key(s)
		ks.mu.Unlock()
		if _, err := f.Lookup(ctx, s, k.ID, time.Now()); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	if _, err := f.Lookup(ctx, "s3.test", "ed25519:x", time.Now()); !errors.Is(err, ErrFetchLimited) {
		t.Fatalf("third fetch: %v", err)
	}
	if ks.count("s3.test") != 0 {
		t.Fatal("fetched beyond the budget")
	}
	other := WithRequester(context.Background(), "192.0.2.2")
	ks.mu.Lock()
	k3 := ks.key("s3.test")
	ks.mu.Unlock()
	if _, err := f.Lookup(other, "s3.test", k3.ID, time.Now()); err != nil {
		t.Fatalf("another requester: %v", err)
	}
}

// Malformed server names are refused before any fetch or resolution.
func TestMalformedServerNamesNeverFetched(t *testing.T) {
	ks := newCountingKeyServer(t)
	f, _ := testFetcher(t, ks.Server, "ok.test")
	for _, name := range []string{"ok.test:99999", "ok.test.", "ok.test:0", "bad name", "a..test", "[::1", strings.Repeat("a", 300)} {
		if _, err := f.Lookup(context.Background(), name, "ed25519:x", time.Now()); !errors.Is(err, ErrBadServerName) {
			t.Errorf("%q: %v", name, err)
		}
	}
	// The client refuses them too, whoever calls it.
	if _, err := f.Client.(*mfed.Client).Version(context.Background(), "ok.test:99999"); !errors.Is(err, ErrBadServerName) {
		t.Errorf("client: %v", err)
	}
	ks.mu.Lock()
	defer ks.mu.Unlock()
	if len(ks.hits) != 0 {
		t.Fatalf("requests made: %v", ks.hits)
	}
}

// Backoff after failures is capped at maxFetchBackoff, and the records are
// evicted one by one (least recently used), not flushed wholesale: a flood
// of made-up names does not lift a real server's backoff.
func TestBackoffBoundedAndEvictedPerEntry(t *testing.T) {
	ks := newCountingKeyServer(t)
	ks.fail.Store(true)
	f, _ := testFetcher(t, ks.Server, "down.test")
	clock := &fakeClock{now: time.Now()}
	f.Now = clock.Now
	for range 20 {
		if _, err := f.Lookup(context.Background(), "down.test", "ed25519:x", clock.Now()); err == nil {
			t.Fatal("found a key of a failing server")
		}
		fl, _ := f.failures.get("down.test")
		if wait := fl.until.Sub(clock.Now()); wait > 10*time.Minute {
			t.Fatalf("backoff %s after %d failures", wait, fl.count)
		}
		clock.add(maxFetchBackoff)
	}
	f.init()
	defer slog.SetDefault(slog.Default())
	slog.SetDefault(slog.New(slog.DiscardHandler)) // 15,000 failures logged otherwise
	for i := range maxTrackedServers - 1 {
		f.recordOutcome(fmt.Sprintf("flood%d.test", i), false, errors.New("x"))
	}
	f.recordOutcome("down.test", false, errors.New("down"))
	for i := range maxTrackedServers / 2 {
		f.recordOutcome(fmt.Sprintf("more%d.test", i), false, errors.New("x"))
	}
	if err := f.backingOff("down.test"); !errors.Is(err, ErrFetchBackoff) {
		t.Fatalf("a flood of names lifted the backoff: %v", err)
	}
	if n := f.failures.len(); n > maxTrackedServers {
		t.Fatalf("%d backoff records", n)
	}
}

// blockingKeys is a key client that hangs until its context ends or 5 s pass.
type blockingKeys struct{}

func (blockingKeys) ServerKeys(ctx context.Context, _ string) (*mfed.ServerKeyResponse, error) {
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(5 * time.Second):
		return nil, errors.New("slow")
	}
}

func (blockingKeys) QueryKeys(context.Context, string, *mfed.ReqQueryKeys) (*mfed.QueryKeysResponse, error) {
	return nil, errors.New("no")
}

// A caller stops waiting for a shared fetch when its own context ends (the
// notary's deadline is its deadline, not the fetch's 60 s).
func TestRefreshHonoursCallerDeadline(t *testing.T) {
	f := &KeyFetcher{Own: &KeyRing{ServerName: "me.test"}, Store: newMemStore(), Client: blockingKeys{}, Policy: AllowAll{}}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := f.refresh(ctx, "slow.test", "ed25519:x", time.Now(), false)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("returned after %s", d)
	}
}

// Our notary co-signature covers the object without unsigned, so others
// verify it (mautrix's SignJSON signs unsigned too).
func TestCoSignExcludesUnsigned(t *testing.T) {
	origin := mfed.GenerateSigningKey()
	raw := signedResponse(t, "a.test", origin, time.Now().Add(time.Hour), nil)
	raw = must(sjson.SetBytes(raw, "unsigned", map[string]any{"note": "added in transit"}))
	notary := &KeyRing{ServerName: "n.test", Key: mfed.GenerateSigningKey()}
	co, err := notary.CoSign(raw)
	if err != nil {
		t.Fatal(err)
	}
	if err := signutil.VerifyJSON("n.test", notary.Key.ID, notary.Key.Pub, co); err != nil {
		t.Fatalf("notary signature: %v", err)
	}
	if err := signutil.VerifyJSON("a.test", origin.ID, origin.Pub, co); err != nil {
		t.Fatalf("origin signature: %v", err)
	}
}

// Response bodies are capped by endpoint: a small default, larger caps for
// state and joins; with and without Content-Length.
func TestResponseLimits(t *testing.T) {
	big := `{"server":{"name":"` + strings.Repeat("x", 2<<20) + `"}}`
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("chunked") != "" {
			w.(http.Flusher).Flush() // no Content-Length
		}
		_, _ = io.WriteString(w, big)
	}))
	t.Cleanup(srv.Close)
	f, _ := testFetcher(t, srv, "big.test")
	c := f.Client.(*mfed.Client)
	ctx := context.Background()
	for _, q := range []string{"", "1"} {
		_, _, err := c.MakeFullRequest(ctx, mfed.RequestParams{ServerName: "big.test", Method: "GET",
			Path: mfed.URLPath{"v1", "version"}, Query: map[string][]string{"chunked": {q}}, ResponseJSON: &struct{}{}})
		if !errors.Is(err, ErrResponseTooLarge) {
			t.Errorf("2 MiB version answer (chunked=%q): %v", q, err)
		}
		body, _, err := c.MakeFullRequest(ctx, mfed.RequestParams{ServerName: "big.test", Method: "GET",
			Path: mfed.URLPath{"v1", "state", "!r:big.test"}, Query: map[string][]string{"chunked": {q}}})
		if err != nil || len(body) != len(big) {
			t.Errorf("2 MiB state answer (chunked=%q): %d bytes, %v", q, len(body), err)
		}
		if _, _, err := c.MakeFullRequest(WithResponseLimit(ctx, 1<<20), mfed.RequestParams{ServerName: "big.test",
			Method: "GET", Path: mfed.URLPath{"v1", "state", "!r:big.test"}, Query: map[string][]string{"chunked": {q}}}); !errors.Is(err, ErrResponseTooLarge) {
			t.Errorf("WithResponseLimit (chunked=%q): %v", q, err)
		}
	}
	for path, want := range map[string]int64{
		"/_matrix/key/v2/server":                         ResponseLimitServerKeys,
		"/_matrix/key/v2/query":                          ResponseLimitKeyQuery,
		"/_matrix/federation/v1/version":                 ResponseLimitDefault,
		"/_matrix/federation/v2/send_join/!r/$e":         ResponseLimitSendJoin,
		"/_matrix/federation/v1/state/!r":                ResponseLimitState,
		"/_matrix/federation/v1/event_auth/!r/$e":        ResponseLimitState,
		"/_matrix/federation/v1/state_ids/!r":            ResponseLimitStateIDs,
		"/_matrix/federation/v1/backfill/!r":             ResponseLimitBackfill,
		"/_matrix/federation/v1/get_missing_events/!r":   ResponseLimitBackfill,
		"/_matrix/federation/v1/query/profile":           ResponseLimitDefault,
		"/_matrix/federation/v1/media/download/abc":      ResponseLimitDefault,
		"/_matrix/federation/v1/send_joinx/!r/$e":        ResponseLimitDefault,
		"/_matrix/federation/unstable/org.x/send_join/a": ResponseLimitDefault,
	} {
		req := httptest.NewRequest("GET", path, nil)
		if got := responseLimit(req); got != want {
			t.Errorf("%s: %d, want %d", path, got, want)
		}
	}
}

// TestKeyIDLength: key versions may be as long as an opaque identifier
// allows (the whole key ID within 255 characters); Complement's test servers
// use "complement_" and 64 hex digits, which a 64-character cap refused.
func TestKeyIDLength(t *testing.T) {
	for keyID, want := range map[string]bool{
		"ed25519:complement_" + strings.Repeat("d8", 32): true,
		"ed25519:" + strings.Repeat("a", 247):            true,
		"ed25519:" + strings.Repeat("a", 248):            false,
		"ed25519:a_1":                                    true,
	} {
		if got := validKeyID(id.KeyID(keyID)); got != want {
			t.Errorf("validKeyID(%d characters) = %v, want %v", len(keyID), got, want)
		}
	}
}
