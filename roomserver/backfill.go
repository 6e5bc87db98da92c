package roomserver

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"

	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/storage"
)

// Bounds of one backfill import.
const (
	// MaxBackfillEvents is the most events one backfill answer may hold (the
	// limit we ask for; the spec caps nothing, our own answers 100).
	MaxBackfillEvents = 100
	// MaxBackfillAuthEvents bounds the auth events fetched besides them.
	MaxBackfillAuthEvents = 500
	// MaxBackfillFrom bounds the events backfilled from.
	MaxBackfillFrom = 20
)

// ImportBackfill stores history fetched from another server with /backfill:
// events that precede what this server has of roomID. from are our stored
// events whose prev_events we lack; events is the answer; authEvents are
// auth events fetched besides it. Nothing is trusted: each event must parse
// in the room's version, be of the room, within the size limits and signed
// by its sender's server (a content hash mismatch keeps the redacted form),
// authorized by its own auth events (stored ones, or in the answer or
// authEvents, verified the same way), and precede what we have: its ID is
// among the prev_events of from, or of events accepted before it. Anything
// else is ignored. The accepted events are stored as history (negative
// stream positions, storage.InsertHistoricalEvents), each with the state of
// the stored event it precedes (its state_before snapshot): see
// docs/architecture.md, "Backfill". It changes no room state, so it does not
// go through the room's worker. It returns how many events were stored.
func (s *Server) ImportBackfill(ctx context.Context, roomID id.RoomID, from []id.EventID, events, authEvents []json.RawMessage) (int, error) {
	if len(from) == 0 || len(from) > MaxBackfillFrom || len(events) > MaxBackfillEvents || len(authEvents) > MaxBackfillAuthEvents {
		return 0, InvalidParam("Backfill import out of bounds")
	}
	version, err := RoomVersion(ctx, s.db, roomID)
	if err != nil {
		return 0, err
	}
	// wanted: the events we lack that precede what we have, each with the
	// snapshot of the state of the event it precedes.
	wanted := map[id.EventID]int64{}
	stored, err := s.db.GetEvents(ctx, idStrings(from))
	if err != nil {
		return 0, fmt.Errorf("loading the events to backfill from: %w", err)
	}
	for _, x := range from {
		se := stored[string(x)]
		if se == nil || se.RoomID != string(roomID) {
			continue
		}
		e, err := eventFromStored(version, se)
		if err != nil {
			return 0, err
		}
		for _, p := range e.PDU.PrevEvents {
			wanted[p] = se.StateBefore
		}
	}
	if len(wanted) == 0 {
		return 0, nil
	}
	byID := map[id.EventID]*Event{}
	var candidates []*Event
	for i, list := range [][]json.RawMessage{events, authEvents} {
		for _, raw := range list {
			ev, err := s.parseReceived(version, roomID, raw)
			if err != nil {
				continue // forged, unsigned, of another room: ignored
			}
			if _, dup := byID[ev.ID]; dup {
				continue
			}
			byID[ev.ID] = ev
			if i == 0 {
				candidates = append(candidates, ev)
			}
		}
	}
	// What we already have is not imported again, and stored auth events
	// count as accepted (they were verified when stored).
	var refs []string
	for _, e := range byID {
		refs = append(refs, string(e.ID))
		for _, a := range e.PDU.AuthEvents {
			refs = append(refs, string(a))
		}
	}
	known, err := s.db.GetEvents(ctx, refs)
	if err != nil {
		return 0, fmt.Errorf("loading known events: %w", err)
	}
	auth := s.newEventSet(version)
	auth.byID, auth.stored = byID, map[id.EventID]*Event{}
	for _, se := range known {
		if se.RoomID != string(roomID) || se.SoftFailed {
			continue
		}
		e, err := eventFromStored(version, se)
		if err != nil {
			return 0, err
		}
		auth.stored[e.ID] = e
	}
	// Newest first; an accepted event's prev_events are wanted in turn.
	slices.SortStableFunc(candidates, func(a, b *Event) int { return cmp.Compare(b.PDU.Depth, a.PDU.Depth) })
	var accepted []*Event
	taken := map[id.EventID]bool{}
	for progress := true; progress; {
		progress = false
		for _, e := range candidates {
			snap, ok := wanted[e.ID]
			// An outlier (stored for its auth/state role only) is imported
			// as history; a timeline event we have is not imported again.
			if k := known[string(e.ID)]; !ok || taken[e.ID] || (k != nil && !k.Outlier) {
				continue
			}
			taken[e.ID] = true
			if !auth.visit(e, 0) {
				continue
			}
			e.StateBefore, e.StateAfter = snap, snap
			accepted = append(accepted, e)
			for _, p := range e.PDU.PrevEvents {
				if _, ok := wanted[p]; !ok {
					wanted[p] = snap
				}
			}
			progress = true
		}
	}
	if len(accepted) == 0 {
		return 0, nil
	}
	slices.SortStableFunc(accepted, func(a, b *Event) int { return cmp.Compare(a.PDU.Depth, b.PDU.Depth) })
	// A redaction we have of an event we did not have then applies now (it
	// is kept whatever its sender's power: over-redacting history is safe).
	redactions, err := s.db.RedactionTargets(ctx, string(roomID))
	if err != nil {
		return 0, err
	}
	for i, e := range accepted {
		if by, ok := redactions[string(e.ID)]; ok {
			red, err := redactedEvent(e)
			if err != nil {
				return 0, err
			}
			red.StateBefore, red.StateAfter, red.RedactedBy = e.StateBefore, e.StateAfter, by
			accepted[i] = red
		}
	}
	rows := make([]storage.Event, len(accepted))
	for i, e := range accepted {
		relatesTo, relType := relation(e)
		rows[i] = storage.Event{
			EventID: string(e.ID), RoomID: string(roomID), Depth: e.PDU.Depth, Type: e.PDU.Type,
			StateKey: e.PDU.StateKey, Sender: string(e.PDU.Sender), OriginServerTS: e.PDU.OriginServerTS, JSON: e.JSON,
			StateBefore: e.StateBefore, StateAfter: e.StateAfter, RelatesTo: relatesTo, RelType: relType, RedactedBy: e.RedactedBy,
		}
		if e.PDU.Type == "m.room.member" && e.PDU.StateKey != nil {
			rows[i].Membership = e.Membership()
		}
	}
	inserted, err := s.db.InsertHistoricalEvents(ctx, string(roomID), rows)
	if err != nil {
		return 0, fmt.Errorf("storing backfilled events: %w", err)
	}
	return len(inserted), nil
}
