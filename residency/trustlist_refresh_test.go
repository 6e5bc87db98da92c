package residency

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/myelin-chat/myelin/internal/config"
	"github.com/myelin-chat/myelin/internal/pgtest"
	"github.com/myelin-chat/myelin/storage"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// listServer serves whatever document was last set (status 503 when down).
type listServer struct {
	mu   sync.Mutex
	doc  []byte
	down bool
}

func (l *listServer) set(doc []byte) { l.mu.Lock(); l.doc, l.down = doc, false; l.mu.Unlock() }
func (l *listServer) setDown()       { l.mu.Lock(); l.down = true; l.mu.Unlock() }

func (l *listServer) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.down {
		http.Error(w, "down", http.StatusServiceUnavailable)
		return
	}
	_, _ = w.Write(l.doc)
}

type changes struct {
	mu   sync.Mutex
	list []Change
}

func (c *changes) PolicyChanged(_ context.Context, ch Change) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.list = append(c.list, ch)
	return nil
}

func (c *changes) last(t *testing.T) Change {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.list) == 0 {
		t.Fatal("no policy change recorded")
	}
	return c.list[len(c.list)-1]
}

func (c *changes) count() int { c.mu.Lock(); defer c.mu.Unlock(); return len(c.list) }

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// TestTrustListRefresher: a new version is applied live and recorded; an
// older one (rollback), a tampered one, an equal version with other content
// and an expired one are refused; an unreachable URL keeps the list in
// force; the list in force is withdrawn when it expires; a restart applies
// the stored list with the URL down. On both backends.
func TestTrustListRefresher(t *testing.T) {
	for _, backend := range pgtest.Backends {
		t.Run(backend, func(t *testing.T) { testTrustListRefresher(t, backend) })
	}
}

func testTrustListRefresher(t *testing.T, backend string) {
	ctx := context.Background()
	db, err := storage.Open(ctx, pgtest.StoreURL(t, backend), 4)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	ls := &listServer{}
	srv := httptest.NewServer(ls)
	t.Cleanup(srv.Close)
	cfg := testConfig(t)
	cfg.Residency.TrustList = config.TrustList{URL: srv.URL, Issuer: "consortium.example", KeyID: "ed25519:1",
		PublicKey: base64.RawStdEncoding.EncodeToString(pub), Refresh: config.Duration{Duration: time.Hour}}
	clk := &clock{t: time.Now()}
	sign := func(v int64, expires time.Time, servers map[string]string) []byte {
		tl := TrustList{Issuer: "consortium.example", Version: v, IssuedTS: clk.now().UnixMilli(), Servers: servers}
		if !expires.IsZero() {
			tl.ExpiresTS = expires.UnixMilli()
		}
		doc, err := SignTrustList(tl, "ed25519:1", priv)
		if err != nil {
			t.Fatal(err)
		}
		return doc
	}
	start := func() (*Policy, *Refresher, *changes) {
		p := New(Options{Config: cfg, Store: db, Now: clk.now})
		rec := &changes{}
		r, err := NewRefresher(RefresherOptions{Config: cfg, Policy: p, Store: db, Recorder: rec, Now: clk.now,
			Timeout: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if err := r.ApplyStored(ctx); err != nil {
			t.Fatal(err)
		}
		return p, r, rec
	}
	zoneOf := func(p *Policy, server string) string { z, _ := p.Rules().ServerZone(server); return z }
	refresh := func(r *Refresher, want string) {
		t.Helper()
		got, err := r.Refresh(ctx)
		if got != want {
			t.Fatalf("refresh = %s (%v), want %s", got, err, want)
		}
	}

	p, r, rec := start()
	ls.set(sign(1, time.Time{}, map[string]string{"partner.example": "eu", "gone.example": "eu"}))
	refresh(r, RefreshApplied)
	if zoneOf(p, "partner.example") != "eu" || p.Rules().TrustListVersion() != 1 {
		t.Fatalf("v1 not in force: zone %q, version %d", zoneOf(p, "partner.example"), p.Rules().TrustListVersion())
	}
	if c := rec.last(t); c.Cause != ChangeTrustList || c.TrustListVersion != 1 || c.ServersAddedCount != 2 {
		t.Fatalf("v1 change = %+v", c)
	}
	refresh(r, RefreshUnchanged)

	ls.set(sign(2, time.Time{}, map[string]string{"partner.example": "open", "new.example": "eu"}))
	refresh(r, RefreshApplied)
	if zoneOf(p, "gone.example") != "" || zoneOf(p, "new.example") != "eu" || zoneOf(p, "partner.example") != "open" {
		t.Fatal("v2 not applied live")
	}
	c := rec.last(t)
	if c.TrustListVersionBefore != 1 || c.TrustListVersion != 2 || !slices.Equal(c.ServersRemoved, []string{"gone.example (eu)"}) ||
		!slices.Equal(c.ServersAdded, []string{"new.example (eu)"}) || !slices.Equal(c.ServersMoved, []string{"partner.example (eu → open)"}) ||
		c.FingerprintBefore == c.FingerprintAfter {
		t.Fatalf("v2 change = %+v", c)
	}

	// Rollback, tampering, the same version changed, expired: refused, v2 stays.
	ls.set(sign(1, time.Time{}, map[string]string{"gone.example": "eu"}))
	refresh(r, RefreshRefused)
	tampered := strings.Replace(string(sign(3, time.Time{}, map[string]string{"new.example": "eu"})), "new.example", "evil.example", 1)
	ls.set([]byte(tampered))
	refresh(r, RefreshRefused)
	ls.set(sign(2, time.Time{}, map[string]string{"evil.example": "eu"}))
	refresh(r, RefreshRefused)
	ls.set(sign(4, clk.now().Add(-time.Minute), map[string]string{"evil.example": "eu"}))
	refresh(r, RefreshRefused)
	ls.setDown()
	refresh(r, RefreshFailed)
	if p.Rules().TrustListVersion() != 2 || zoneOf(p, "evil.example") != "" || zoneOf(p, "new.example") != "eu" {
		t.Fatalf("a refused list changed the policy: version %d", p.Rules().TrustListVersion())
	}

	// A restart with the URL down applies the stored v2 at once.
	p2, r2, rec2 := start()
	if p2.Rules().TrustListVersion() != 2 || zoneOf(p2, "new.example") != "eu" {
		t.Fatalf("after restart: version %d", p2.Rules().TrustListVersion())
	}
	refresh(r2, RefreshFailed)
	if r2.InForce() == nil {
		t.Fatal("a failed refresh withdrew the list")
	}

	// v3 expires in an hour: applied; when the hour has passed, withdrawn
	// (fail closed), even though the URL still serves it.
	ls.set(sign(3, clk.now().Add(time.Hour), map[string]string{"new.example": "eu"}))
	refresh(r2, RefreshApplied)
	if w := r2.nextWait(); w > time.Hour || w < 59*time.Minute {
		t.Fatalf("next refresh in %v, want by the expiry", w)
	}
	clk.add(time.Hour + time.Second)
	refresh(r2, RefreshRefused)
	if c := rec2.last(t); c.Cause != ChangeTrustListExpired || c.TrustListVersion != 0 || c.ServersRemovedCount != 1 {
		t.Fatalf("expiry change = %+v", c)
	}
	if p2.Rules().TrustListVersion() != 0 || zoneOf(p2, "new.example") != "" || r2.InForce() != nil {
		t.Fatal("an expired list is still in force")
	}
	// And a restart does not bring the expired list back.
	p3, _, _ := start()
	if p3.Rules().TrustListVersion() != 0 {
		t.Fatal("an expired stored list was applied at restart")
	}
}

// TestRecordStartup: a server with the policy on records it once; the same
// policy again records nothing; a changed config records the zones changed;
// a server that never had the policy records nothing.
func TestRecordStartup(t *testing.T) {
	ctx := context.Background()
	db, err := storage.Open(ctx, pgtest.StoreURL(t, "sqlite"), 2)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	off := config.Default()
	rec := &changes{}
	if err := RecordStartup(ctx, New(Options{Config: off, Store: db}), db, rec, time.Now()); err != nil || rec.count() != 0 {
		t.Fatalf("policy off: %v, %d records", err, rec.count())
	}
	cfg := testConfig(t)
	for range 2 {
		if err := RecordStartup(ctx, New(Options{Config: cfg, Store: db}), db, rec, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	if rec.count() != 1 || rec.last(t).Cause != ChangeStartup || rec.last(t).FingerprintBefore != "" {
		t.Fatalf("first startup: %d records, %+v", rec.count(), rec.list)
	}
	cfg.Residency.Zones = append(cfg.Residency.Zones, config.ResidencyZone{Name: "extra", Servers: []string{"x.example"}})
	if err := RecordStartup(ctx, New(Options{Config: cfg, Store: db}), db, rec, time.Now()); err != nil {
		t.Fatal(err)
	}
	c := rec.last(t)
	if rec.count() != 2 || !slices.Equal(c.ZonesAdded, []string{"extra"}) || c.FingerprintBefore == "" || c.FingerprintBefore == c.FingerprintAfter {
		t.Fatalf("changed config: %d records, %+v", rec.count(), c)
	}
}
