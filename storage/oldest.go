package storage

import (
	"context"
	"fmt"
)

// OldestEvents are the IDs of a room's oldest events with a place in the
// timeline (outliers and soft-failed events left out), oldest first by
// (depth, stream position), at most limit: where the history this server
// has of the room begins, which backfill extends.
func (db *DB) OldestEvents(ctx context.Context, roomID string, limit int) ([]string, error) {
	rows, err := db.Query(ctx, `SELECT event_id FROM events WHERE room_id = $1 AND NOT outlier AND NOT soft_failed
		ORDER BY depth ASC, stream_pos ASC LIMIT $2`, roomID, limit)
	if err != nil {
		return nil, fmt.Errorf("reading the oldest events of %s: %w", roomID, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var x string
		if err := rows.Scan(&x); err != nil {
			return nil, fmt.Errorf("reading the oldest events of %s: %w", roomID, err)
		}
		out = append(out, x)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading the oldest events of %s: %w", roomID, err)
	}
	return out, nil
}
