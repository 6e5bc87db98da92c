package retention

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/internal/config"
	"github.com/myelin-chat/myelin/internal/redact"
	"github.com/myelin-chat/myelin/storage"
)

// Store is what the purge needs from the shared store (storage/retention.go).
type Store interface {
	RetentionRooms(ctx context.Context, after string, limit int, withPolicyOnly bool) ([]storage.RetentionRoom, error)
	ExpiredEvents(ctx context.Context, roomID string, before int64, limit int) ([]storage.ExpiredEvent, error)
	PurgeEvents(ctx context.Context, redacted []storage.Redaction, mediaURIs []string) (int, error)
	PurgedMedia(ctx context.Context, limit int) ([]string, error)
	MediaStillNamed(ctx context.Context, uri string) (bool, error)
	ForgetPurgedMedia(ctx context.Context, uri string) error
}

// Media deletes a media item with its thumbnails (mediaapi).
type Media interface {
	Delete(ctx context.Context, origin, mediaID string) error
}

// ZoneDefaults gives the default retention policy of the residency zone a
// room is resident in, when that zone sets one (residency.zones[].retention):
// it replaces retention.default_policy for that room.
type ZoneDefaults interface {
	DefaultFor(ctx context.Context, roomID string) (config.RetentionPolicy, bool)
}

// Options build a Purger.
type Options struct {
	Store  Store
	Media  Media
	Config config.Retention
	// Zones: per-zone defaults (nil: retention.default_policy for every room).
	Zones ZoneDefaults
	// Now is the clock (tests); nil: time.Now.
	Now func() time.Time
}

// Purger runs the purge every Config.PurgeInterval while retention is
// enabled, from New until Close.
type Purger struct {
	store  Store
	media  Media
	bounds Bounds
	zones  ZoneDefaults
	batch  int
	now    func() time.Time

	cancel context.CancelFunc
	done   chan struct{}
	mu     sync.Mutex // one run at a time (the timer's, a test's)
}

// Stats counts what one run did.
type Stats struct {
	Rooms        int // rooms with a lifetime
	Events       int // events redacted
	Batches      int // purge transactions
	MediaDeleted int
}

const (
	roomPage   = 100
	mediaPage  = 100
	maxMXCURIs = 64 // per event: content naming more is cut there
	batchPause = 5 * time.Millisecond
)

// New builds the purger and, when retention is enabled, starts its timer
// (the first run right away).
func New(o Options) *Purger {
	c := o.Config
	p := &Purger{store: o.Store, media: o.Media, now: o.Now, zones: o.Zones, batch: min(max(c.BatchSize, 1), config.MaxRetentionBatch),
		bounds: Bounds{MinLifetime: c.MinLifetime.Duration, MaxLifetime: c.MaxLifetime.Duration,
			Default: Policy{MinLifetime: c.DefaultPolicy.MinLifetime.Duration, MaxLifetime: c.DefaultPolicy.MaxLifetime.Duration}},
		done: make(chan struct{})}
	if p.now == nil {
		p.now = time.Now
	}
	if !c.Enabled {
		close(p.done)
		return p
	}
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	go p.loop(ctx, c.PurgeInterval.Duration)
	return p
}

// Close stops the timer and waits for a run in progress: its current batch
// is rolled back or committed whole, so nothing is left half-purged.
func (p *Purger) Close() {
	if p.cancel != nil {
		p.cancel()
	}
	<-p.done
}

func (p *Purger) loop(ctx context.Context, interval time.Duration) {
	defer close(p.done)
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		start := time.Now()
		st, err := p.Run(ctx)
		if err != nil && ctx.Err() == nil {
			slog.Warn("retention purge", "err", err)
		}
		if st.Events > 0 || st.MediaDeleted > 0 {
			slog.Info("retention purge", "rooms", st.Rooms, "events", st.Events, "batches", st.Batches,
				"media_deleted", st.MediaDeleted, "took", time.Since(start))
		}
		t.Reset(interval)
	}
}

// Run purges every room once: the expired events of each room with a
// lifetime, in batches of at most Config.BatchSize events (one transaction
// each), then the media the purged events alone named.
func (p *Purger) Run(ctx context.Context) (Stats, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var st Stats
	// Without a default lifetime (the server's or a zone's), only rooms with
	// a policy can have one.
	_, all := p.bounds.Lifetime(nil)
	all = all || p.zones != nil
	after := ""
	for {
		rooms, err := p.store.RetentionRooms(ctx, after, roomPage, !all)
		if err != nil {
			return st, err
		}
		for _, r := range rooms {
			var room *Policy
			if r.Policy != "" {
				pol := ParsePolicy(r.Policy)
				room = &pol
			}
			lifetime, ok := p.roomBounds(ctx, r.RoomID).Lifetime(room)
			if !ok {
				continue
			}
			st.Rooms++
			if err := p.purgeRoom(ctx, r, p.now().Add(-lifetime).UnixMilli(), &st); err != nil {
				return st, err
			}
		}
		if len(rooms) < roomPage {
			break
		}
		after = rooms[len(rooms)-1].RoomID
	}
	return st, p.deleteMedia(ctx, &st)
}

// roomBounds are the server's bounds with the default policy of the room's
// residency zone, when its zone sets one.
func (p *Purger) roomBounds(ctx context.Context, roomID string) Bounds {
	b := p.bounds
	if p.zones != nil {
		if d, ok := p.zones.DefaultFor(ctx, roomID); ok {
			b.Default = Policy{MinLifetime: d.MinLifetime.Duration, MaxLifetime: d.MaxLifetime.Duration}
		}
	}
	return b
}

// purgeRoom redacts a room's events sent before the cutoff, batch by batch.
func (p *Purger) purgeRoom(ctx context.Context, r storage.RetentionRoom, before int64, st *Stats) error {
	version := id.RoomVersion(r.RoomVersion)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		evs, err := p.store.ExpiredEvents(ctx, r.RoomID, before, p.batch)
		if err != nil {
			return err
		}
		if len(evs) == 0 {
			return nil
		}
		reds := make([]storage.Redaction, 0, len(evs))
		var uris []string
		seen := map[string]bool{}
		for _, e := range evs {
			red, err := redact.PDU(version, e.JSON)
			if err != nil {
				// Left as it is (logged): stored events are parsed PDUs, so this is a corrupt row.
				slog.Warn("retention purge: cannot redact", "event_id", e.EventID, "err", err)
				continue
			}
			reds = append(reds, storage.Redaction{EventID: e.EventID, RedactedBy: storage.RetentionPurged, RedactedJSON: red})
			for _, u := range mxcURIs(gjson.GetBytes(e.JSON, "content")) {
				if !seen[u] {
					seen[u] = true
					uris = append(uris, u)
				}
			}
		}
		if len(reds) == 0 {
			return nil // nothing this batch can purge: the next run tries again
		}
		n, err := p.store.PurgeEvents(ctx, reds, uris)
		if err != nil {
			return err
		}
		st.Events += n
		st.Batches++
		if len(evs) < p.batch {
			return nil
		}
		// A breath between batches: sends queued behind this batch's
		// transaction take the write lock before the next one does.
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(batchPause):
		}
	}
}

// deleteMedia deletes the media purged events named that nothing else names
// any more (no event kept, no profile), and forgets each URI handled.
func (p *Purger) deleteMedia(ctx context.Context, st *Stats) error {
	for {
		uris, err := p.store.PurgedMedia(ctx, mediaPage)
		if err != nil {
			return err
		}
		for _, uri := range uris {
			named, err := p.store.MediaStillNamed(ctx, uri)
			if err != nil {
				return err
			}
			if !named {
				origin, mediaID, _ := strings.Cut(strings.TrimPrefix(uri, "mxc://"), "/")
				if err := p.media.Delete(ctx, origin, mediaID); err != nil {
					return fmt.Errorf("deleting purged media %s: %w", uri, err)
				}
				st.MediaDeleted++
			}
			if err := p.store.ForgetPurgedMedia(ctx, uri); err != nil {
				return err
			}
		}
		if len(uris) < mediaPage {
			return nil
		}
	}
}

// mxcURIs are the well-formed mxc:// URIs anywhere in an event's content
// (url, info.thumbnail_url, file.url of encrypted attachments, ...).
func mxcURIs(content gjson.Result) []string {
	var out []string
	var walk func(v gjson.Result)
	walk = func(v gjson.Result) {
		if len(out) >= maxMXCURIs {
			return
		}
		switch {
		case v.IsObject() || v.IsArray():
			v.ForEach(func(_, x gjson.Result) bool { walk(x); return len(out) < maxMXCURIs })
		case v.Type == gjson.String && validMXC(v.Str):
			out = append(out, v.Str)
		}
	}
	walk(content)
	return out
}

// validMXC: mxc://<server name>/<media ID>, a media ID of the characters the
// spec allows (A-Z a-z 0-9 _ -).
func validMXC(s string) bool {
	rest, ok := strings.CutPrefix(s, "mxc://")
	if !ok {
		return false
	}
	server, mediaID, ok := strings.Cut(rest, "/")
	if !ok || server == "" || mediaID == "" || len(s) > 512 {
		return false
	}
	for _, c := range mediaID {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return !strings.ContainsAny(server, "/%\\ ")
}
