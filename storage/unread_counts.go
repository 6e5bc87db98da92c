package storage

// Batched reads for one user's unread counts in many rooms (sliding sync's
// and an initial /sync's first answer): what push's per-room read does —
// receipts, membership history, the room's last events — in one statement
// per inChunkSize rooms instead of several queries per room.

import (
	"context"
	"fmt"
	"sort"
	"strings"
)

// UserReceiptPositions lists the user's receipts in the rooms whose event is
// one of the room's (not soft-failed, not an outlier), with that event's
// position: UserReceipts and EventPosition for many rooms at once.
func (db *DB) UserReceiptPositions(ctx context.Context, userID string, roomIDs []string) ([]ReceiptPosition, error) {
	var out []ReceiptPosition
	err := inChunks(roomIDs, func(chunk []string) error {
		rows, err := db.Query(ctx, `SELECT r.room_id, r.receipt_type, r.thread_id, e.stream_pos FROM receipts r
			JOIN events e ON e.event_id = r.event_id AND e.room_id = r.room_id AND NOT e.soft_failed AND NOT e.outlier
			WHERE r.user_id = $1 AND r.room_id IN (`+placeholders(2, len(chunk))+`)`, append([]any{userID}, anyArgs(chunk)...)...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			r := ReceiptPosition{UserID: userID}
			if err := rows.Scan(&r.RoomID, &r.Type, &r.ThreadID, &r.EventPos); err != nil {
				return err
			}
			out = append(out, r)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("reading receipts of %s in %d rooms: %w", userID, len(roomIDs), err)
	}
	return out, nil
}

// UserMembershipHistories is UserMembershipHistory for one user in many
// rooms, by room.
func (db *DB) UserMembershipHistories(ctx context.Context, userID string, roomIDs []string) (map[string][]UserMembershipChange, error) {
	out := map[string][]UserMembershipChange{}
	err := inChunks(roomIDs, func(chunk []string) error {
		changes, err := collectMembershipChanges(db.Query(ctx, userMembershipQuery+` AND room_id IN (`+placeholders(2, len(chunk))+`)
			ORDER BY stream_pos ASC`, append([]any{userID}, anyArgs(chunk)...)...))
		if err != nil {
			return err
		}
		for _, c := range changes {
			out[c.RoomID] = append(out[c.RoomID], c)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading membership histories of %s in %d rooms: %w", userID, len(roomIDs), err)
	}
	return out, nil
}

// RoomsEventsRange is RoomEventsRange(room, from[room], to, limit) for many
// rooms: each room's last limit events in (from, to], oldest first. Each
// room's cut-off (its limit-th newest event in the range) is one bounded
// backwards walk of the (room_id, stream_pos) index, so a room whose range is
// long costs no more than its limit, as with RoomEventsRange.
func (db *DB) RoomsEventsRange(ctx context.Context, from map[string]int64, to int64, limit int) (map[string][]*Event, error) {
	out := make(map[string][]*Event, len(from))
	if limit <= 0 {
		return out, nil
	}
	rooms := make([]string, 0, len(from))
	for r := range from {
		rooms = append(rooms, r)
	}
	sort.Strings(rooms)
	err := inChunks(rooms, func(chunk []string) error {
		var q strings.Builder
		args := make([]any, 0, 2+2*len(chunk))
		args = append(args, to, limit-1)
		q.WriteString(`WITH b (room_id, from_pos) AS (VALUES `)
		for i, r := range chunk {
			if i > 0 {
				q.WriteString(", ")
			}
			// CAST: PostgreSQL cannot infer the types of bare VALUES parameters.
			fmt.Fprintf(&q, "(CAST($%d AS TEXT), CAST($%d AS BIGINT))", 2*i+3, 2*i+4)
			args = append(args, r, from[r])
		}
		// Each room's cut-off first (MATERIALIZED: once per room, not per
		// event row), then one index range per room.
		q.WriteString(`), c AS MATERIALIZED (SELECT b.room_id, COALESCE((SELECT x.stream_pos FROM events x
				WHERE x.room_id = b.room_id AND x.stream_pos > b.from_pos AND x.stream_pos <= $1 AND NOT x.soft_failed AND NOT x.outlier
				ORDER BY x.stream_pos DESC LIMIT 1 OFFSET $2), b.from_pos + 1) AS cut FROM b)
			SELECT ` + prefixed("e") + ` FROM c JOIN events e ON e.room_id = c.room_id AND e.stream_pos >= c.cut AND e.stream_pos <= $1
			WHERE NOT e.soft_failed AND NOT e.outlier
			ORDER BY e.stream_pos ASC`)
		evs, err := collectEvents(db.Query(ctx, q.String(), args...))
		if err != nil {
			return err
		}
		for _, e := range evs {
			out[e.RoomID] = append(out[e.RoomID], e)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading the events of %d rooms: %w", len(from), err)
	}
	return out, nil
}

// CurrentStateEventsInRooms is CurrentStateEvent(room, evType, stateKey) for
// many rooms, by room (a room without one is absent).
func (db *DB) CurrentStateEventsInRooms(ctx context.Context, roomIDs []string, evType, stateKey string) (map[string]*Event, error) {
	out := map[string]*Event{}
	err := inChunks(roomIDs, func(chunk []string) error {
		evs, err := collectEvents(db.Query(ctx, `SELECT `+prefixed("e")+` FROM current_state c JOIN events e ON e.event_id = c.event_id
			WHERE c.type = $1 AND c.state_key = $2 AND c.room_id IN (`+placeholders(3, len(chunk))+`)`,
			append([]any{evType, stateKey}, anyArgs(chunk)...)...))
		if err != nil {
			return err
		}
		for _, e := range evs {
			out[e.RoomID] = e
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading %s %q in %d rooms: %w", evType, stateKey, len(roomIDs), err)
	}
	return out, nil
}

// JoinedMemberCounts is len(JoinedMembers(room)) for many rooms (a room
// without members is absent).
func (db *DB) JoinedMemberCounts(ctx context.Context, roomIDs []string) (map[string]int, error) {
	out := map[string]int{}
	err := inChunks(roomIDs, func(chunk []string) error {
		rows, err := db.Query(ctx, `SELECT room_id, COUNT(*) FROM memberships
			WHERE membership = 'join' AND room_id IN (`+placeholders(1, len(chunk))+`) GROUP BY room_id`, anyArgs(chunk)...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var r string
			var n int
			if err := rows.Scan(&r, &n); err != nil {
				return err
			}
			out[r] = n
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("counting the members of %d rooms: %w", len(roomIDs), err)
	}
	return out, nil
}
