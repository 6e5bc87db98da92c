package storage

import (
	"context"
	"encoding/json"
	"fmt"
)

// The reads of myelin export-user (package userexport): everything the
// store holds about one local user, the large parts paged.

// EventsBySender returns up to limit of the events userID sent (timeline
// and state, outliers left out), ascending by stream position after the
// cursor (afterPos, afterID); start with afterPos = MinStreamPos, afterID "".
func (db *DB) EventsBySender(ctx context.Context, userID string, afterPos int64, afterID string, limit int) ([]*Event, error) {
	evs, err := collectEvents(db.Query(ctx, `SELECT `+eventColumns+` FROM events
		WHERE sender = $1 AND NOT outlier AND (stream_pos > $2 OR stream_pos = $2 AND event_id > $3)
		ORDER BY stream_pos, event_id LIMIT $4`, userID, afterPos, afterID, limit))
	if err != nil {
		return nil, fmt.Errorf("reading the events of %s: %w", userID, err)
	}
	return evs, nil
}

// MinStreamPos is below every stream position (backfilled history is negative).
const MinStreamPos = -(int64(1) << 62)

// UploadsOf returns up to limit of the local uploads of userID (erased ones
// excluded) after the media ID afterID, ascending by media ID.
func (db *DB) UploadsOf(ctx context.Context, userID, afterID string, limit int) ([]MediaRow, error) {
	rows, err := db.Query(ctx, `SELECT origin, media_id, uploader, content_type, size, filename, sha256, created_ts, uploaded_ts, expires_ts
		FROM media WHERE uploader = $1 AND NOT remote AND erased_ts = 0 AND media_id > $2 ORDER BY media_id LIMIT $3`, userID, afterID, limit)
	if err != nil {
		return nil, fmt.Errorf("reading the uploads of %s: %w", userID, err)
	}
	defer rows.Close()
	var out []MediaRow
	for rows.Next() {
		var m MediaRow
		if err := rows.Scan(&m.Origin, &m.MediaID, &m.Uploader, &m.ContentType, &m.Size, &m.Filename, &m.SHA256, &m.CreatedTS, &m.UploadedTS, &m.ExpiresTS); err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

// Filter is a stored filter with its ID.
type Filter struct {
	ID     int64
	Filter json.RawMessage
}

// FiltersOf returns the user's stored filters, by ID.
func (db *DB) FiltersOf(ctx context.Context, userID string) ([]Filter, error) {
	rows, err := db.Query(ctx, `SELECT filter_id, filter FROM filters WHERE user_id = $1 ORDER BY filter_id`, userID)
	if err != nil {
		return nil, fmt.Errorf("reading the filters of %s: %w", userID, err)
	}
	defer rows.Close()
	var out []Filter
	for rows.Next() {
		var f Filter
		var raw string
		if err := rows.Scan(&f.ID, &raw); err != nil {
			return nil, err
		}
		f.Filter = json.RawMessage(raw)
		out = append(out, f)
	}
	return out, rows.Err()
}

// IsErased reports whether userID deactivated with erase (ErasedUsers).
func (db *DB) IsErased(ctx context.Context, userID string) (bool, error) {
	m, err := db.ErasedUsers(ctx, []string{userID})
	return m[userID], err
}
