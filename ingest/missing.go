package ingest

import (
	"context"
	"slices"
	"sort"

	"maunium.net/go/mautrix/id"
)

// Bounds of the backwards walk for missing prev events.
const (
	missingLimit     = 10  // events per /get_missing_events
	missingRounds    = 20  // requests per PDU
	missingMaxEvents = 100 // events fetched per PDU
)

// FetchMissing is stage 2: when some prev_events of p are unknown, it asks
// origin for the events between our forward extremities and p
// (/get_missing_events), and feeds what it gets through the same pipeline
// (check, then the writer), oldest first, until p's prev_events are all
// known. A gap that remains is p's error. Nothing fetched is trusted: the
// writer verifies every event as it verifies p.
func (e *Engine) FetchMissing(ctx context.Context, origin string, p *PDU) error {
	missing, err := e.unknown(ctx, p.PrevEvents)
	if err != nil || len(missing) == 0 {
		return err
	}
	if e.o.Remote == nil {
		return fail("missing_prev", "prev events unknown: %v", missing)
	}
	row, err := e.o.Store.GetRoom(ctx, string(p.RoomID))
	if err != nil {
		return err
	}
	earliest := make([]id.EventID, len(row.Extremities))
	for i, x := range row.Extremities {
		earliest[i] = id.EventID(x)
	}

	pending := map[id.EventID]*PDU{} // fetched, not yet stored
	latest := []id.EventID{p.EventID}
	fetched := 0
	for round := 0; round < missingRounds && fetched < missingMaxEvents && len(latest) > 0; round++ {
		raws, err := e.o.Remote.GetMissingEvents(ctx, origin, p.RoomID, earliest, latest, min(missingLimit, missingMaxEvents-fetched))
		if err != nil {
			e.o.Logger.Info("get_missing_events failed", "origin", origin, "room", p.RoomID, "err", err)
			break
		}
		if len(raws) == 0 {
			break
		}
		for _, raw := range raws[:min(len(raws), missingLimit)] {
			fetched++
			q, err := parsePDU(raw, func(r id.RoomID) (id.RoomVersion, error) {
				if r != p.RoomID {
					return "", fail("bad_json", "event of another room")
				}
				return p.Version, nil
			})
			if err != nil || q.EventID == p.EventID {
				continue
			}
			pending[q.EventID] = q
		}
		// Store what can be stored, oldest first, until nothing moves.
		if err := e.storeReady(ctx, origin, pending); err != nil {
			return err
		}
		if missing, err = e.unknown(ctx, p.PrevEvents); err != nil || len(missing) == 0 {
			return err
		}
		// Walk further back from the oldest events still waiting.
		latest = latest[:0]
		for _, q := range pending {
			latest = append(latest, q.EventID)
		}
		slices.Sort(latest)
		if len(latest) > maxPrevEvents {
			latest = latest[:maxPrevEvents]
		}
	}
	return fail("missing_prev", "prev events unknown and not fetched: %v", missing)
}

// storeReady feeds pending events whose prev_events are all known to the
// writer, oldest first, repeating while any is stored. Rejected ones are dropped.
func (e *Engine) storeReady(ctx context.Context, origin string, pending map[id.EventID]*PDU) error {
	for {
		ready := make([]*PDU, 0, len(pending))
		for _, q := range pending {
			ready = append(ready, q)
		}
		sort.Slice(ready, func(i, j int) bool { return ready[i].Depth < ready[j].Depth })
		moved := false
		for _, q := range ready {
			unknown, err := e.unknown(ctx, q.PrevEvents)
			if err != nil {
				return err
			}
			if len(unknown) > 0 {
				continue
			}
			delete(pending, q.EventID)
			moved = true
			if res := e.Persist(ctx, origin, q); res != "" {
				e.o.Logger.Info("fetched event rejected", "event", q.EventID, "origin", origin, "err", res)
			}
		}
		if !moved {
			return nil
		}
	}
}

// unknown returns the events of ids this server has not stored.
func (e *Engine) unknown(ctx context.Context, ids []id.EventID) ([]id.EventID, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	want := make([]string, len(ids))
	for i, x := range ids {
		want[i] = string(x)
	}
	got, err := e.o.Store.GetEvents(ctx, want)
	if err != nil {
		return nil, err
	}
	var out []id.EventID
	for _, x := range ids {
		if _, ok := got[string(x)]; !ok {
			out = append(out, x)
		}
	}
	return out, nil
}
