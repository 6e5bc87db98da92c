package tests

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix"

	"github.com/myelin-chat/myelin/audit"
	"github.com/myelin-chat/myelin/homeserver/testserver"
	"github.com/myelin-chat/myelin/internal/config"
	"github.com/myelin-chat/myelin/residency"
)

// trustListHost serves a signed trust list, replaceable while it runs.
type trustListHost struct {
	mu   sync.Mutex
	doc  []byte
	down bool
	priv ed25519.PrivateKey
	pub  ed25519.PublicKey
	srv  *httptest.Server
}

func newTrustListHost(t *testing.T) *trustListHost {
	h := &trustListHost{}
	h.pub, h.priv, _ = ed25519.GenerateKey(rand.Reader)
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		h.mu.Lock()
		defer h.mu.Unlock()
		if h.down {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write(h.doc)
	}))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *trustListHost) publish(t *testing.T, version int64, servers map[string]string) {
	t.Helper()
	doc, err := residency.SignTrustList(residency.TrustList{Issuer: "consortium.test", Version: version,
		IssuedTS: time.Now().UnixMilli(), Servers: servers}, "ed25519:1", h.priv)
	if err != nil {
		t.Fatal(err)
	}
	h.mu.Lock()
	h.doc = doc
	h.mu.Unlock()
}

// config is the trust list source as a1 and a2 pin it.
func (h *trustListHost) config(refresh time.Duration) config.TrustList {
	return config.TrustList{URL: h.srv.URL, Issuer: "consortium.test", KeyID: "ed25519:1",
		PublicKey: base64.RawStdEncoding.EncodeToString(h.pub), Refresh: config.Duration{Duration: refresh}}
}

// TestResidencyTrustListLive: zone p has no server patterns; only the trust
// list places b.test in it. b's user joins #p-x on a1 and receives its
// messages; then the served list drops b, a1's refresher applies it without
// restart, and b is cut off: its requests are refused (403) and a1's next
// message in the room does not reach it. a1's audit trail holds the
// policy_change records (startup, each list) and verifies.
func TestResidencyTrustListLive(t *testing.T) {
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) {
			defer recoverMust(t)
			host := newTrustListHost(t)
			host.publish(t, 1, map[string]string{"b.test": "p"})
			n := newResidencyNet(t, backend, residencyPolicy(func(r *config.Residency) {
				r.Zones = []config.ResidencyZone{
					{Name: "a", Servers: []string{"a1.test", "a2.test"}},
					{Name: "p", Includes: []string{"a"}},
				}
				r.Rooms.Rules = []config.ResidencyRule{{Zone: "p", Aliases: []string{"#p-*"}}}
				r.TrustList = host.config(time.Second) // the shortest refresh the config allows
			}))
			ctx := ctxT(t)
			if v := n.a1.Residency.Rules().TrustListVersion(); v != 1 {
				t.Fatalf("trust list version in force at startup = %d, want 1 (fetched before serving)", v)
			}
			alice, bob := n.a1.Register(t, "alice"), n.b.Register(t, "bob")
			room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomAliasName: "p-x"})
			must(bob.JoinRoom(ctx, "#p-x:a1.test", &mautrix.ReqJoinRoom{Via: []string{"a1.test"}}))
			if c, err := n.a1.Residency.RoomZone(ctx, string(room)); err != nil || c.Zone != "p" {
				t.Fatalf("room zone = %+v, %v; want p", c, err)
			}
			first := sendText(t, alice, room, "before the list changes")
			syncUntil(t, bob, "", "", func(r *mautrix.RespSync) bool {
				j := r.Rooms.Join[room]
				return j != nil && syncHasEvent(j.Timeline.Events, first)
			})

			host.publish(t, 2, map[string]string{"other.test": "p"})
			deadline := time.Now().Add(10 * time.Second)
			for n.a1.Residency.Rules().TrustListVersion() != 2 {
				if time.Now().After(deadline) {
					t.Fatal("a1 did not apply trust list version 2")
				}
				time.Sleep(50 * time.Millisecond)
			}
			if d := n.a1.Residency.Listed(ctx, "b.test"); d.Allowed {
				t.Fatalf("b still listed after the list dropped it: %+v", d)
			}
			fromB := n.net.client(t, "b.test", n.b.SigningKey)
			if _, err := fromB.QueryProfile(ctx, "a1.test", alice.UserID); errStatus(err) != http.StatusForbidden {
				t.Fatalf("b → a1 after the list dropped b: %v, want 403", err)
			}
			second := sendText(t, alice, room, "after the list changes")
			// Give the sender time to try b (it would within milliseconds).
			time.Sleep(1500 * time.Millisecond)
			if n.wire.mentions(string(second)) {
				t.Fatal("a1's message reached b after the trust list dropped it")
			}
			if ev, err := n.b.DB.GetEvent(context.Background(), string(second)); err == nil && ev != nil {
				t.Fatal("b's store holds a1's message sent after the trust list dropped it")
			}

			// The audit trail: startup with v1, then v2 removing b; it verifies.
			var changes []residency.Change
			recs, err := auditLogRecords(ctx, n.a1)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range recs {
				if r.Kind == audit.KindPolicyChange {
					var c residency.Change
					if err := json.Unmarshal(r.Body, &c); err != nil {
						t.Fatal(err)
					}
					changes = append(changes, c)
				}
			}
			i := slices.IndexFunc(changes, func(c residency.Change) bool {
				return c.Cause == residency.ChangeTrustList && c.TrustListVersion == 2
			})
			if len(changes) < 2 || changes[0].Cause != residency.ChangeStartup && changes[0].Cause != residency.ChangeTrustList || i < 0 ||
				!slices.Equal(changes[i].ServersRemoved, []string{"b.test (p)"}) || changes[i].TrustListVersionBefore != 1 {
				t.Fatalf("policy_change records = %+v", changes)
			}
			if v, err := audit.Verify(ctx, n.a1.DB); err != nil || v.Problem != nil {
				t.Fatalf("a1's audit trail: %+v, %v", v, err)
			}
		})
	}
}

// auditLogRecords reads srv's whole audit trail from its store.
func auditLogRecords(ctx context.Context, srv *testserver.Server) ([]audit.Record, error) {
	var out []audit.Record
	err := audit.Export(ctx, srv.DB, time.UnixMilli(0), time.Now().Add(time.Minute), func(r audit.Record) error {
		out = append(out, r)
		return nil
	})
	return out, err
}

// TestResidencyTrustListRestart: a1 restarts while the trust list's URL is
// down: the list it accepted before is applied from the store at once (b is
// still in zone p and may deal with a1), the failed fetch is counted, and no
// new policy_change is recorded (the policy did not change).
func TestResidencyTrustListRestart(t *testing.T) {
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) {
			defer recoverMust(t)
			host := newTrustListHost(t)
			host.publish(t, 1, map[string]string{"b.test": "p"})
			n := newFedNet(t, "a1.test", "b.test")
			startA := n.restartable(t, backend, "a1.test", residencyPolicy(func(r *config.Residency) {
				r.Zones = []config.ResidencyZone{{Name: "a", Servers: []string{"a1.test"}}, {Name: "p", Includes: []string{"a"}}}
				r.Rooms.Rules = nil
				r.TrustList = host.config(time.Hour)
			}))
			a := startA()
			b := n.start(t, backend, "b.test")
			ctx := ctxT(t)
			if v := a.Residency.Rules().TrustListVersion(); v != 1 {
				t.Fatalf("version in force = %d, want 1", v)
			}
			before, err := auditLogRecords(ctx, a)
			if err != nil {
				t.Fatal(err)
			}
			shutdown, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			if err := a.Shutdown(shutdown); err != nil {
				t.Fatal(err)
			}
			host.mu.Lock()
			host.down = true
			host.mu.Unlock()

			a = startA()
			if v := a.Residency.Rules().TrustListVersion(); v != 1 {
				t.Fatalf("after restart with the URL down: version in force = %d, want 1 (the stored list)", v)
			}
			fromB := n.client(t, "b.test", b.SigningKey)
			if _, err := fromB.QueryProfile(ctx, "a1.test", a.UserID("nobody")); errStatus(err) != http.StatusNotFound {
				t.Fatalf("b → a1 profile query after restart: %v, want 404 (b is still in zone p)", err)
			}
			m := metricsText(t, a)
			if !strings.Contains(m, `myelin_residency_trust_list_refresh_total{result="failed"} 1`) ||
				!strings.Contains(m, "myelin_residency_trust_list_version 1") {
				t.Fatalf("metrics after restart:\n%s", grepLines(m, "trust_list"))
			}
			after, err := auditLogRecords(ctx, a)
			if err != nil {
				t.Fatal(err)
			}
			if countKind(after, audit.KindPolicyChange) != countKind(before, audit.KindPolicyChange) || countKind(before, audit.KindPolicyChange) != 2 {
				t.Fatalf("policy_change records: %d before the restart (want 2: startup, v1), %d after (want no new one)",
					countKind(before, audit.KindPolicyChange), countKind(after, audit.KindPolicyChange))
			}
		})
	}
}

func countKind(recs []audit.Record, k audit.Kind) int {
	n := 0
	for _, r := range recs {
		if r.Kind == k {
			n++
		}
	}
	return n
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
