package ingest

import (
	"context"
	"encoding/json"
	"errors"
	"sync"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/roomserver"
)

// StateRemote asks other servers for the state at an event and for single
// events: the /state_ids fallback (backed by the transport's client, whose
// response caps bound each answer).
type StateRemote interface {
	// StateIDs is GET /_matrix/federation/v1/state_ids/{roomID}?event_id=: the
	// state before eventID and the auth chain of that state.
	StateIDs(ctx context.Context, server string, roomID id.RoomID, eventID id.EventID) (state, authChain []id.EventID, err error)
	// Event is GET /_matrix/federation/v1/event/{eventID}: the PDU.
	Event(ctx context.Context, server string, eventID id.EventID) (json.RawMessage, error)
}

const (
	// maxStateFetch bounds the events fetched for one PDU's gap (the writer's
	// bound: roomserver.MaxGapEvents).
	maxStateFetch = roomserver.MaxGapEvents
	// stateFetchConcurrency bounds the /event requests in flight for one PDU.
	stateFetchConcurrency = 8
	// maxStateIDs bounds one /state_ids answer (state plus auth chain).
	maxStateIDs = roomserver.MaxImportEvents
)

// FillFromState is the /state_ids fallback of stage 2, for a PDU q whose
// prev events get_missing_events did not bring: for each unknown prev, the
// state before it is asked of origin (/state_ids); the events of those states
// and auth chains the store lacks, the prevs themselves and q's own auth
// events are fetched one by one (/event, at most maxStateFetch in all,
// stateFetchConcurrency at once, auth events the fetched ones name fetched in
// further rounds within the same bound); an answer whose content hashes to
// another event ID is dropped. The writer (InputWithState) verifies all of
// it, stores the accepted events as outliers and q with the resolved state
// before it, or refuses q. Stops when ctx ends.
func (e *Engine) FillFromState(ctx context.Context, origin string, q *PDU) error {
	if e.o.State == nil {
		return fail("missing_prev", "prev events unknown")
	}
	missing, err := e.unknown(ctx, q.PrevEvents)
	if err != nil || len(missing) == 0 {
		return err
	}
	var prevs []roomserver.PrevState
	var want []id.EventID
	seen := map[id.EventID]bool{}
	add := func(ids ...id.EventID) {
		for _, x := range ids {
			if !seen[x] && x != q.EventID {
				seen[x] = true
				want = append(want, x)
			}
		}
	}
	for _, m := range missing {
		state, chain, err := e.o.State.StateIDs(ctx, origin, q.RoomID, m)
		if err != nil {
			e.o.Logger.Info("state_ids failed", "origin", origin, "room", q.RoomID, "event", m, "err", err)
			return fail("missing_state", "prev event %s unknown and its state not fetched", m)
		}
		if len(state)+len(chain) > maxStateIDs {
			return fail("missing_state", "the state at prev event %s exceeds %d events", m, maxStateIDs)
		}
		prevs = append(prevs, roomserver.PrevState{EventID: m, State: state})
		add(m)
		add(state...)
		add(chain...)
	}
	for _, a := range gjson.GetBytes(q.Raw, "auth_events").Array() {
		add(id.EventID(a.Str))
	}
	fetched := map[id.EventID]json.RawMessage{}
	budget := maxStateFetch
	for len(want) > 0 && ctx.Err() == nil {
		absent, err := e.absent(ctx, want)
		if err != nil {
			return err
		}
		if len(absent) > budget {
			return fail("missing_state", "the state at the prev events needs more than %d events", maxStateFetch)
		}
		budget -= len(absent)
		got := e.fetchEvents(ctx, origin, q, absent)
		want = nil
		for x, raw := range got {
			fetched[x] = raw
			for _, a := range gjson.GetBytes(raw, "auth_events").Array() {
				add(id.EventID(a.Str)) // named auth events not fetched yet: the next round
			}
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	raws := make([]json.RawMessage, 0, len(fetched))
	for _, raw := range fetched {
		raws = append(raws, raw)
	}
	if _, err := e.o.Rooms.InputWithState(ctx, q.RoomID, q.Raw, origin, prevs, raws); err != nil {
		if errors.Is(err, roomserver.ErrRejected) {
			e.remember(ctx, q, err)
			return err
		}
		e.o.Logger.Warn("storing a PDU with the state of its prevs", "event", q.EventID, "origin", origin, "err", err)
		return fail("internal", "internal error")
	}
	return nil
}

// fetchEvents asks origin for each event of ids (stateFetchConcurrency at a
// time) and keeps those that parse as events of q's room with the ID asked.
func (e *Engine) fetchEvents(ctx context.Context, origin string, q *PDU, ids []id.EventID) map[id.EventID]json.RawMessage {
	out := map[id.EventID]json.RawMessage{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, stateFetchConcurrency)
	for _, x := range ids {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return out
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			raw, err := e.o.State.Event(ctx, origin, x)
			if err != nil {
				e.o.Logger.Info("fetching an event failed", "origin", origin, "event", x, "err", err)
				return
			}
			ev, err := parsePDU(raw, func(r id.RoomID) (id.RoomVersion, error) {
				if r != q.RoomID {
					return "", fail("bad_json", "event of another room")
				}
				return q.Version, nil
			})
			if err != nil || ev.EventID != x {
				e.o.Logger.Info("fetched event dropped", "origin", origin, "asked", x, "err", err)
				return
			}
			mu.Lock()
			out[x] = raw
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out
}

// absent returns the events of ids this server has not stored at all
// (outliers included: they serve as auth and state events) nor rejected.
func (e *Engine) absent(ctx context.Context, ids []id.EventID) ([]id.EventID, error) {
	want := make([]string, len(ids))
	for i, x := range ids {
		want[i] = string(x)
	}
	got, err := e.o.Store.GetEvents(ctx, want)
	if err != nil {
		return nil, err
	}
	rejected, err := e.o.Store.RejectedEvents(ctx, want)
	if err != nil {
		return nil, err
	}
	var out []id.EventID
	for _, x := range ids {
		_, ok := got[string(x)]
		if _, bad := rejected[string(x)]; !ok && !bad { // a rejected one is not fetched again
			out = append(out, x)
		}
	}
	return out, nil
}
