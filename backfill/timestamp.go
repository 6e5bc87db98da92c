package backfill

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"

	"maunium.net/go/mautrix/id"
)

// Bounds of a timestamp lookup (timestamp_to_event) that asks other servers.
const (
	// MaxTimestampServers is the most servers one lookup asks.
	MaxTimestampServers = 3
	// MaxTimestampRounds is the most backfill requests (Limit events each)
	// one lookup spends reaching the event a server named.
	MaxTimestampRounds = 5
	// oldestScan is how many of the room's oldest events are looked at for
	// the gap to backfill from.
	oldestScan = 20
)

// TimestampClient asks a server for the event of a room closest to a time
// (GET /_matrix/federation/v1/timestamp_to_event).
type TimestampClient interface {
	TimestampToEvent(ctx context.Context, server string, roomID id.RoomID, ts int64, forwards bool) (id.EventID, int64, error)
}

// ErrNoRemoteEvent: no server named an event this server could backfill.
var ErrNoRemoteEvent = errors.New("no server named an event that could be backfilled")

// EventNearTimestamp asks the room's other servers (those joined now, ours
// left out, at most MaxTimestampServers, Timeout each) for the event closest
// to ts in the given direction, and backfills from the server that named it
// until the event is in the room's timeline (at most MaxTimestampRounds
// requests), so that /context and /messages can read around it, as the
// server-server API's timestamp_to_event asks ("should try to backfill
// this event"). The event is verified like all backfilled history (the
// roomserver's ImportBackfill: hash, signatures, room, authorization);
// an event that never reaches the timeline is not answered. The caller
// reads the stored event (its timestamp, visibility) itself.
func (b *Backfiller) EventNearTimestamp(ctx context.Context, roomID id.RoomID, ts int64, forwards bool) (id.EventID, error) {
	if b.o.Timestamps == nil {
		return "", ErrNoRemoteEvent
	}
	joined, err := b.o.Store.JoinedServers(ctx, string(roomID))
	if err != nil {
		return "", fmt.Errorf("reading the servers of %s: %w", roomID, err)
	}
	var servers []string
	for _, s := range joined {
		if s != "" && s != b.o.ServerName && !slices.Contains(servers, s) && len(servers) < MaxTimestampServers {
			servers = append(servers, s)
		}
	}
	for _, srv := range servers {
		rctx, cancel := context.WithTimeout(ctx, b.o.Timeout)
		evID, _, err := b.o.Timestamps.TimestampToEvent(rctx, srv, roomID, ts, forwards)
		cancel()
		if err != nil {
			slog.Debug("timestamp_to_event: server failed", "room", roomID, "server", srv, "err", err)
			continue
		}
		if evID == "" {
			continue
		}
		ok, err := b.reach(ctx, srv, roomID, evID)
		if err != nil {
			slog.Info("timestamp_to_event: backfilling the event failed", "room", roomID, "server", srv, "event", evID, "err", err)
		}
		if ok {
			return evID, nil
		}
	}
	return "", ErrNoRemoteEvent
}

// reach backfills from srv, from where the history we have of the room
// begins, until target is in the timeline; it reports whether it is.
func (b *Backfiller) reach(ctx context.Context, srv string, roomID id.RoomID, target id.EventID) (bool, error) {
	for round := 0; ; round++ {
		known, err := b.o.Store.KnownEvents(ctx, []string{string(target)})
		if err != nil {
			return false, err
		}
		if known[string(target)] {
			return true, nil
		}
		if round >= MaxTimestampRounds || ctx.Err() != nil {
			return false, ctx.Err()
		}
		from, err := b.gapEvents(ctx, roomID)
		if err != nil || len(from) == 0 {
			return false, err // no gap left: the history we have is all there is
		}
		n, err := b.fromServer(ctx, srv, roomID, from)
		if err != nil {
			return false, err
		}
		if n == 0 {
			return false, nil
		}
	}
}

// gapEvents are the room's oldest timeline events some of whose
// prev_events we lack: the history before them is on other servers.
func (b *Backfiller) gapEvents(ctx context.Context, roomID id.RoomID) ([]id.EventID, error) {
	oldest, err := b.o.Store.OldestEvents(ctx, string(roomID), oldestScan)
	if err != nil {
		return nil, err
	}
	evs, err := b.o.Store.GetEvents(ctx, oldest)
	if err != nil {
		return nil, fmt.Errorf("loading the oldest events of %s: %w", roomID, err)
	}
	prevs := map[string][]string{}
	var all []string
	for _, x := range oldest {
		if e := evs[x]; e != nil {
			prevs[x] = refs(e.JSON, "prev_events")
			all = append(all, prevs[x]...)
		}
	}
	known, err := b.o.Store.KnownEvents(ctx, all)
	if err != nil {
		return nil, err
	}
	var out []id.EventID
	for _, x := range oldest {
		for _, p := range prevs[x] {
			if !known[p] {
				out = append(out, id.EventID(x))
				break
			}
		}
	}
	return out, nil
}
