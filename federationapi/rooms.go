package federationapi

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"

	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/federation"
	"github.com/myelin-chat/myelin/internal/mxhttp"
	"github.com/myelin-chat/myelin/internal/redact"
	"github.com/myelin-chat/myelin/residency"
	"github.com/myelin-chat/myelin/storage"
)

// GET /_matrix/federation/v1/event/{eventId}: the PDU, to a server that may
// see it. No room membership is needed for a world_readable event (the
// history visibility rules for servers); any other needs the server in the
// room now.
func (a *API) event(r *http.Request) (any, error) {
	ctx, origin := r.Context(), federation.Origin(r.Context())
	eventID, err := eventIDParam(mxhttp.PathParam(r, "eventId"))
	if err != nil {
		return nil, err
	}
	ev, err := a.rooms.Event(ctx, eventID)
	if err != nil {
		return nil, roomAnswer(err)
	}
	roomID := id.RoomID(ev.RoomID)
	if err := a.admitRoom(r, ev.RoomID, origin, residency.Events); err != nil {
		return nil, err
	}
	if err := a.checkACL(ctx, roomID, origin); err != nil {
		return nil, err
	}
	in, err := a.rooms.ServerInRoom(ctx, roomID, origin)
	if err != nil {
		return nil, err
	}
	ok, err := a.rooms.VisibilityFor(origin, in).CanSee(ctx, ev)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, mxhttp.Forbidden("Server %s may not see event %s", origin, eventID)
	}
	a.served(r, origin, residency.Events, ev.RoomID, 1)
	return a.transaction(ctx, []*storage.Event{ev})
}

// stateAt is the state before the event_id query parameter, for /state and
// /state_ids, and its auth chain, to a member server that may see the event.
func (a *API) stateAt(r *http.Request) (stateIDs []string, authChain []*storage.Event, err error) {
	ctx, origin := r.Context(), federation.Origin(r.Context())
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, nil, err
	}
	eventID, err := eventIDParam(r.URL.Query().Get("event_id"))
	if err != nil {
		return nil, nil, err
	}
	if err := a.member(r, roomID, origin); err != nil {
		return nil, nil, err
	}
	if _, err := a.visibleEvent(ctx, roomID, eventID, origin); err != nil {
		return nil, nil, err
	}
	if stateIDs, err = a.rooms.StateIDsAt(ctx, roomID, eventID); err != nil {
		return nil, nil, roomAnswer(err)
	}
	if authChain, err = a.rooms.AuthChain(ctx, stateIDs); err != nil {
		return nil, nil, roomAnswer(err)
	}
	return stateIDs, authChain, nil
}

// GET /_matrix/federation/v1/state/{roomId}?event_id=
func (a *API) state(r *http.Request) (any, error) {
	ids, chain, err := a.stateAt(r)
	if err != nil {
		return nil, err
	}
	state, err := a.rooms.Events(r.Context(), ids)
	if err != nil {
		return nil, err
	}
	a.served(r, federation.Origin(r.Context()), residency.Events, mxhttp.PathParam(r, "roomId"), len(state)+len(chain))
	return map[string]any{"pdus": pdus(state), "auth_chain": pdus(chain)}, nil
}

// GET /_matrix/federation/v1/state_ids/{roomId}?event_id=
func (a *API) stateIDs(r *http.Request) (any, error) {
	ids, chain, err := a.stateAt(r)
	if err != nil {
		return nil, err
	}
	a.served(r, federation.Origin(r.Context()), residency.Events, mxhttp.PathParam(r, "roomId"), len(ids)+len(chain))
	return map[string]any{"pdu_ids": ids, "auth_chain_ids": eventIDs(chain)}, nil
}

// GET /_matrix/federation/v1/event_auth/{roomId}/{eventId}: the event's full
// auth chain.
func (a *API) eventAuth(r *http.Request) (any, error) {
	ctx, origin := r.Context(), federation.Origin(r.Context())
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	eventID, err := eventIDParam(mxhttp.PathParam(r, "eventId"))
	if err != nil {
		return nil, err
	}
	if err := a.member(r, roomID, origin); err != nil {
		return nil, err
	}
	if _, err := a.visibleEvent(ctx, roomID, eventID, origin); err != nil {
		return nil, err
	}
	chain, err := a.rooms.AuthChain(ctx, []string{eventID})
	if err != nil {
		return nil, roomAnswer(err)
	}
	a.served(r, origin, residency.Events, string(roomID), len(chain))
	return map[string]any{"auth_chain": pdus(chain)}, nil
}

// GET /_matrix/federation/v1/backfill/{roomId}?v=&limit=: the v events and
// those before them through prev_events, deepest first, up to limit (capped
// at maxBackfillLimit), the ones the server may see.
func (a *API) backfill(r *http.Request) (any, error) {
	ctx, origin := r.Context(), federation.Origin(r.Context())
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	from := q["v"]
	if len(from) == 0 {
		return nil, mxhttp.MissingParam("v is required")
	}
	if len(from) > maxBackfillFrom {
		return nil, mxhttp.InvalidParam("At most %d v parameters", maxBackfillFrom)
	}
	for _, x := range from {
		if _, err := eventIDParam(x); err != nil {
			return nil, err
		}
	}
	limit, err := limitParam(q.Get("limit"), -1, maxBackfillLimit)
	if err != nil {
		return nil, err
	}
	if err := a.member(r, roomID, origin); err != nil {
		return nil, err
	}
	vis := a.rooms.VisibilityFor(origin, true)
	evs, err := a.rooms.WalkBack(ctx, roomID, from, nil, true, 0, limit, func(e *storage.Event) (bool, error) { return vis.CanSee(ctx, e) })
	if err != nil {
		return nil, roomAnswer(err)
	}
	a.served(r, origin, residency.Events, string(roomID), len(evs))
	return a.transaction(ctx, evs)
}

// limitParam parses a limit: required when def < 0, a positive integer,
// capped at max.
func limitParam(raw string, def, max int) (int, error) {
	if raw == "" {
		if def < 0 {
			return 0, mxhttp.MissingParam("limit is required")
		}
		return def, nil
	}
	n, err := strconv.ParseInt(raw, 10, 64)
	if err != nil || n < 1 {
		return 0, mxhttp.InvalidParam("limit must be a positive integer")
	}
	return int(min(n, int64(max))), nil
}

// POST /_matrix/federation/v1/get_missing_events/{roomId}: the events before
// latest_events back to earliest_events, at least min_depth deep, up to limit
// (capped at maxMissingLimit), oldest first, the ones the server may see.
func (a *API) missingEvents(r *http.Request) (any, error) {
	ctx, origin := r.Context(), federation.Origin(r.Context())
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	var body struct {
		Limit          *int64   `json:"limit"`
		MinDepth       *int64   `json:"min_depth"`
		EarliestEvents []string `json:"earliest_events"`
		LatestEvents   []string `json:"latest_events"`
	}
	if err := mxhttp.ReadJSON(r, &body); err != nil {
		return nil, err
	}
	if body.EarliestEvents == nil || body.LatestEvents == nil {
		return nil, mxhttp.BadJSON("earliest_events and latest_events are required")
	}
	if len(body.EarliestEvents) > maxMissingEventLists || len(body.LatestEvents) > maxMissingEventLists {
		return nil, mxhttp.InvalidParam("At most %d earliest_events and latest_events", maxMissingEventLists)
	}
	for _, x := range slices.Concat(body.EarliestEvents, body.LatestEvents) {
		if _, err := eventIDParam(x); err != nil {
			return nil, err
		}
	}
	limit := defaultMissingLimit
	if body.Limit != nil {
		if *body.Limit < 1 {
			return nil, mxhttp.InvalidParam("limit must be a positive integer")
		}
		limit = int(min(*body.Limit, maxMissingLimit))
	}
	var minDepth int64
	if body.MinDepth != nil {
		minDepth = *body.MinDepth
	}
	if err := a.member(r, roomID, origin); err != nil {
		return nil, err
	}
	// Events the server may not see are served redacted, not left out (as
	// Synapse, and Complement's TestInboundCanReturnMissingEvents expects):
	// the asker needs the DAG between its events whole to fill the gap,
	// and a redacted copy still carries the prev_events and auth_events.
	vis := a.rooms.VisibilityFor(origin, true)
	hidden := map[string]bool{}
	evs, err := a.rooms.WalkBack(ctx, roomID, body.LatestEvents, body.EarliestEvents, false, minDepth, limit,
		func(e *storage.Event) (bool, error) {
			ok, err := vis.CanSee(ctx, e)
			if err == nil && !ok {
				hidden[e.EventID] = true
			}
			return true, err
		})
	if err != nil {
		return nil, roomAnswer(err)
	}
	slices.Reverse(evs) // oldest first
	out, err := a.servedPDUs(ctx, evs)
	if err != nil {
		return nil, err
	}
	if len(hidden) > 0 {
		row, err := a.store.GetRoom(ctx, string(roomID))
		if err != nil {
			return nil, roomAnswer(err)
		}
		for i, e := range evs {
			if hidden[e.EventID] {
				if out[i], err = redact.PDU(id.RoomVersion(row.RoomVersion), e.JSON); err != nil {
					return nil, fmt.Errorf("redacting %s: %w", e.EventID, err)
				}
			}
		}
	}
	a.served(r, origin, residency.Events, string(roomID), len(out))
	return map[string]any{"events": out}, nil
}

// GET /_matrix/federation/v1/timestamp_to_event/{roomId}?ts=&dir=
func (a *API) timestampToEvent(r *http.Request) (any, error) {
	ctx, origin := r.Context(), federation.Origin(r.Context())
	roomID, err := roomIDParam(r)
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	ts, err := strconv.ParseInt(q.Get("ts"), 10, 64)
	if err != nil || ts < 0 {
		return nil, mxhttp.InvalidParam("ts must be a non-negative integer")
	}
	dir := q.Get("dir")
	if dir != "f" && dir != "b" {
		return nil, mxhttp.InvalidParam("dir must be f or b")
	}
	if err := a.member(r, roomID, origin); err != nil {
		return nil, err
	}
	ev, err := a.store.EventNearTimestamp(ctx, string(roomID), ts, dir == "f")
	if errors.Is(err, storage.ErrNotFound) {
		return nil, mxhttp.NotFound("No event found")
	}
	if err != nil {
		return nil, err
	}
	ok, err := a.rooms.VisibilityFor(origin, true).CanSee(ctx, ev)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, mxhttp.NotFound("No event found")
	}
	return map[string]any{"event_id": ev.EventID, "origin_server_ts": ev.OriginServerTS}, nil
}
