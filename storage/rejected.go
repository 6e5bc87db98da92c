package storage

import (
	"context"
	"encoding/json"
	"fmt"
)

// Rejected events (migration 0210): the IDs of received PDUs the auth rules
// refused, with their room, prev_events and the reason.

// RejectedEvent is one remembered rejection.
type RejectedEvent struct {
	EventID    string
	RoomID     string
	PrevEvents []string
	Reason     string
}

// maxRejectedReason bounds the stored reason.
const maxRejectedReason = 500

// RecordRejected remembers r (a second record of the same event keeps the
// first), then keeps only the newest keep rejections of its room.
func (db *DB) RecordRejected(ctx context.Context, r RejectedEvent, nowMS int64, keep int) error {
	prevs, err := json.Marshal(r.PrevEvents)
	if err != nil {
		return err
	}
	reason := r.Reason
	if len(reason) > maxRejectedReason {
		reason = reason[:maxRejectedReason]
	}
	return db.Tx(ctx, func(tx Querier) error {
		if _, err := tx.Exec(ctx, `INSERT INTO rejected_events (event_id, room_id, prev_events, reason, rejected_ts) VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (event_id) DO NOTHING`, r.EventID, r.RoomID, string(prevs), reason, nowMS); err != nil {
			return fmt.Errorf("recording a rejected event: %w", err)
		}
		if _, err := tx.Exec(ctx, `DELETE FROM rejected_events WHERE room_id = $1 AND event_id NOT IN (
			SELECT event_id FROM rejected_events WHERE room_id = $1 ORDER BY rejected_ts DESC, event_id DESC LIMIT $2)`,
			r.RoomID, keep); err != nil {
			return fmt.Errorf("trimming rejected events: %w", err)
		}
		return nil
	})
}

// RejectedEvents returns the remembered rejections among ids.
func (db *DB) RejectedEvents(ctx context.Context, ids []string) (map[string]RejectedEvent, error) {
	out := map[string]RejectedEvent{}
	err := inChunks(ids, func(chunk []string) error {
		rows, err := db.Query(ctx, `SELECT event_id, room_id, prev_events, reason FROM rejected_events WHERE event_id IN (`+placeholders(1, len(chunk))+`)`,
			anyArgs(chunk)...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var r RejectedEvent
			var prevs string
			if err := rows.Scan(&r.EventID, &r.RoomID, &prevs, &r.Reason); err != nil {
				return err
			}
			if err := json.Unmarshal([]byte(prevs), &r.PrevEvents); err != nil {
				return fmt.Errorf("decoding prev_events: %w", err)
			}
			out[r.EventID] = r
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("reading rejected events: %w", err)
	}
	return out, nil
}
