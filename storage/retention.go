package storage

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/tidwall/gjson"
)

// Message retention (the retention package): the rooms and their
// m.room.retention content, the expired events of a room, and the purge of a
// batch of them, in place: an event keeps its row, ID, edges and signatures;
// its JSON becomes its redacted form and its search row goes.

// RetentionPurged is the redacted_by of events the retention purge redacted
// (it names no event: clients see them redacted without redacted_because).
const RetentionPurged = "retention"

// RetentionRoom is a room and the content of its m.room.retention state
// event ("" for none).
type RetentionRoom struct {
	RoomID      string
	RoomVersion string
	Policy      string // the event's JSON content, or ""
}

// RetentionRooms pages through the rooms (by room ID, after after), with
// their retention policy; withPolicyOnly leaves out rooms without one.
func (db *DB) RetentionRooms(ctx context.Context, after string, limit int, withPolicyOnly bool) ([]RetentionRoom, error) {
	join := "LEFT JOIN"
	if withPolicyOnly {
		join = "JOIN"
	}
	rows, err := db.Query(ctx, `SELECT r.room_id, r.room_version, COALESCE(e.json, '') FROM rooms r
		`+join+` current_state c ON c.room_id = r.room_id AND c.type = 'm.room.retention' AND c.state_key = ''
		LEFT JOIN events e ON e.event_id = c.event_id
		WHERE r.room_id > $1 ORDER BY r.room_id LIMIT $2`, after, limit)
	if err != nil {
		return nil, fmt.Errorf("listing rooms for retention: %w", err)
	}
	defer rows.Close()
	var out []RetentionRoom
	for rows.Next() {
		var r RetentionRoom
		var js string
		if err := rows.Scan(&r.RoomID, &r.RoomVersion, &js); err != nil {
			return nil, fmt.Errorf("listing rooms for retention: %w", err)
		}
		if js != "" {
			r.Policy = gjson.Get(js, "content").Raw
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// ExpiredEvent is an event the purge may redact.
type ExpiredEvent struct {
	EventID string
	JSON    []byte
}

// ExpiredEvents returns up to limit of a room's unredacted non-state events
// sent before the origin_server_ts before, oldest first.
func (db *DB) ExpiredEvents(ctx context.Context, roomID string, before int64, limit int) ([]ExpiredEvent, error) {
	rows, err := db.Query(ctx, `SELECT event_id, json FROM events
		WHERE room_id = $1 AND origin_server_ts < $2 AND state_key IS NULL AND redacted_by IS NULL
		ORDER BY origin_server_ts LIMIT $3`, roomID, before, limit)
	if err != nil {
		return nil, fmt.Errorf("reading the expired events of %s: %w", roomID, err)
	}
	defer rows.Close()
	var out []ExpiredEvent
	for rows.Next() {
		var e ExpiredEvent
		var js string
		if err := rows.Scan(&e.EventID, &js); err != nil {
			return nil, fmt.Errorf("reading the expired events of %s: %w", roomID, err)
		}
		e.JSON = []byte(js)
		out = append(out, e)
	}
	return out, rows.Err()
}

// PurgeEvents redacts a batch of expired events in one transaction (those a
// redaction reached meanwhile stay as they are), drops their search rows and
// records the media URIs their content named (retention_media). It returns
// how many events it redacted.
func (db *DB) PurgeEvents(ctx context.Context, redacted []Redaction, mediaURIs []string) (int, error) {
	n := 0
	err := db.Tx(ctx, func(tx Querier) error {
		n = 0
		// One statement each for the whole batch (not one per event): a
		// round trip per event would hold the transaction, and so the
		// write lock, many times longer.
		if len(redacted) == 0 {
			return nil
		}
		// $1..$n the event IDs, $n+1..$2n their redacted JSON, $2n+1 the marker.
		var cases strings.Builder
		nr := len(redacted)
		args := make([]any, 2*nr+1)
		for i, r := range redacted {
			fmt.Fprintf(&cases, " WHEN $%d THEN $%d", i+1, nr+i+1)
			args[i], args[nr+i] = r.EventID, string(r.RedactedJSON)
		}
		args[2*nr] = RetentionPurged
		ids := placeholders(1, nr)
		key := "rowid"
		if db.dialect == Postgres {
			key = "stream_pos"
		}
		// The search rows first: their keys are read from the events' rows.
		if _, err := tx.Exec(ctx, `DELETE FROM event_search WHERE `+key+` IN
			(SELECT stream_pos FROM events WHERE event_id IN (`+ids+`) AND redacted_by IS NULL)`, args[:nr]...); err != nil {
			return fmt.Errorf("removing purged events from the search index: %w", err)
		}
		c, err := tx.Exec(ctx, `UPDATE events SET json = CASE event_id`+cases.String()+` END, redacted_by = $`+fmt.Sprint(2*nr+1)+`
			WHERE event_id IN (`+ids+`) AND redacted_by IS NULL`, args...)
		if err != nil {
			return fmt.Errorf("redacting purged events: %w", err)
		}
		n = int(c)
		for _, uri := range mediaURIs {
			if _, err := tx.Exec(ctx, `INSERT INTO retention_media (uri) VALUES ($1) ON CONFLICT (uri) DO NOTHING`, uri); err != nil {
				return fmt.Errorf("recording purged media %s: %w", uri, err)
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("purging expired events: %w", err)
	}
	return n, nil
}

// PurgedMedia returns up to limit media URIs purged events named that are
// still to be deleted.
func (db *DB) PurgedMedia(ctx context.Context, limit int) ([]string, error) {
	rows, err := db.Query(ctx, `SELECT uri FROM retention_media ORDER BY uri LIMIT $1`, limit)
	if err != nil {
		return nil, fmt.Errorf("reading purged media: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var uri string
		if err := rows.Scan(&uri); err != nil {
			return nil, fmt.Errorf("reading purged media: %w", err)
		}
		out = append(out, uri)
	}
	return out, rows.Err()
}

// MediaStillNamed reports whether an unredacted (so not purged) event
// references an mxc:// URI — the mxc reference record (storage/media_refs.go),
// plus, conservatively, any event past its follower's cursor whose JSON
// contains the URI (not recorded yet: during the record's first backfill,
// every event) — or a user's profile still names it. The purge calls it once
// per purged media item, in the background.
func (db *DB) MediaStillNamed(ctx context.Context, uri string) (bool, error) {
	// _ (any one character) in the LIKE pattern only widens the match, which
	// keeps media rather than deleting it.
	pat := likeContaining(uri)
	var n int
	err := db.QueryRow(ctx, `SELECT (SELECT COUNT(*) FROM (SELECT 1 FROM media_refs r JOIN events e ON e.event_id = r.event_id
			WHERE r.uri = $2 AND e.redacted_by IS NULL LIMIT 1) rec)
		+ (SELECT COUNT(*) FROM (SELECT 1 FROM events
			WHERE stream_pos > COALESCE((SELECT position FROM stream_cursors WHERE name = $3), 0)
			AND json LIKE $1 ESCAPE '\' LIMIT 1) tail)
		+ (SELECT COUNT(*) FROM (SELECT 1 FROM users WHERE avatar_url = $2 OR profile_fields LIKE $1 ESCAPE '\' LIMIT 1) u)`,
		pat, uri, MediaRefsFollower).Scan(&n)
	if err != nil {
		return false, fmt.Errorf("looking for references to %s: %w", uri, err)
	}
	return n > 0, nil
}

// ForgetPurgedMedia drops a media URI from retention_media once handled.
func (db *DB) ForgetPurgedMedia(ctx context.Context, uri string) error {
	if _, err := db.Exec(ctx, `DELETE FROM retention_media WHERE uri = $1`, uri); err != nil {
		return fmt.Errorf("forgetting purged media %s: %w", uri, err)
	}
	return nil
}

// DeleteMedia drops a media item (local or a cached remote copy) and its
// thumbnails, and returns the blobs (SHA-256s) no row names any more, which
// the caller may delete. A missing item is no error.
func (db *DB) DeleteMedia(ctx context.Context, origin, mediaID string) (orphans []string, err error) {
	// A cached copy of another server's media leaves the remote cache: its
	// running total moves with it.
	var remote bool
	switch err := db.QueryRow(ctx, `SELECT remote FROM media WHERE origin = $1 AND media_id = $2`, origin, mediaID).Scan(&remote); {
	case err == nil && remote:
		return db.DeleteRemoteMedia(ctx, origin, mediaID)
	case err != nil && !errors.Is(err, ErrNotFound):
		return nil, fmt.Errorf("deleting media %s/%s: %w", origin, mediaID, err)
	}
	err = db.Tx(ctx, func(tx Querier) error {
		orphans, err = deleteMediaRows(ctx, tx, origin, mediaID)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("deleting media %s/%s: %w", origin, mediaID, err)
	}
	return orphans, nil
}

// deleteMediaRows deletes a media item's row and thumbnails in tx and
// returns the blobs (SHA-256s) no row names any more, which the caller may
// delete once tx commits.
func deleteMediaRows(ctx context.Context, tx Querier, origin, mediaID string) ([]string, error) {
	sums, err := collectStrings(tx.Query(ctx, `SELECT sha256 FROM media WHERE origin = $1 AND media_id = $2
		UNION SELECT sha256 FROM media_thumbnails WHERE origin = $1 AND media_id = $2`, origin, mediaID))
	if err != nil {
		return nil, err
	}
	if _, err := tx.Exec(ctx, `DELETE FROM media_thumbnails WHERE origin = $1 AND media_id = $2`, origin, mediaID); err != nil {
		return nil, err
	}
	if _, err := tx.Exec(ctx, `DELETE FROM media WHERE origin = $1 AND media_id = $2`, origin, mediaID); err != nil {
		return nil, err
	}
	var orphans []string
	for _, sum := range sums {
		var n int
		if err := tx.QueryRow(ctx, `SELECT (SELECT COUNT(*) FROM media WHERE sha256 = $1) + (SELECT COUNT(*) FROM media_thumbnails WHERE sha256 = $1)`, sum).Scan(&n); err != nil {
			return nil, err
		}
		if n == 0 && sum != "" {
			orphans = append(orphans, sum)
		}
	}
	return orphans, nil
}
