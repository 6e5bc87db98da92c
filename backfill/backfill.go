// Package backfill fetches a room's history from other servers when a local
// user reads past the oldest events this server has (GET /messages): the
// network half of backfill (the server-server API's "Backfilling and
// retrieving missing events"). It asks the room's servers with
// GET /_matrix/federation/v1/backfill, fetches the auth events the answer
// lacks (/event_auth), and hands everything to the roomserver's
// ImportBackfill, which verifies and stores it network-free. roomview calls
// it through roomview.Backfiller.
package backfill

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/tidwall/gjson"
	"golang.org/x/sync/singleflight"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/storage"
)

// Bounds.
const (
	// Limit is the events asked of a server per request (the writer's
	// roomserver.MaxBackfillEvents).
	Limit = 100
	// MaxServers is the most servers one backfill tries.
	MaxServers = 5
	// MaxAuthFetches is the most /event_auth requests one answer may cost.
	MaxAuthFetches = 3
	// MaxAuthEvents bounds the auth events gathered for one answer
	// (roomserver.MaxBackfillAuthEvents).
	MaxAuthEvents = 500
	// emptyFor is how long a room where backfill found nothing is not asked
	// again; emptyMax bounds how many such rooms are remembered.
	emptyFor = 10 * time.Minute
	emptyMax = 10000
)

// Client is what backfill asks of other servers (the transport's client).
type Client interface {
	Backfill(ctx context.Context, server string, roomID id.RoomID, from []id.EventID, limit int) ([]json.RawMessage, error)
	EventAuth(ctx context.Context, server string, roomID id.RoomID, eventID id.EventID) ([]json.RawMessage, error)
}

// Rooms verifies and stores the answer (roomserver.Server.ImportBackfill).
type Rooms interface {
	ImportBackfill(ctx context.Context, roomID id.RoomID, from []id.EventID, events, authEvents []json.RawMessage) (int, error)
}

// Store is what backfill reads (*storage.DB).
type Store interface {
	GetEvents(ctx context.Context, ids []string) (map[string]*storage.Event, error)
	KnownEvents(ctx context.Context, ids []string) (map[string]bool, error)
	// JoinedServersAt: the servers in the room at the event we backfill from.
	JoinedServersAt(ctx context.Context, roomID string, pos int64) ([]string, error)
	JoinedServers(ctx context.Context, roomID string) ([]string, error)
	GetRoom(ctx context.Context, roomID string) (*storage.RoomRow, error)
	// OldestEvents: where the history we have of a room begins (timestamp lookups).
	OldestEvents(ctx context.Context, roomID string, limit int) ([]string, error)
}

// Options are what a Backfiller is built from.
type Options struct {
	ServerName string
	Client     Client
	Rooms      Rooms
	Store      Store
	// Timestamps asks servers for the event nearest a time
	// (EventNearTimestamp); nil: no remote lookups.
	Timestamps TimestampClient
	// Timeout bounds each server's answer (default 10 s).
	Timeout time.Duration
}

// Backfiller fetches history; safe for concurrent use.
type Backfiller struct {
	o     Options
	group singleflight.Group

	mu    sync.Mutex
	empty map[string]time.Time // room → when a backfill there last found nothing
}

// New builds a Backfiller.
func New(o Options) *Backfiller {
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	return &Backfiller{o: o, empty: map[string]time.Time{}}
}

// Backfill fetches and stores the history before from (our events of
// roomID whose prev_events we lack). Concurrent calls for a room share one
// fetch; a room where nothing was found is not asked again for a while.
// added reports whether anything was stored.
func (b *Backfiller) Backfill(ctx context.Context, roomID id.RoomID, from []id.EventID) (bool, error) {
	if len(from) == 0 {
		return false, nil
	}
	if len(from) > 20 {
		from = from[:20]
	}
	if b.recentlyEmpty(string(roomID)) {
		return false, nil
	}
	// The fetch outlives a caller that gives up: the others may wait for it.
	ch := b.group.DoChan(string(roomID), func() (any, error) {
		ctx := context.WithoutCancel(ctx)
		added, err := b.backfill(ctx, roomID, from)
		if !added {
			b.markEmpty(string(roomID))
		}
		return added, err
	})
	select {
	case r := <-ch:
		added, _ := r.Val.(bool)
		return added, r.Err
	case <-ctx.Done():
		return false, ctx.Err()
	}
}

func (b *Backfiller) backfill(ctx context.Context, roomID id.RoomID, from []id.EventID) (bool, error) {
	servers, err := b.servers(ctx, roomID, from)
	if err != nil {
		return false, err
	}
	var lastErr error
	for _, srv := range servers {
		n, err := b.fromServer(ctx, srv, roomID, from)
		if err != nil {
			slog.Info("backfill: server failed", "room", roomID, "server", srv, "err", err)
			lastErr = err
			continue
		}
		if n > 0 {
			return true, nil
		}
	}
	return false, lastErr
}

// servers are the servers to ask: those joined to the room at the latest of
// from, the senders' servers, then those joined now; ours left out, at most
// MaxServers.
func (b *Backfiller) servers(ctx context.Context, roomID id.RoomID, from []id.EventID) ([]string, error) {
	ids := make([]string, len(from))
	for i, x := range from {
		ids[i] = string(x)
	}
	evs, err := b.o.Store.GetEvents(ctx, ids)
	if err != nil {
		return nil, fmt.Errorf("loading the events to backfill from: %w", err)
	}
	var pos int64
	var senders []string
	found := false
	for _, e := range evs {
		if e.RoomID != string(roomID) {
			continue
		}
		if !found || e.StreamPos > pos {
			pos = e.StreamPos
		}
		found = true
		senders = append(senders, id.UserID(e.Sender).Homeserver())
	}
	if !found {
		return nil, nil
	}
	joined, err := b.o.Store.JoinedServersAt(ctx, string(roomID), pos)
	if err != nil {
		return nil, err
	}
	// Then the servers in the room now: in history older than our join the
	// membership events that JoinedServersAt undoes may be all it knows.
	now, err := b.o.Store.JoinedServers(ctx, string(roomID))
	if err != nil {
		return nil, err
	}
	var out []string
	for _, s := range slices.Concat(joined, senders, now) {
		if s != "" && s != b.o.ServerName && !slices.Contains(out, s) && len(out) < MaxServers {
			out = append(out, s)
		}
	}
	return out, nil
}

// fromServer asks one server and imports its answer.
func (b *Backfiller) fromServer(ctx context.Context, srv string, roomID id.RoomID, from []id.EventID) (int, error) {
	rctx, cancel := context.WithTimeout(ctx, b.o.Timeout)
	defer cancel()
	events, err := b.o.Client.Backfill(rctx, srv, roomID, from, Limit)
	if err != nil {
		return 0, fmt.Errorf("backfill: %w", err)
	}
	if len(events) > Limit {
		events = events[:Limit] // asked for Limit; the rest is not ours to take
	}
	if len(events) == 0 {
		return 0, nil
	}
	authEvents, err := b.missingAuth(ctx, srv, roomID, events)
	if err != nil {
		slog.Info("backfill: fetching auth events failed", "room", roomID, "server", srv, "err", err)
	}
	return b.o.Rooms.ImportBackfill(ctx, roomID, from, events, authEvents)
}

// refs reads a list of event references (room versions 1 and 2 write
// [id, hashes] pairs), at most 64.
func refs(raw []byte, field string) []string {
	var out []string
	gjson.GetBytes(raw, field).ForEach(func(_, v gjson.Result) bool {
		if v.IsArray() {
			v = v.Get("0")
		}
		if v.Type == gjson.String {
			out = append(out, v.Str)
		}
		return len(out) < 64
	})
	return out
}

// missingAuth fetches, from the server that answered, the auth chains of
// the answer's events whose auth events are neither stored nor in the
// answer: at most MaxAuthFetches requests and MaxAuthEvents events. The
// writer verifies them like the rest.
func (b *Backfiller) missingAuth(ctx context.Context, srv string, roomID id.RoomID, events []json.RawMessage) ([]json.RawMessage, error) {
	room, err := b.o.Store.GetRoom(ctx, string(roomID))
	if err != nil {
		return nil, fmt.Errorf("reading room %s: %w", roomID, err)
	}
	version := id.RoomVersion(room.RoomVersion)
	inAnswer := map[string]bool{}
	for _, e := range events {
		if x, err := eventID(version, e); err == nil {
			inAnswer[string(x)] = true
		}
	}
	var all []string
	for _, e := range events {
		all = append(all, refs(e, "auth_events")...)
	}
	known, err := b.o.Store.KnownEvents(ctx, all)
	if err != nil {
		return nil, err
	}
	var out []json.RawMessage
	fetches := 0
	for _, e := range events {
		missing := false
		for _, a := range refs(e, "auth_events") {
			if !known[a] && !inAnswer[a] {
				missing = true
			}
		}
		if !missing {
			continue
		}
		if fetches >= MaxAuthFetches || len(out) >= MaxAuthEvents {
			break
		}
		evID, err := eventID(version, e)
		if err != nil {
			continue
		}
		fetches++
		rctx, cancel := context.WithTimeout(ctx, b.o.Timeout)
		chain, err := b.o.Client.EventAuth(rctx, srv, roomID, evID)
		cancel()
		if err != nil {
			return out, fmt.Errorf("event_auth of %s: %w", evID, err)
		}
		for _, a := range chain {
			if len(out) >= MaxAuthEvents {
				break
			}
			out = append(out, a)
		}
		// What this chain brought counts as present for the next events.
		for _, a := range chain {
			if x, err := eventID(version, a); err == nil {
				inAnswer[string(x)] = true
			}
		}
	}
	return out, nil
}

// recentlyEmpty reports whether a backfill of room found nothing lately.
func (b *Backfiller) recentlyEmpty(room string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	t, ok := b.empty[room]
	if ok && time.Since(t) >= emptyFor {
		delete(b.empty, room)
		return false
	}
	return ok
}

func (b *Backfiller) markEmpty(room string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.empty) >= emptyMax {
		for r, t := range b.empty {
			if time.Since(t) >= emptyFor {
				delete(b.empty, r)
			}
		}
		if len(b.empty) >= emptyMax {
			clear(b.empty) // forgetting only means asking again
		}
	}
	b.empty[room] = time.Now()
}

// eventID is the ID of a PDU of the room version: its event_id field in
// versions 1 and 2, its reference hash after.
func eventID(version id.RoomVersion, raw json.RawMessage) (id.EventID, error) {
	if version.EventIDFormat() == id.EventIDFormatCustom {
		x := gjson.GetBytes(raw, "event_id").Str
		if x == "" {
			return "", fmt.Errorf("no event_id")
		}
		return id.EventID(x), nil
	}
	var p pdu.PDU
	if err := json.Unmarshal(raw, &p); err != nil {
		return "", err
	}
	return p.GetEventID(version)
}
