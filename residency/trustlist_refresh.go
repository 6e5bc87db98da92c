package residency

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/myelin-chat/myelin/internal/config"
	"github.com/myelin-chat/myelin/storage"
)

// TrustStore keeps the last trust list accepted and the policy last
// recorded (*storage.DB).
type TrustStore interface {
	GetTrustList(ctx context.Context, issuer string) (storage.StoredTrustList, error)
	PutTrustList(ctx context.Context, t storage.StoredTrustList) error
	PolicyStateStore
}

// PolicyStateStore keeps the fingerprint of the policy last recorded in the
// audit trail (*storage.DB).
type PolicyStateStore interface {
	GetPolicyState(ctx context.Context) (storage.PolicyState, error)
	PutPolicyState(ctx context.Context, p storage.PolicyState) error
}

// Causes of a policy change.
const (
	ChangeStartup          = "startup"            // the config (or stored list) differs from the policy last recorded
	ChangeTrustList        = "trust_list"         // a new trust list was applied
	ChangeTrustListExpired = "trust_list_expired" // the list in force expired and places no server any more
)

// maxChangeServers bounds the servers a change record lists by name (the
// counts are always complete).
const maxChangeServers = 1000

// Change is one change of the policy in force, as the audit trail records
// it (a policy_change record's body).
type Change struct {
	Cause             string `json:"cause"`
	FingerprintBefore string `json:"fingerprint_before,omitempty"`
	FingerprintAfter  string `json:"fingerprint_after"`
	Enabled           bool   `json:"enabled"`
	OurZone           string `json:"our_zone,omitempty"`
	// Zones are the zones defined now; ZonesAdded and ZonesRemoved compare
	// them with the policy last recorded.
	Zones        []string `json:"zones"`
	ZonesAdded   []string `json:"zones_added,omitempty"`
	ZonesRemoved []string `json:"zones_removed,omitempty"`
	// The trust list: its issuer, the version in force before and after
	// (0: none), and the servers the change placed, unplaced or moved
	// ("host (zone)", "host (old → new)"; at most 1000 named, all counted).
	TrustListIssuer        string   `json:"trust_list_issuer,omitempty"`
	TrustListVersionBefore int64    `json:"trust_list_version_before"`
	TrustListVersion       int64    `json:"trust_list_version"`
	ServersAdded           []string `json:"servers_added,omitempty"`
	ServersRemoved         []string `json:"servers_removed,omitempty"`
	ServersMoved           []string `json:"servers_moved,omitempty"`
	ServersAddedCount      int      `json:"servers_added_count,omitempty"`
	ServersRemovedCount    int      `json:"servers_removed_count,omitempty"`
	ServersMovedCount      int      `json:"servers_moved_count,omitempty"`
	// Ignored are trust list entries naming a zone not defined here.
	Ignored []string `json:"ignored,omitempty"`
}

// Recorder records policy changes (homeserver: policy_change records in
// the audit trail).
type Recorder interface {
	PolicyChanged(ctx context.Context, c Change) error
}

// policySummary is what residency_policy_state keeps beside the
// fingerprint, to say at the next startup what changed.
type policySummary struct {
	Enabled          bool     `json:"enabled"`
	OurZone          string   `json:"our_zone"`
	Zones            []string `json:"zones"`
	TrustListVersion int64    `json:"trust_list_version"`
}

// RecordStartup records a policy_change when the policy in force differs
// from the one last recorded (the config was edited, or the policy turned
// on or off, while the server was stopped). A server that never had the
// policy on records nothing.
func RecordStartup(ctx context.Context, p *Policy, store PolicyStateStore, rec Recorder, now time.Time) error {
	r := p.Rules()
	fp := r.Fingerprint()
	prev, err := store.GetPolicyState(ctx)
	switch {
	case errors.Is(err, storage.ErrNotFound):
		if !r.Enabled() {
			return nil
		}
	case err != nil:
		return fmt.Errorf("reading the residency policy last recorded: %w", err)
	case prev.Fingerprint == fp:
		return nil
	}
	var before policySummary
	_ = json.Unmarshal(prev.Summary, &before)
	c := Change{Cause: ChangeStartup, FingerprintBefore: prev.Fingerprint, TrustListVersionBefore: before.TrustListVersion,
		TrustListIssuer: p.o.Config.Residency.TrustList.Issuer}
	c.fill(r)
	c.ZonesAdded, c.ZonesRemoved = setDiff(c.Zones, before.Zones), setDiff(before.Zones, c.Zones)
	return recordChange(ctx, store, rec, r, c, now)
}

func (c *Change) fill(r *Rules) {
	c.FingerprintAfter, c.Enabled, c.OurZone = r.Fingerprint(), r.Enabled(), r.OurZone()
	c.Zones, c.TrustListVersion = r.ZoneNames(), r.TrustListVersion()
}

// recordChange writes c to the audit trail, then remembers the policy as
// recorded; when the record cannot be written the state is left, so the
// next startup records the change.
func recordChange(ctx context.Context, store PolicyStateStore, rec Recorder, r *Rules, c Change, now time.Time) error {
	slog.InfoContext(ctx, "residency: policy changed", "cause", c.Cause, "fingerprint", c.FingerprintAfter,
		"trust_list_version", c.TrustListVersion, "servers_added", c.ServersAddedCount, "servers_removed", c.ServersRemovedCount)
	if rec != nil {
		if err := rec.PolicyChanged(ctx, c); err != nil {
			return fmt.Errorf("recording the policy change: %w", err)
		}
	}
	summary, _ := json.Marshal(policySummary{Enabled: r.Enabled(), OurZone: r.OurZone(), Zones: r.ZoneNames(),
		TrustListVersion: r.TrustListVersion()})
	return store.PutPolicyState(ctx, storage.PolicyState{Fingerprint: c.FingerprintAfter, Summary: summary,
		RecordedTS: now.UnixMilli()})
}

func setDiff(a, b []string) []string {
	var out []string
	for _, x := range a {
		if !slices.Contains(b, x) {
			out = append(out, x)
		}
	}
	return out
}

// RefresherOptions build a Refresher.
type RefresherOptions struct {
	Config   *config.Config // residency.trust_list: the source, the pinned issuer and key, the refresh period
	Policy   *Policy
	Store    TrustStore
	Recorder Recorder              // nil: changes are only logged
	Client   *http.Client          // nil: a client with Timeout
	Timeout  time.Duration         // of one fetch; default 30s
	Metrics  prometheus.Registerer // nil: unregistered
	Now      func() time.Time      // nil: time.Now
}

// Refresh results, the result label of myelin_residency_trust_list_refresh_total.
const (
	RefreshApplied   = "applied"   // a new version was put in force
	RefreshUnchanged = "unchanged" // the version in force was fetched again
	RefreshRefused   = "refused"   // the document did not verify, was older, expired, or changed without a new version
	RefreshFailed    = "failed"    // it could not be fetched (the list in force stays)
	RefreshExpired   = "expired"   // the list in force expired and was withdrawn
)

// Refresher keeps the consortium trust list in force: the last one
// accepted (from the store) at startup, then a fetch every
// trust_list.refresh. A list is accepted only when it verifies against the
// pinned key, has not expired, and is newer than the last accepted one (an
// equal version must be the same document). A failed fetch keeps the list
// in force; an expired list is withdrawn (fail closed: its servers are in
// no zone, unless the config's patterns place them).
type Refresher struct {
	o      RefresherOptions
	tc     config.TrustList
	key    ed25519.PublicKey
	client *http.Client

	mu sync.Mutex // serializes refreshes and expiry
	// inForce is the list in force (nil: none); last the signed form and
	// version of the last accepted (the floor a new one must not go under).
	inForce     *TrustList
	lastVersion int64
	lastSigned  []byte

	results *prometheus.CounterVec
	version prometheus.Gauge

	cancel context.CancelFunc
	done   chan struct{}
}

// NewRefresher builds a refresher for a configured trust list source.
func NewRefresher(o RefresherOptions) (*Refresher, error) {
	tc := o.Config.Residency.TrustList
	if !tc.Configured() {
		return nil, errors.New("residency.trust_list: no url or file configured")
	}
	key, err := tc.TrustListKey()
	if err != nil {
		return nil, fmt.Errorf("residency.trust_list.public_key: %w", err)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Timeout <= 0 {
		o.Timeout = 30 * time.Second
	}
	client := o.Client
	if client == nil {
		// The operator configured the URL: private addresses are allowed.
		client = &http.Client{Timeout: o.Timeout}
	}
	r := &Refresher{o: o, tc: tc, key: key, client: client, done: make(chan struct{}),
		results: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "myelin_residency_trust_list_refresh_total",
			Help: "Trust list refreshes, by result (applied, unchanged, refused, failed, expired).",
		}, []string{"result"}),
		version: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "myelin_residency_trust_list_version",
			Help: "The version of the consortium trust list in force (0: none).",
		})}
	if o.Metrics != nil {
		for _, c := range []prometheus.Collector{r.results, r.version} {
			if err := o.Metrics.Register(c); err != nil {
				return nil, fmt.Errorf("trust list metrics: %w", err)
			}
		}
	}
	close(r.done) // reopened by Start
	return r, nil
}

// ApplyStored puts the last accepted list in force, from the store, when it
// still verifies against the pinned key and has not expired: a restart
// applies it at once, even when the source is unreachable.
func (r *Refresher) ApplyStored(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	st, err := r.o.Store.GetTrustList(ctx, r.tc.Issuer)
	if errors.Is(err, storage.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading the stored trust list: %w", err)
	}
	tl, err := VerifyTrustList(st.Document, r.tc.Issuer, r.tc.KeyID, r.key)
	if err != nil {
		// The pinned key changed since: the stored list is not this issuer's any more.
		slog.WarnContext(ctx, "residency: the stored trust list does not verify against the pinned key; not applied", "err", err)
		return nil
	}
	r.lastVersion, r.lastSigned = tl.Version, mustSigned(st.Document)
	if tl.Expired(r.o.Now()) {
		slog.WarnContext(ctx, "residency: the stored trust list has expired; not applied", "version", tl.Version)
		return nil
	}
	_, _, ignored := r.o.Policy.SetTrustList(tl)
	r.inForce = tl
	r.version.Set(float64(tl.Version))
	logIgnored(ctx, tl.Version, ignored)
	return nil
}

func mustSigned(raw []byte) []byte {
	b, _ := signedForm(raw)
	return b
}

func logIgnored(ctx context.Context, version int64, ignored []string) {
	if len(ignored) > 0 {
		slog.WarnContext(ctx, "residency: trust list entries name zones not defined here; ignored", "version", version,
			"entries", ignored)
	}
}

// Start refreshes once (bounded by the fetch timeout; a failure keeps what
// is in force) and then every trust_list.refresh until Close.
func (r *Refresher) Start(ctx context.Context) {
	if _, err := r.Refresh(ctx); err != nil {
		slog.WarnContext(ctx, "residency: trust list refresh at startup", "err", err)
	}
	loopCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	r.cancel = cancel
	r.done = make(chan struct{})
	go r.loop(loopCtx)
}

// Close stops the refreshes and waits for one in progress.
func (r *Refresher) Close() {
	if r.cancel != nil {
		r.cancel()
	}
	<-r.done
}

func (r *Refresher) loop(ctx context.Context) {
	defer close(r.done)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		timer.Reset(r.nextWait())
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		if _, err := r.Refresh(ctx); err != nil && ctx.Err() == nil {
			slog.WarnContext(ctx, "residency: trust list refresh", "err", err)
		}
	}
}

// nextWait is the refresh period, or less when the list in force expires
// sooner (so that it is withdrawn on time).
func (r *Refresher) nextWait() time.Duration {
	wait := r.tc.Refresh.Duration
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.inForce != nil && r.inForce.ExpiresTS > 0 {
		if until := time.UnixMilli(r.inForce.ExpiresTS).Sub(r.o.Now()); until < wait {
			wait = max(until, 10*time.Millisecond)
		}
	}
	return wait
}

// Refresh fetches the list once and applies it when accepted; it returns
// the result (Refresh… constants) and, unless applied or unchanged, why.
// Then, whatever the fetch gave, a list in force that has expired is
// withdrawn.
func (r *Refresher) Refresh(ctx context.Context) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	result, err := r.refresh(ctx)
	r.results.WithLabelValues(result).Inc()
	if r.inForce != nil && r.inForce.Expired(r.o.Now()) {
		r.apply(ctx, nil, ChangeTrustListExpired)
		r.results.WithLabelValues(RefreshExpired).Inc()
		slog.WarnContext(ctx, "residency: the trust list in force has expired; its servers are placed by the config alone",
			"issuer", r.tc.Issuer)
	}
	return result, err
}

func (r *Refresher) refresh(ctx context.Context) (string, error) {
	raw, err := r.fetch(ctx)
	if errors.Is(err, ErrTrustList) {
		return RefreshRefused, err
	}
	if err != nil {
		return RefreshFailed, err
	}
	tl, err := VerifyTrustList(raw, r.tc.Issuer, r.tc.KeyID, r.key)
	if err != nil {
		return RefreshRefused, err
	}
	if tl.Expired(r.o.Now()) {
		return RefreshRefused, fmt.Errorf("%w: version %d expired at %s", ErrTrustList, tl.Version,
			time.UnixMilli(tl.ExpiresTS).UTC().Format(time.RFC3339))
	}
	signed := mustSigned(raw)
	switch {
	case tl.Version < r.lastVersion:
		return RefreshRefused, fmt.Errorf("%w: version %d is older than version %d, accepted already (rollback)",
			ErrTrustList, tl.Version, r.lastVersion)
	case tl.Version == r.lastVersion && !bytes.Equal(signed, r.lastSigned):
		return RefreshRefused, fmt.Errorf("%w: version %d differs from the version %d accepted already; a changed list needs a new version",
			ErrTrustList, tl.Version, r.lastVersion)
	case tl.Version == r.lastVersion && r.inForce != nil:
		return RefreshUnchanged, nil
	}
	if err := r.o.Store.PutTrustList(ctx, storage.StoredTrustList{Issuer: r.tc.Issuer, Version: tl.Version, Document: raw,
		AcceptedTS: r.o.Now().UnixMilli()}); err != nil {
		if errors.Is(err, storage.ErrTrustListNewer) {
			return RefreshRefused, fmt.Errorf("%w: version %d: %v", ErrTrustList, tl.Version, err)
		}
		return RefreshFailed, err
	}
	r.lastVersion, r.lastSigned = tl.Version, signed
	r.apply(ctx, tl, ChangeTrustList)
	return RefreshApplied, nil
}

// apply puts tl in force (nil: none) and records the change.
func (r *Refresher) apply(ctx context.Context, tl *TrustList, cause string) {
	old := r.inForce
	before, after, ignored := r.o.Policy.SetTrustList(tl)
	r.inForce = tl
	var v int64
	if tl != nil {
		v = tl.Version
	}
	r.version.Set(float64(v))
	logIgnored(ctx, v, ignored)
	c := Change{Cause: cause, FingerprintBefore: before.Fingerprint(), TrustListIssuer: r.tc.Issuer,
		TrustListVersionBefore: before.TrustListVersion(), Ignored: ignored}
	c.fill(after)
	c.diffServers(old, tl)
	if err := recordChange(ctx, r.o.Store, r.o.Recorder, after, c, r.o.Now()); err != nil {
		slog.ErrorContext(ctx, "residency: recording a trust list change", "err", err)
	}
}

// diffServers fills the servers a change of list placed, unplaced and moved.
func (c *Change) diffServers(old, cur *TrustList) {
	var was, is map[string]string
	if old != nil {
		was = old.Servers
	}
	if cur != nil {
		is = cur.Servers
	}
	for s, z := range is {
		switch oz, ok := was[s]; {
		case !ok:
			c.ServersAddedCount++
			c.ServersAdded = appendBounded(c.ServersAdded, fmt.Sprintf("%s (%s)", s, z))
		case oz != z:
			c.ServersMovedCount++
			c.ServersMoved = appendBounded(c.ServersMoved, fmt.Sprintf("%s (%s → %s)", s, oz, z))
		}
	}
	for s, z := range was {
		if _, ok := is[s]; !ok {
			c.ServersRemovedCount++
			c.ServersRemoved = appendBounded(c.ServersRemoved, fmt.Sprintf("%s (%s)", s, z))
		}
	}
	slices.Sort(c.ServersAdded)
	slices.Sort(c.ServersRemoved)
	slices.Sort(c.ServersMoved)
}

func appendBounded(list []string, s string) []string {
	if len(list) >= maxChangeServers {
		return list
	}
	return append(list, s)
}

// fetch reads the document from the URL or the file, at most
// MaxTrustListBytes.
func (r *Refresher) fetch(ctx context.Context) ([]byte, error) {
	var body io.Reader
	if r.tc.File != "" {
		f, err := os.Open(r.tc.File)
		if err != nil {
			return nil, fmt.Errorf("reading the trust list: %w", err)
		}
		defer f.Close()
		body = f
	} else {
		ctx, cancel := context.WithTimeout(ctx, r.o.Timeout)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.tc.URL, nil)
		if err != nil {
			return nil, fmt.Errorf("fetching the trust list: %w", err)
		}
		resp, err := r.client.Do(req)
		if err != nil {
			return nil, fmt.Errorf("fetching the trust list: %w", err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("fetching the trust list from %s: HTTP %d", r.tc.URL, resp.StatusCode)
		}
		body = resp.Body
	}
	raw, err := io.ReadAll(io.LimitReader(body, MaxTrustListBytes+1))
	if err != nil {
		return nil, fmt.Errorf("reading the trust list: %w", err)
	}
	if len(raw) > MaxTrustListBytes {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrTrustList, MaxTrustListBytes)
	}
	return raw, nil
}

// InForce is the trust list in force (nil: none).
func (r *Refresher) InForce() *TrustList {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.inForce
}
