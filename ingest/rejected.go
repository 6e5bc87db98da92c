package ingest

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/roomserver"
	"github.com/myelin-chat/myelin/storage"
)

// rejectedPerRoom bounds the rejections remembered per room (the store trims
// the oldest).
const rejectedPerRoom = 10_000

// authRejection tells whether err is the writer refusing a verified event by
// the auth rules (against its auth events or the state before it): such an
// event is rejected and remembered. Bad JSON, bad signatures and unknown
// prev events are not: the event may yet arrive intact.
func authRejection(err error) bool {
	if !errors.Is(err, roomserver.ErrRejected) {
		return false
	}
	msg := err.Error()
	return !strings.Contains(msg, "state of missing prev events") &&
		(strings.Contains(msg, "auth events:") || strings.Contains(msg, "state before event:"))
}

// remember records p as rejected when err is an auth rejection (see
// authRejection). A failure to record is logged: p stays refused.
func (e *Engine) remember(ctx context.Context, p *PDU, err error) {
	if !authRejection(err) {
		return
	}
	e.record(ctx, p, err.Error())
}

func (e *Engine) record(ctx context.Context, p *PDU, reason string) {
	prevs := make([]string, len(p.PrevEvents))
	for i, x := range p.PrevEvents {
		prevs[i] = string(x)
	}
	r := storage.RejectedEvent{EventID: string(p.EventID), RoomID: string(p.RoomID), PrevEvents: prevs, Reason: reason}
	if err := e.o.Store.RecordRejected(ctx, r, time.Now().UnixMilli(), rejectedPerRoom); err != nil {
		e.o.Logger.Warn("recording a rejected event", "event", p.EventID, "err", err)
	}
}

// checkRejected refuses p when it was rejected before (without checking it
// again), and rejects (and remembers) p when one of its auth_events was
// rejected: an event authorized by a rejected event is rejected
// (Complement's TestInboundFederationRejectsEventsWithRejectedAuthEvents).
func (e *Engine) checkRejected(ctx context.Context, p *PDU) error {
	ids := []string{string(p.EventID)}
	auth := gjson.GetBytes(p.Raw, "auth_events").Array()
	for _, a := range auth[:min(len(auth), maxAuthEvents)] {
		if a.Type == gjson.String {
			ids = append(ids, a.Str)
		}
	}
	got, err := e.o.Store.RejectedEvents(ctx, ids)
	if err != nil || len(got) == 0 {
		return err
	}
	if r, ok := got[string(p.EventID)]; ok {
		return fail("auth", "event rejected earlier: %s", r.Reason)
	}
	for _, x := range ids[1:] {
		if _, ok := got[x]; ok {
			reason := "auth event " + x + " was rejected"
			e.record(ctx, p, reason)
			return fail("auth", "event rejected: %s", reason)
		}
	}
	return nil
}

// maxAuthEvents bounds the auth_events looked up (the auth rules allow at
// most 10 in any room version; more is the writer's error to report).
const maxAuthEvents = 10

// fillFromRejected handles p whose unknown prev events were all rejected
// here (remembered, never stored): the state after each is the state before
// it, which the writer resolves from its own prev_events
// (roomserver.PrevState.RejectedPrevs); nothing is fetched. It reports
// whether it applied (false: some unknown prev is not a remembered
// rejection, get_missing_events follows).
func (e *Engine) fillFromRejected(ctx context.Context, origin string, p *PDU, missing []id.EventID) (bool, error) {
	ids := make([]string, len(missing))
	for i, x := range missing {
		ids[i] = string(x)
	}
	got, err := e.o.Store.RejectedEvents(ctx, ids)
	if err != nil || len(got) != len(missing) {
		return false, err
	}
	prevs := make([]roomserver.PrevState, 0, len(missing))
	for _, x := range missing {
		r := got[string(x)]
		if r.RoomID != string(p.RoomID) {
			return false, nil
		}
		before, err := e.beforeRejected(ctx, r)
		if err != nil || len(before) == 0 {
			return false, err
		}
		prevs = append(prevs, roomserver.PrevState{EventID: x, RejectedPrevs: before})
	}
	if _, err := e.o.Rooms.InputWithState(ctx, p.RoomID, p.Raw, origin, prevs, nil); err != nil {
		if errors.Is(err, roomserver.ErrRejected) {
			e.remember(ctx, p, err)
			return true, err
		}
		e.o.Logger.Warn("storing a PDU after rejected prev events", "event", p.EventID, "origin", origin, "err", err)
		return true, fail("internal", "internal error")
	}
	return true, nil
}

// Bounds of the walk back through a chain of rejected events.
const (
	maxRejectedHops  = 10
	maxRejectedPrevs = 20
)

// beforeRejected is where the state before the rejected event r comes from:
// its prev events, those rejected too replaced by their own prevs (at most
// maxRejectedHops deep), so that each is a stored event. Empty when the walk
// ends at an event neither stored in the timeline nor remembered, or exceeds
// its bounds.
func (e *Engine) beforeRejected(ctx context.Context, r storage.RejectedEvent) ([]id.EventID, error) {
	var out []id.EventID
	seen := map[string]bool{}
	frontier := r.PrevEvents
	for hop := 0; len(frontier) > 0; hop++ {
		if hop == maxRejectedHops || len(frontier) > maxRejectedPrevs {
			return nil, nil
		}
		stored, err := e.o.Store.GetEvents(ctx, frontier)
		if err != nil {
			return nil, err
		}
		rejected, err := e.o.Store.RejectedEvents(ctx, frontier)
		if err != nil {
			return nil, err
		}
		var next []string
		for _, x := range frontier {
			if seen[x] {
				continue
			}
			seen[x] = true
			if se, ok := stored[x]; ok && !se.Outlier && se.RoomID == r.RoomID {
				out = append(out, id.EventID(x))
			} else if rr, ok := rejected[x]; ok && rr.RoomID == r.RoomID {
				next = append(next, rr.PrevEvents...)
			} else {
				return nil, nil
			}
		}
		frontier = next
	}
	if len(out) > maxRejectedPrevs {
		return nil, nil
	}
	return out, nil
}
