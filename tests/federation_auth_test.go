package tests

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	mfed "maunium.net/go/mautrix/federation"

	"github.com/myelin-chat/myelin/federation"
	"github.com/myelin-chat/myelin/homeserver/testserver"
	"github.com/myelin-chat/myelin/internal/config"
	"github.com/myelin-chat/myelin/storage"
)

// A's signed profile query to B verifies (B fetches A's key); forged,
// misdirected, unsigned and expired-key requests get 401 M_UNAUTHORIZED.
func TestFederationRequestAuth(t *testing.T) {
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) {
			n := newFedNet(t, "a.test", "b.test", "c.test", "x.test")
			a := n.start(t, backend, "a.test")
			b := n.start(t, backend, "b.test")
			bob := b.Register(t, "bob")
			must(0, bob.SetDisplayName(ctxT(t), "Bob B"))
			ctx := ctxT(t)

			// The real thing, through A's own client.
			prof, err := a.Federation.Client.QueryProfile(ctx, "b.test", b.UserID("bob"))
			if err != nil || prof.DisplayName != "Bob B" {
				t.Fatalf("profile: %+v %v", prof, err)
			}
			var one map[string]any
			err = a.Federation.Client.Query(ctx, "b.test", "profile", map[string][]string{
				"user_id": {b.UserID("bob").String()}, "field": {"displayname"}}, &one)
			if err != nil || len(one) != 1 || one["displayname"] != "Bob B" {
				t.Fatalf("one field: %v %v", one, err)
			}
			// B stored A's key while verifying.
			if _, err := b.DB.GetServerKey(ctx, "a.test", string(a.SigningKey.ID)); err != nil {
				t.Fatalf("B did not store A's key: %v", err)
			}

			// Profile errors, authenticated.
			for _, tc := range []struct {
				q      map[string][]string
				status int
				code   string
			}{
				{map[string][]string{}, 400, "M_MISSING_PARAM"},
				{map[string][]string{"user_id": {"not-a-user"}}, 400, "M_INVALID_PARAM"},
				{map[string][]string{"user_id": {"@nobody:b.test"}}, 404, "M_NOT_FOUND"},
				{map[string][]string{"user_id": {"@bob:a.test"}}, 404, "M_NOT_FOUND"},
				{map[string][]string{"user_id": {"@bob:localhost:http"}}, 400, "M_INVALID_PARAM"}, // non-numeric port
				{map[string][]string{"user_id": {"@bob:b.test"}, "field": {"avatar_url"}}, 404, "M_NOT_FOUND"},
			} {
				err := a.Federation.Client.Query(ctx, "b.test", "profile", tc.q, &one)
				assertMatrixErr(t, err, tc.status, tc.code)
			}

			query := map[string][]string{"user_id": {b.UserID("bob").String()}}
			// Same key ID as A's, different key: the signature cannot verify.
			forged := mfed.GenerateSigningKey()
			forged.ID = a.SigningKey.ID
			err = n.client(t, "a.test", forged).Query(ctx, "b.test", "profile", query, &one)
			assertMatrixErr(t, err, 401, "M_UNAUTHORIZED", "Invalid request signature")

			// A request for c.test delivered to B: the destination is not B.
			cfg := config.Default()
			cfg.ServerName = "a.test"
			n.configure(cfg)
			cfg.Federation.Hosts["c.test"] = n.relays["b.test"].addr()
			toC := must(federation.NewClient(cfg, a.SigningKey, federation.AllowAll{}))
			err = toC.Query(ctx, "c.test", "profile", query, &one)
			assertMatrixErr(t, err, 401, "M_UNAUTHORIZED", `Request is for "c.test"`)

			// An expired key: x.test's key is stored at B with valid_until in
			// the past and x.test cannot be reached to refresh it.
			xKey := mfed.GenerateSigningKey()
			past := time.Now().Add(-time.Hour).UnixMilli()
			must(0, b.DB.StoreServerKeys(ctx, []storage.ServerKey{{ServerName: "x.test", KeyID: string(xKey.ID),
				VerifyKey: string(xKey.Pub), ValidUntilTS: past, FetchedTS: past}}))
			err = n.client(t, "x.test", xKey).Query(ctx, "b.test", "profile", query, &one)
			assertMatrixErr(t, err, 401, "M_UNAUTHORIZED", "has expired")
			// ... and an old (retired) key may sign events but not requests.
			oldKey := mfed.GenerateSigningKey()
			must(0, b.DB.StoreServerKeys(ctx, []storage.ServerKey{{ServerName: "x.test", KeyID: string(oldKey.ID),
				VerifyKey: string(oldKey.Pub), ExpiredTS: time.Now().Add(time.Hour).UnixMilli(), FetchedTS: past}}))
			err = n.client(t, "x.test", oldKey).Query(ctx, "b.test", "profile", query, &one)
			assertMatrixErr(t, err, 401, "M_UNAUTHORIZED", "has expired")

			// Raw requests: no header, other schemes, malformed X-Matrix, unknown key.
			path := "/_matrix/federation/v1/query/profile?user_id=" + b.UserID("bob").String()
			for _, auth := range []string{
				"",
				"Bearer abc",
				`X-Matrix origin="a.test"`,
				`X-Matrix origin="a.test",key="ed25519:nope",sig="c2ln"`,
				`X-Matrix origin="a.test",destination="b.test",key="` + string(a.SigningKey.ID) + `",sig="!!!"`,
				`X-Matrix origin="bad name",key="ed25519:x",sig="c2ln"`,
				`X-Matrix origin="a.test,key="ed25519:x",sig="c2ln"`,
			} {
				req := must(http.NewRequest("GET", b.URL+path, nil))
				if auth != "" {
					req.Header.Set("Authorization", auth)
				}
				resp := must(http.DefaultClient.Do(req))
				resp.Body.Close()
				if resp.StatusCode != 401 {
					t.Errorf("Authorization %q: status %d", auth, resp.StatusCode)
				}
			}
		})
	}
}

func assertMatrixErr(t *testing.T, err error, status int, code string, msg ...string) {
	t.Helper()
	var httpErr mautrix.HTTPError
	if !errors.As(err, &httpErr) || httpErr.Response == nil {
		t.Fatalf("want %d %s, got %v", status, code, err)
	}
	if httpErr.Response.StatusCode != status || httpErr.RespError == nil || httpErr.RespError.ErrCode != code {
		t.Fatalf("want %d %s, got %d %v", status, code, httpErr.Response.StatusCode, err)
	}
	for _, m := range msg {
		if !strings.Contains(httpErr.RespError.Err, m) {
			t.Fatalf("want %q in the error, got %q", m, httpErr.RespError.Err)
		}
	}
}

// The policy refuses a server inbound and outbound; every refusal is in
// /metrics.
func TestFederationPolicy(t *testing.T) {
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) {
			n := newFedNet(t, "a.test", "b.test", "c.test")
			a := n.start(t, backend, "a.test", func(cfg *config.Config) {
				cfg.Federation.DeniedServers = []string{"c.*"}
			})
			b := n.start(t, backend, "b.test", func(cfg *config.Config) {
				cfg.Federation.AllowedServers = []string{"*.test"}
				cfg.Federation.DeniedServers = []string{"A.TEST"} // case-insensitive
			})
			c := n.start(t, backend, "c.test")
			b.Register(t, "bob")
			ctx := ctxT(t)
			query := map[string][]string{"user_id": {b.UserID("bob").String()}}
			var out map[string]any

			// Inbound: B refuses A.
			err := a.Federation.Client.Query(ctx, "b.test", "profile", query, &out)
			assertMatrixErr(t, err, 403, "M_FORBIDDEN")
			// C is allowed at B.
			if err := c.Federation.Client.Query(ctx, "b.test", "profile", query, &out); err != nil {
				t.Fatalf("c.test refused: %v", err)
			}
			// Outbound: A refuses to fetch C's keys, and its client refuses to talk to C.
			if _, _, err := a.Federation.Fetcher.GetKey("c.test", c.SigningKey.ID, time.Now()); !errors.Is(err, federation.ErrServerDenied) {
				t.Fatalf("key fetch from a denied server: %v", err)
			}
			if _, err := a.Federation.Client.Version(ctx, "c.test"); !errors.Is(err, mfed.ErrServerNameFiltered) {
				t.Fatalf("request to a denied server: %v", err)
			}
			// As a notary, B does not vouch for A.
			r := do(t, b, "GET", "/_matrix/key/v2/query/a.test", "", nil)
			if r.Status != 200 || !strings.Contains(r.Raw, `"server_keys":[]`) {
				t.Fatalf("notary for a denied server: %d %s", r.Status, r.Raw)
			}

			metric := func(srv *testserver.Server, purpose string) string {
				t.Helper()
				m := do(t, srv, "GET", "/metrics", "", nil)
				for _, line := range strings.Split(m.Raw, "\n") {
					if strings.HasPrefix(line, `myelin_federation_policy_refusals_total{purpose="`+purpose+`"}`) {
						return strings.Fields(line)[1]
					}
				}
				return "absent"
			}
			if got := metric(b, "inbound"); got != "1" {
				t.Errorf("B inbound refusals: %s", got)
			}
			if got := metric(b, "notary"); got != "1" {
				t.Errorf("B notary refusals: %s", got)
			}
			if got := metric(a, "key_fetch"); got != "1" {
				t.Errorf("A key_fetch refusals: %s", got)
			}
			if got := metric(a, "outbound"); got != "1" {
				t.Errorf("A outbound refusals: %s", got)
			}
		})
	}
}

// Federation endpoints are rate-limited per IP.
func TestFederationRateLimit(t *testing.T) {
	n := newFedNet(t, "a.test")
	a := n.start(t, "sqlite", "a.test", func(cfg *config.Config) {
		cfg.Federation.RequestsPerSecond, cfg.Federation.Burst = 0.001, 3
	})
	for i := 0; i < 3; i++ {
		if r := do(t, a, "GET", "/_matrix/federation/v1/version", "", nil); r.Status != 200 {
			t.Fatalf("request %d: %d", i, r.Status)
		}
	}
	r := do(t, a, "GET", "/_matrix/key/v2/server", "", nil)
	if r.Status != 429 || r.errcode() != "M_LIMIT_EXCEEDED" || r.Header.Get("Retry-After") == "" {
		t.Fatalf("4th request: %d %s", r.Status, r.Raw)
	}
	// The client API has its own limits.
	if r := do(t, a, "GET", "/_matrix/client/versions", "", nil); r.Status != 200 {
		t.Fatalf("client API: %d", r.Status)
	}
}
