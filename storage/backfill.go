package storage

import (
	"context"
	"fmt"
	"sync"

	"github.com/tidwall/gjson"
)

// Backfilled history: events older than everything the server had of a room
// (fetched from other servers with /backfill) are stored with negative stream
// positions, below every position the stream allocator hands out, so /sync
// and the followers (which read positions after a cursor ≥ 0) never see them
// as new, and /messages, which orders by (depth, stream_pos), finds them
// before everything else. Positions come from a decreasing counter: the
// smallest stream_pos in events, read in the same transaction that inserts
// below it, so it survives a crash with nothing persisted apart; historicalMu
// serializes the writers of one process (the roomserver is the one writer).
var historicalMu sync.Mutex

// nextHistoricalPositions returns the lowest of n fresh negative stream
// positions: the caller uses first, first+1, …, first+n-1, all below every
// event stored so far. Call it with historicalMu held, inside the
// transaction that inserts the events.
func nextHistoricalPositions(ctx context.Context, tx Querier, n int) (int64, error) {
	var lowest int64
	// Outliers sit 2^62 below zero (OutlierPos): history lives above them,
	// and the index range read starts above them.
	if err := tx.QueryRow(ctx, `SELECT COALESCE(MIN(stream_pos), 0) FROM events WHERE stream_pos > $1`,
		-outlierBase/2).Scan(&lowest); err != nil {
		return 0, fmt.Errorf("reading the lowest stream position: %w", err)
	}
	lowest = min(lowest, 0)
	return lowest - int64(n), nil
}

// InsertHistoricalEvents stores backfilled events of a room, given oldest
// first (by depth), with fresh negative stream positions in that order, and
// sets each event's StreamPos. Events already stored are skipped (a
// concurrent write got them first), but an outlier (stored for its
// auth/state role by a join or a gap's state) becomes history here. Nothing else changes: not the current
// state, memberships, joined servers or forward extremities, which describe
// the room now. They are indexed for search unless the room is encrypted.
// It returns the events inserted.
func (db *DB) InsertHistoricalEvents(ctx context.Context, roomID string, events []Event) ([]Event, error) {
	if len(events) == 0 {
		return nil, nil
	}
	historicalMu.Lock()
	defer historicalMu.Unlock()
	var inserted []Event
	err := db.Tx(ctx, func(tx Querier) error {
		inserted = inserted[:0]
		var encrypted int
		if err := tx.QueryRow(ctx, `SELECT COUNT(*) FROM current_state WHERE room_id = $1 AND type = 'm.room.encryption' AND state_key = ''`,
			roomID).Scan(&encrypted); err != nil {
			return fmt.Errorf("reading the encryption state of %s: %w", roomID, err)
		}
		first, err := nextHistoricalPositions(ctx, tx, len(events))
		if err != nil {
			return err
		}
		for i, e := range events {
			if e.RoomID != roomID {
				return fmt.Errorf("event %s is not of room %s", e.EventID, roomID)
			}
			e.StreamPos = first + int64(i)
			n, err := tx.Exec(ctx, `INSERT INTO events (event_id, room_id, stream_pos, depth, type, state_key, sender,
				origin_server_ts, json, state_before, state_after, soft_failed, relates_to, rel_type, membership, replaces_state,
				redacted_by)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, FALSE, $12, $13, $14, $15, $16)`+deoutlier,
				e.EventID, e.RoomID, e.StreamPos, e.Depth, e.Type, e.StateKey, e.Sender, e.OriginServerTS, string(e.JSON),
				e.StateBefore, e.StateAfter, nullString(e.RelatesTo), nullString(e.RelType), nullString(e.Membership),
				nullString(e.ReplacesState), nullString(e.RedactedBy))
			if err != nil {
				return fmt.Errorf("inserting backfilled event %s: %w", e.EventID, err)
			}
			if n == 0 {
				continue
			}
			if encrypted == 0 && e.RedactedBy == "" {
				if err := db.indexForSearch(ctx, tx, &e); err != nil {
					return err
				}
			}
			inserted = append(inserted, e)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return inserted, nil
}

// KnownEvents reports which of ids are stored events (of any room) with a
// place in the timeline: outliers count as not had.
func (db *DB) KnownEvents(ctx context.Context, ids []string) (map[string]bool, error) {
	out := make(map[string]bool, len(ids))
	const chunk = 500
	for start := 0; start < len(ids); start += chunk {
		part := ids[start:min(start+chunk, len(ids))]
		args := make([]any, len(part))
		for i, x := range part {
			args[i] = x
		}
		rows, err := db.Query(ctx, `SELECT event_id FROM events WHERE NOT outlier AND event_id IN (`+placeholders(1, len(part))+`)`, args...)
		if err != nil {
			return nil, fmt.Errorf("looking events up: %w", err)
		}
		for rows.Next() {
			var x string
			if err := rows.Scan(&x); err != nil {
				rows.Close()
				return nil, fmt.Errorf("looking events up: %w", err)
			}
			out[x] = true
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("looking events up: %w", err)
		}
	}
	return out, nil
}

// RedactionTargets maps the events the stored redactions of a room name
// (content.redacts, or the top-level redacts of room versions before 11) to
// a redaction naming them: a backfilled event one of them targets arrives
// after its redaction and is stored redacted.
func (db *DB) RedactionTargets(ctx context.Context, roomID string) (map[string]string, error) {
	rows, err := db.Query(ctx, `SELECT event_id, json FROM events WHERE room_id = $1 AND type = 'm.room.redaction' AND NOT soft_failed`, roomID)
	if err != nil {
		return nil, fmt.Errorf("reading the redactions of %s: %w", roomID, err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var x, js string
		if err := rows.Scan(&x, &js); err != nil {
			return nil, fmt.Errorf("reading the redactions of %s: %w", roomID, err)
		}
		target := gjson.Get(js, "content.redacts").Str
		if target == "" {
			target = gjson.Get(js, "redacts").Str
		}
		if target != "" {
			out[target] = x
		}
	}
	return out, rows.Err()
}
