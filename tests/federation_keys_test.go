package tests

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tidwall/sjson"
	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/federation/signutil"

	"github.com/myelin-chat/myelin/federation"
	"github.com/myelin-chat/myelin/homeserver/testserver"
	"github.com/myelin-chat/myelin/internal/config"
	"github.com/myelin-chat/myelin/storage"
)

// GET /_matrix/key/v2/server: our key and the retired ones, self-signed,
// valid for the configured time.
func TestFederationServerKeys(t *testing.T) {
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) {
			oldPub := mfed.GenerateSigningKey()
			expired := time.Now().Add(-48 * time.Hour).UnixMilli()
			n := newFedNet(t, "a.test")
			a := n.start(t, backend, "a.test", func(cfg *config.Config) {
				cfg.Federation.KeyValidity = config.Duration{Duration: 2 * time.Hour}
				dir := filepath.Join(cfg.DataDir, federation.OldSigningKeysDir)
				must(0, os.MkdirAll(dir, 0o700))
				_, version := oldPub.ID.Parse()
				line := "# retired\ned25519 " + version + " " + string(oldPub.Pub) + " " + itoa(expired) + "\n"
				must(0, os.WriteFile(filepath.Join(dir, "old.key"), []byte(line), 0o600))
			})
			resp := do(t, a, "GET", "/_matrix/key/v2/server", "", nil)
			if resp.Status != http.StatusOK {
				t.Fatalf("status %d: %s", resp.Status, resp.Raw)
			}
			var skr mfed.ServerKeyResponse
			must(0, json.Unmarshal([]byte(resp.Raw), &skr))
			if skr.ServerName != "a.test" || skr.VerifyKeys[a.SigningKey.ID].Key != a.SigningKey.Pub {
				t.Fatalf("wrong keys: %s", resp.Raw)
			}
			if err := skr.VerifySelfSignature(); err != nil {
				t.Fatalf("self-signature: %v", err)
			}
			if d := time.Until(skr.ValidUntilTS.Time); d < 110*time.Minute || d > 2*time.Hour {
				t.Fatalf("valid_until_ts %s ahead, want 2h", d)
			}
			old := skr.OldVerifyKeys[oldPub.ID]
			if old.Key != oldPub.Pub || old.ExpiredTS.UnixMilli() != expired {
				t.Fatalf("old_verify_keys: %s", resp.Raw)
			}
			// The unauthenticated version endpoint.
			v := do(t, a, "GET", "/_matrix/federation/v1/version", "", nil)
			if v.Status != 200 || !strings.Contains(v.Raw, `"name":"Myelin"`) {
				t.Fatalf("version: %d %s", v.Status, v.Raw)
			}
			// Unknown endpoints say so.
			for _, p := range []struct{ method, path string }{
				{"GET", "/_matrix/federation/v1/no_such_endpoint"},
				{"GET", "/_matrix/key/v2/nothing"},
			} {
				r := do(t, a, p.method, p.path, "", []byte("{}"))
				if r.Status != 404 || r.errcode() != "M_UNRECOGNIZED" {
					t.Errorf("%s %s: %d %s", p.method, p.path, r.Status, r.Raw)
				}
			}
			// Transactions, devices and media are served, to authenticated servers only.
			for _, p := range []struct{ method, path string }{
				{"PUT", "/_matrix/federation/v1/send/txn1"},
				{"GET", "/_matrix/federation/v1/user/devices/@u:b.test"},
				{"POST", "/_matrix/federation/v1/user/keys/query"},
				{"POST", "/_matrix/federation/v1/user/keys/claim"},
				{"GET", "/_matrix/federation/v1/media/download/abc"},
			} {
				if r := do(t, a, p.method, p.path, "", []byte("{}")); r.Status != 401 || r.errcode() != "M_UNAUTHORIZED" {
					t.Errorf("unsigned %s %s: %d %s", p.method, p.path, r.Status, r.Raw)
				}
			}
		})
	}
}

func itoa(n int64) string { return strings.TrimSpace(string(must(json.Marshal(n)))) }

// A zero-config localhost server does not federate at all.
func TestFederationOffInZeroConfig(t *testing.T) {
	srv := testserver.Start(t, "sqlite") // server name localhost, zero-config
	for _, path := range []string{"/_matrix/key/v2/server", "/_matrix/federation/v1/version"} {
		r := do(t, srv, "GET", path, "", nil)
		if r.Status != 404 || r.errcode() != "M_UNRECOGNIZED" {
			t.Errorf("%s: %d %s", path, r.Status, r.Raw)
		}
	}
	if _, _, err := srv.Federation.Fetcher.GetKey("b.test", "ed25519:x", time.Now()); !errors.Is(err, federation.ErrServerDenied) {
		t.Fatalf("fetch with federation off: %v", err)
	}
}

// A fetches B's key directly, stores it, and answers from the store after.
func TestFederationFetchKeyDirect(t *testing.T) {
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) {
			n := newFedNet(t, "a.test", "b.test")
			a := n.start(t, backend, "a.test")
			b := n.start(t, backend, "b.test")
			key, until, err := a.Federation.Fetcher.GetKey("b.test", b.SigningKey.ID, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			if key != b.SigningKey.Pub || time.Until(until) < 23*time.Hour {
				t.Fatalf("got %s until %s", key, until)
			}
			stored, err := a.DB.GetServerKey(ctxT(t), "b.test", string(b.SigningKey.ID))
			if err != nil || stored.VerifyKey != string(b.SigningKey.Pub) {
				t.Fatalf("stored: %+v %v", stored, err)
			}
			// B goes away: the stored key still answers.
			n.relays["b.test"].point("")
			if key, _, err := a.Federation.Fetcher.GetKey("b.test", b.SigningKey.ID, time.Now()); err != nil || key != b.SigningKey.Pub {
				t.Fatalf("from store: %s %v", key, err)
			}
			// An unknown key ID of an unreachable server is an error, not a guess.
			if _, _, err := a.Federation.Fetcher.GetKey("b.test", "ed25519:nope", time.Now()); err == nil {
				t.Fatal("unknown key found")
			}
			// Our own keys need no fetch.
			if key, _, err := a.Federation.Fetcher.GetKey("a.test", a.SigningKey.ID, time.Now()); err != nil || key != a.SigningKey.Pub {
				t.Fatalf("own key: %s %v", key, err)
			}
		})
	}
}

// A request naming a key ID the origin does not have (any X-Matrix header
// can) is answered "not found" without putting the origin into backoff:
// otherwise a forged header could cut a real partner off.
func TestFederationUnknownKeyIDDoesNotBackOff(t *testing.T) {
	n := newFedNet(t, "a.test", "b.test", "c.test")
	b := n.start(t, "sqlite", "b.test")
	n.start(t, "sqlite", "c.test")
	// With a notary, a key ID B lacks is also asked of C, which lacks it too.
	a := n.start(t, "sqlite", "a.test", func(cfg *config.Config) {
		cfg.Federation.TrustedKeyServers = []config.TrustedKeyServer{{ServerName: "c.test"}}
	})
	if _, _, err := a.Federation.Fetcher.GetKey("b.test", "ed25519:forged", time.Now()); err == nil {
		t.Fatal("a forged key ID was found")
	}
	// B answered: it is not in backoff, so the next lookup (here another
	// unknown ID; in real life a key refresh) still asks it.
	if _, _, err := a.Federation.Fetcher.GetKey("b.test", "ed25519:forged2", time.Now()); err == nil || errors.Is(err, federation.ErrFetchBackoff) {
		t.Fatalf("after a forged key ID, B is in backoff: %v", err)
	}
	if key, _, err := a.Federation.Fetcher.GetKey("b.test", b.SigningKey.ID, time.Now()); err != nil || key != b.SigningKey.Pub {
		t.Fatalf("real key after a forged key ID: %s %v", key, err)
	}
}

// B is unreachable from A; A asks notary C, which fetches B's keys, and
// checks both B's self-signature and C's signature. C's notary endpoints
// answer directly too.
func TestFederationFetchKeyViaNotary(t *testing.T) {
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) {
			n := newFedNet(t, "a.test", "b.test", "c.test", "down.test")
			b := n.start(t, backend, "b.test")
			c := n.start(t, backend, "c.test")
			a := testserver.Start(t, backend, testserver.Options{ServerName: "a.test", Configure: func(cfg *config.Config) {
				n.configure(cfg)
				cfg.Federation.Hosts["b.test"] = deadAddr(t) // A cannot reach B itself
				cfg.Federation.TrustedKeyServers = []config.TrustedKeyServer{{ServerName: "c.test"}}
			}})
			n.relays["a.test"].point(a.Config.Listen.HTTP)

			key, _, err := a.Federation.Fetcher.GetKey("b.test", b.SigningKey.ID, time.Now())
			if err != nil || key != b.SigningKey.Pub {
				t.Fatalf("via notary: %s %v", key, err)
			}
			stored := must(a.DB.ServerKeyResponses(ctxT(t), "b.test"))
			if len(stored) != 1 {
				t.Fatalf("%d responses stored", len(stored))
			}
			if err := signutil.VerifyJSON("c.test", c.SigningKey.ID, c.SigningKey.Pub, json.RawMessage(stored[0].JSON)); err != nil {
				t.Fatalf("stored response lacks the notary's signature: %v", err)
			}

			// C's notary API, GET and POST, co-signs B's response.
			check := func(raw string) {
				t.Helper()
				var resp mfed.QueryKeysResponse
				must(0, json.Unmarshal([]byte(raw), &resp))
				if len(resp.ServerKeys) != 1 || !resp.ServerKeys[0].HasKey(b.SigningKey.ID) {
					t.Fatalf("notary answer: %s", raw)
				}
				if err := resp.ServerKeys[0].VerifySelfSignature(); err != nil {
					t.Fatal(err)
				}
				if err := signutil.VerifyJSON("c.test", c.SigningKey.ID, c.SigningKey.Pub, resp.ServerKeys[0].Raw); err != nil {
					t.Fatalf("notary signature: %v", err)
				}
			}
			r := do(t, c, "GET", "/_matrix/key/v2/query/b.test", "", nil)
			check(r.Raw)
			r = doJSON(t, c, "POST", "/_matrix/key/v2/query", "", map[string]any{
				"server_keys": map[string]any{"b.test": map[string]any{string(b.SigningKey.ID): map[string]any{}}}})
			check(r.Raw)
			// Unreachable and invalid servers give an empty list, not an error.
			// (Tests never look up unmapped names: no DNS traffic leaves the machine.)
			for _, s := range []string{"down.test", "bad%20name"} {
				r = do(t, c, "GET", "/_matrix/key/v2/query/"+s, "", nil)
				if r.Status != 200 || !strings.Contains(r.Raw, `"server_keys":[]`) {
					t.Errorf("%s: %d %s", s, r.Status, r.Raw)
				}
			}
			// Bad input.
			for _, tc := range []struct {
				method, path string
				body         any
				code         string
			}{
				{"GET", "/_matrix/key/v2/query/b.test?minimum_valid_until_ts=soon", nil, "M_INVALID_PARAM"},
				{"POST", "/_matrix/key/v2/query", map[string]any{"server_keys": map[string]any{"b.test": 5}}, "M_BAD_JSON"},
				{"POST", "/_matrix/key/v2/query", "{", "M_NOT_JSON"},
				{"POST", "/_matrix/key/v2/query", map[string]any{}, "M_BAD_JSON"},
				{"POST", "/_matrix/key/v2/query", map[string]any{"server_keys": []int{1}}, "M_BAD_JSON"},
			} {
				r := httpCall(t, c.URL, tc.method, tc.path, "", tc.body)
				if r.Status != 400 || r.errcode() != tc.code {
					t.Errorf("%s %s %v: %d %s", tc.method, tc.path, tc.body, r.Status, r.Raw)
				}
			}
		})
	}
}

// deadAddr is a loopback address nothing listens on.
func deadAddr(t testing.TB) string {
	r := newRelay(t) // accepts and closes at once: like a server that is down
	return r.addr()
}

// A fake server "evil.test" answering key requests with whatever a test
// makes of a genuinely signed response.
func evilKeyServer(t *testing.T, tamper func(raw []byte) []byte) (*httptest.Server, *mfed.SigningKey, *atomic.Int32) {
	key := mfed.GenerateSigningKey()
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		ring := &federation.KeyRing{ServerName: "evil.test", Key: key, Validity: time.Hour}
		raw := must(ring.Response(time.Now()))
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(tamper(raw))
	}))
	t.Cleanup(srv.Close)
	return srv, key, &hits
}

// Responses that fail the checks are refused and nothing is stored; the
// failure is cached (no second request within the backoff).
func TestFederationTamperedKeyResponses(t *testing.T) {
	other := mfed.GenerateSigningKey()
	cases := []struct {
		name   string
		tamper func(raw []byte) []byte
	}{
		{"valid_until_ts changed after signing", func(raw []byte) []byte {
			return must(sjson.SetBytes(raw, "valid_until_ts", time.Now().Add(6*24*time.Hour).UnixMilli()))
		}},
		{"key swapped after signing", func(raw []byte) []byte {
			var skr map[string]any
			must(0, json.Unmarshal(raw, &skr))
			for k := range skr["verify_keys"].(map[string]any) {
				skr["verify_keys"].(map[string]any)[k] = map[string]any{"key": string(other.Pub)}
			}
			return must(json.Marshal(skr))
		}},
		{"signatures removed", func(raw []byte) []byte { return must(sjson.DeleteBytes(raw, "signatures")) }},
		{"another server's name", func(raw []byte) []byte { return must(sjson.SetBytes(raw, "server_name", "b.test")) }},
		{"no valid_until_ts", func(raw []byte) []byte { return must(sjson.DeleteBytes(raw, "valid_until_ts")) }},
		{"not JSON", func([]byte) []byte { return []byte("<html>") }},
		// ed25519.Verify panics on a public key of the wrong length: the size
		// check must come first.
		{"31-byte verify key", func(raw []byte) []byte {
			var skr map[string]any
			must(0, json.Unmarshal(raw, &skr))
			for k := range skr["verify_keys"].(map[string]any) {
				skr["verify_keys"].(map[string]any)[k] = map[string]any{"key": base64.RawStdEncoding.EncodeToString(make([]byte, 31))}
			}
			return must(json.Marshal(skr))
		}},
		// A hostile server must not make us buffer more than a key response needs.
		{"body over the size cap", func(raw []byte) []byte {
			return must(sjson.SetBytes(raw, "padding", strings.Repeat("x", 2<<20)))
		}},
	}
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) {
			n := newFedNet(t, "a.test")
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					evil, key, hits := evilKeyServer(t, tc.tamper)
					a := testserver.Start(t, backend, testserver.Options{ServerName: "a.test", Configure: func(cfg *config.Config) {
						n.configure(cfg)
						cfg.Federation.Hosts["evil.test"] = strings.TrimPrefix(evil.URL, "http://")
						cfg.Federation.InsecureHTTPHosts = append(cfg.Federation.InsecureHTTPHosts, "evil.test")
					}})
					_, _, err := a.Federation.Fetcher.GetKey("evil.test", key.ID, time.Now())
					if err == nil {
						t.Fatal("tampered key accepted")
					}
					if _, err := a.DB.GetServerKey(ctxT(t), "evil.test", string(key.ID)); !errors.Is(err, storage.ErrNotFound) {
						t.Fatalf("something was stored: %v", err)
					}
					before := hits.Load()
					if _, _, err := a.Federation.Fetcher.GetKey("evil.test", key.ID, time.Now()); !errors.Is(err, federation.ErrFetchBackoff) {
						t.Fatalf("second lookup: %v", err)
					}
					if hits.Load() != before {
						t.Fatal("refetched within the backoff")
					}
				})
			}
			// The untampered response from the same fake server is accepted:
			// the cases above fail for their tampering, not for the setup.
			evil, key, _ := evilKeyServer(t, func(raw []byte) []byte { return raw })
			a := testserver.Start(t, backend, testserver.Options{ServerName: "a.test", Configure: func(cfg *config.Config) {
				n.configure(cfg)
				cfg.Federation.Hosts["evil.test"] = strings.TrimPrefix(evil.URL, "http://")
				cfg.Federation.InsecureHTTPHosts = append(cfg.Federation.InsecureHTTPHosts, "evil.test")
			}})
			if got, _, err := a.Federation.Fetcher.GetKey("evil.test", key.ID, time.Now()); err != nil || got != key.Pub {
				t.Fatalf("untampered: %s %v", got, err)
			}
		})
	}
}

// A notary whose signature does not verify (here: pinned to another key) is
// not believed.
func TestFederationNotarySignatureChecked(t *testing.T) {
	n := newFedNet(t, "a.test", "b.test", "c.test")
	b := n.start(t, "sqlite", "b.test")
	n.start(t, "sqlite", "c.test")
	wrong := mfed.GenerateSigningKey()
	a := testserver.Start(t, "sqlite", testserver.Options{ServerName: "a.test", Configure: func(cfg *config.Config) {
		n.configure(cfg)
		cfg.Federation.Hosts["b.test"] = deadAddr(t)
		cfg.Federation.TrustedKeyServers = []config.TrustedKeyServer{{ServerName: "c.test",
			VerifyKeys: map[string]string{string(wrong.ID): string(wrong.Pub)}}}
	}})
	_, _, err := a.Federation.Fetcher.GetKey("b.test", b.SigningKey.ID, time.Now())
	if !errors.Is(err, federation.ErrBadKeyResponse) {
		t.Fatalf("want a bad-response error, got %v", err)
	}
	if _, err := a.DB.GetServerKey(ctxT(t), "b.test", string(b.SigningKey.ID)); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("stored despite the bad notary signature: %v", err)
	}
}

// With no retired keys, GET /_matrix/key/v2/server still names
// old_verify_keys, as {} (Synapse does; Complement's key checks expect it),
// and the signature covers it.
func TestFederationServerKeysEmptyOld(t *testing.T) {
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) {
			n := newFedNet(t, "a.test")
			a := n.start(t, backend, "a.test")
			resp := do(t, a, "GET", "/_matrix/key/v2/server", "", nil)
			old, ok := resp.Body["old_verify_keys"].(map[string]any)
			if resp.Status != http.StatusOK || !ok || len(old) != 0 {
				t.Fatalf("key response: %d %s", resp.Status, resp.Raw)
			}
			var skr mfed.ServerKeyResponse
			must(0, json.Unmarshal([]byte(resp.Raw), &skr))
			if err := skr.VerifySelfSignature(); err != nil {
				t.Fatalf("self-signature: %v", err)
			}
			// The body is canonical JSON as served: the signature verifies over
			// the bytes received minus "signatures", as Complement checks it.
			unsigned, err := sjson.DeleteBytes([]byte(resp.Raw), "signatures")
			must(0, err)
			for keyID, sig := range skr.Signatures["a.test"] {
				pub, err := base64.RawStdEncoding.DecodeString(string(skr.VerifyKeys[keyID].Key))
				must(0, err)
				raw, err := base64.RawStdEncoding.DecodeString(sig)
				must(0, err)
				if !ed25519.Verify(pub, unsigned, raw) {
					t.Fatalf("signature %s does not verify over the body as served: %s", keyID, unsigned)
				}
			}
		})
	}
}
