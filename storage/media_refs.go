package storage

import (
	"context"
	"fmt"
	"strings"
)

// The mxc reference record (migration 0350): which rooms' events name which
// mxc:// URIs. mediaapi's follower (MediaRefsFollower) fills it from the
// stream; data localization asks it which rooms reference a media item
// before serving it to another server, retention whether a purged event's
// media is still named. Events past the follower's saved cursor are not
// recorded yet: MediaRefTail and MediaStillNamed look at them directly, so
// that neither races the follower.

// MediaRefsFollower is the stream cursor's name of the follower that fills
// the reference record.
const MediaRefsFollower = "media_refs"

// MediaRef is one event's reference to an mxc:// URI.
type MediaRef struct {
	URI       string
	RoomID    string
	EventID   string
	StreamPos int64
}

// InsertMediaRefs records references; one already recorded is kept (the
// follower delivers at least once).
func (db *DB) InsertMediaRefs(ctx context.Context, refs []MediaRef) error {
	if len(refs) == 0 {
		return nil
	}
	return db.Tx(ctx, func(tx Querier) error {
		for _, r := range refs {
			if _, err := tx.Exec(ctx, `INSERT INTO media_refs (uri, event_id, room_id, stream_pos) VALUES ($1, $2, $3, $4)
				ON CONFLICT DO NOTHING`, r.URI, r.EventID, r.RoomID, r.StreamPos); err != nil {
				return fmt.Errorf("recording media references: %w", err)
			}
		}
		return nil
	})
}

// MediaRefRooms lists (up to limit) the rooms with an unredacted event
// referencing uri, as recorded.
func (db *DB) MediaRefRooms(ctx context.Context, uri string, limit int) ([]string, error) {
	out, err := collectStrings(db.Query(ctx, `SELECT DISTINCT r.room_id FROM media_refs r
		JOIN events e ON e.event_id = r.event_id
		WHERE r.uri = $1 AND e.redacted_by IS NULL AND NOT e.soft_failed LIMIT $2`, uri, limit))
	if err != nil {
		return nil, fmt.Errorf("reading the rooms referencing %s: %w", uri, err)
	}
	return out, nil
}

// MediaRefCandidate is an event not yet recorded whose JSON names a URI.
type MediaRefCandidate struct {
	RoomID string
	Type   string
	JSON   []byte
}

// MediaRefTail returns (up to limit) the unredacted events after the
// follower's saved cursor whose JSON contains uri anywhere: what the record
// may not hold yet. The caller extracts their references to keep only those
// naming uri in a referencing field.
func (db *DB) MediaRefTail(ctx context.Context, uri string, limit int) ([]MediaRefCandidate, error) {
	rows, err := db.Query(ctx, `SELECT room_id, type, json FROM events
		WHERE stream_pos > COALESCE((SELECT position FROM stream_cursors WHERE name = $1), 0)
		AND json LIKE $2 ESCAPE '\' AND redacted_by IS NULL AND NOT soft_failed AND NOT outlier
		ORDER BY stream_pos LIMIT $3`, MediaRefsFollower, likeContaining(uri), limit)
	if err != nil {
		return nil, fmt.Errorf("reading unrecorded references to %s: %w", uri, err)
	}
	defer rows.Close()
	var out []MediaRefCandidate
	for rows.Next() {
		var c MediaRefCandidate
		var js string
		if err := rows.Scan(&c.RoomID, &c.Type, &js); err != nil {
			return nil, fmt.Errorf("reading unrecorded references to %s: %w", uri, err)
		}
		c.JSON = []byte(js)
		out = append(out, c)
	}
	return out, rows.Err()
}

// likeContaining is a LIKE pattern matching strings that contain s: % and \
// escaped; _ (any one character) only widens the match.
func likeContaining(s string) string {
	return "%" + strings.NewReplacer(`\`, `\\`, `%`, `\%`).Replace(s) + "%"
}

// EncryptedRoomsShared lists (at most limit) encrypted rooms where userID is
// joined and server has a joined member: where an attachment userID
// uploaded may have been shared with server inside an encrypted event,
// which no reference record can see.
func (db *DB) EncryptedRoomsShared(ctx context.Context, userID, server string, limit int) ([]string, error) {
	out, err := collectStrings(db.Query(ctx, `SELECT m.room_id FROM memberships m
		JOIN current_state c ON c.room_id = m.room_id AND c.type = 'm.room.encryption' AND c.state_key = ''
		JOIN room_servers s ON s.room_id = m.room_id AND s.server_name = $2 AND s.joined > 0
		WHERE m.user_id = $1 AND m.membership = 'join'
		ORDER BY m.room_id LIMIT $3`, userID, server, limit))
	if err != nil {
		return nil, fmt.Errorf("listing the encrypted rooms %s shares with %s: %w", userID, server, err)
	}
	return out, nil
}
