package roomview

import (
	"context"
	"log/slog"
	"time"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/storage"
)

// backfillTimeout bounds how long one /messages waits for other servers.
const backfillTimeout = 15 * time.Second

// maxBackfills bounds the backfills one /messages request waits for.
const maxBackfills = 2

// maxGapEvents bounds the events one backfill starts from.
const maxGapEvents = 20

// prevEvents are an event's prev_events (room versions 1 and 2 write
// [id, hashes] pairs).
func prevEvents(se *storage.Event) []string {
	var out []string
	gjson.GetBytes(se.JSON, "prev_events").ForEach(func(_, v gjson.Result) bool {
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

// gapsIn returns the events of batch some of whose prev_events are not
// stored: history before them lives on other servers.
func (s *Service) gapsIn(ctx context.Context, batch []*storage.Event) (map[string]bool, error) {
	prevs := map[string][]string{}
	var all []string
	for _, se := range batch {
		p := prevEvents(se)
		prevs[se.EventID] = p
		all = append(all, p...)
	}
	if len(all) == 0 {
		return nil, nil
	}
	known, err := s.db.KnownEvents(ctx, all)
	if err != nil {
		return nil, err
	}
	var gaps map[string]bool
	for x, ps := range prevs {
		for _, p := range ps {
			if !known[p] {
				if gaps == nil {
					gaps = map[string]bool{}
				}
				gaps[x] = true
				break
			}
		}
	}
	return gaps, nil
}

// backfillBefore asks the backfiller for the history before the batch's gap
// events; it reports whether anything was stored. A failure is logged, not
// answered: /messages goes on with what it has.
func (s *Service) backfillBefore(ctx context.Context, roomID id.RoomID, batch []*storage.Event, gaps map[string]bool) bool {
	var from []id.EventID
	for _, se := range batch {
		if gaps[se.EventID] && len(from) < maxGapEvents {
			from = append(from, id.EventID(se.EventID))
		}
	}
	ctx, cancel := context.WithTimeout(ctx, backfillTimeout)
	defer cancel()
	added, err := s.backfill.Backfill(ctx, roomID, from)
	if err != nil {
		slog.Info("backfill failed", "room", roomID, "err", err)
	}
	return added
}

// backfillAtToken backfills before the event a backward /messages token
// names by its position (from, a topological token just before it), when
// that event is stored after a gap (storage.Event.AfterGap) whose history
// is still missing: /sync's prev_batch of a timeline cut at a gap is such a
// token, and the page read from it holds only events before the gap event,
// so the batch reads would never see the gap. It reports whether a backfill
// was attempted. One indexed read of one row otherwise.
func (s *Service) backfillAtToken(ctx context.Context, roomID id.RoomID, token string, from storage.TopoPos) (bool, error) {
	if t, err := ParseToken(token); err != nil || !t.Topological {
		return false, nil
	}
	next := storage.TopoPos{Depth: from.Depth, Stream: from.Stream + 1}
	evs, err := s.db.RoomEventsByTopology(ctx, string(roomID), from, &next, false, 1, nil)
	if err != nil || len(evs) == 0 || !evs[0].AfterGap {
		return false, err
	}
	gaps, err := s.gapsIn(ctx, evs)
	if err != nil || len(gaps) == 0 {
		return false, err
	}
	s.backfillBefore(ctx, roomID, evs, gaps)
	return true, nil
}
