package storage

// Read-side queries /sync, sliding sync, push and ephemeral need from the room tables
// (written by the roomserver, migrations/0010_rooms.sql). Only reads live
// here; every query takes an upper stream bound so that readers never see
// positions above the stream's safe position.

import (
	"context"
	"fmt"
	"strings"
)

// RoomEventsRange returns the room's last `limit` events with positions in
// (from, to], oldest first, and whether more events in the range were left
// out. Soft-failed events are never shown to clients.
func (db *DB) RoomEventsRange(ctx context.Context, roomID string, from, to int64, limit int) ([]*Event, bool, error) {
	evs, err := collectEvents(db.Query(ctx, `SELECT `+eventColumns+` FROM events
		WHERE room_id = $1 AND stream_pos > $2 AND stream_pos <= $3 AND NOT soft_failed AND NOT outlier
		ORDER BY stream_pos DESC LIMIT $4`, roomID, from, to, limit+1))
	if err != nil {
		return nil, false, fmt.Errorf("reading events of %s: %w", roomID, err)
	}
	limited := len(evs) > limit
	if limited {
		evs = evs[:limit]
	}
	for i, j := 0, len(evs)-1; i < j; i, j = i+1, j-1 {
		evs[i], evs[j] = evs[j], evs[i]
	}
	return evs, limited, nil
}

// RoomsWithEvents lists which of the rooms have events in (from, to].
func (db *DB) RoomsWithEvents(ctx context.Context, from, to int64) (map[string]bool, error) {
	// No DISTINCT: it lets the planner walk the (room_id, stream_pos) index
	// over the whole table; the stream_pos range is small, dedupe here.
	rooms, err := collectStrings(db.Query(ctx, `SELECT room_id FROM events WHERE stream_pos > $1 AND stream_pos <= $2 AND NOT outlier`, from, to))
	if err != nil {
		return nil, fmt.Errorf("reading rooms with new events: %w", err)
	}
	out := make(map[string]bool, len(rooms))
	for _, r := range rooms {
		out[r] = true
	}
	return out, nil
}

// JoinedMembers lists the room's currently joined users.
func (db *DB) JoinedMembers(ctx context.Context, roomID string) ([]string, error) {
	return db.userList(ctx, `SELECT user_id FROM memberships WHERE room_id = $1 AND membership = 'join'`, roomID)
}

// UsersSharingRooms lists the users joined to any room userID is joined to (userID included).
func (db *DB) UsersSharingRooms(ctx context.Context, userID string) ([]string, error) {
	return db.userList(ctx, `SELECT DISTINCT b.user_id FROM memberships a
		JOIN memberships b ON b.room_id = a.room_id AND b.membership = 'join'
		WHERE a.user_id = $1 AND a.membership = 'join'`, userID)
}

// UsersJoinedBetween lists the users whose membership became join in
// (from, to] in a room userID is joined to: a join replacing another
// membership (or none), not a profile change of someone already joined.
// One range scan over the stream, however many rooms the user is in.
func (db *DB) UsersJoinedBetween(ctx context.Context, userID string, from, to int64) ([]string, error) {
	return db.userList(ctx, `SELECT DISTINCT e.state_key FROM events e
		JOIN memberships m ON m.room_id = e.room_id AND m.user_id = $1 AND m.membership = 'join'
		LEFT JOIN events p ON p.event_id = e.replaces_state
		WHERE e.stream_pos > $2 AND e.stream_pos <= $3 AND e.type = 'm.room.member' AND e.membership = 'join'
			AND NOT e.soft_failed AND NOT e.outlier AND (p.membership IS NULL OR p.membership <> 'join')`, userID, from, to)
}

func (db *DB) userList(ctx context.Context, q string, args ...any) ([]string, error) {
	out, err := collectStrings(db.Query(ctx, q, args...))
	if err != nil {
		return nil, fmt.Errorf("listing users: %w", err)
	}
	return out, nil
}

// EventPosition is the stream position of an event in a room; ErrNotFound when
// the room has no such event or it was soft-failed.
func (db *DB) EventPosition(ctx context.Context, roomID, eventID string) (int64, error) {
	var pos int64
	err := db.QueryRow(ctx, `SELECT stream_pos FROM events WHERE event_id = $1 AND room_id = $2 AND NOT soft_failed AND NOT outlier`, eventID, roomID).Scan(&pos)
	if err != nil && err != ErrNotFound {
		err = fmt.Errorf("reading position of %s: %w", eventID, err)
	}
	return pos, err
}

// RoomMembersSummaryAt lists the room's joined and invited users as of stream
// position `at` (in order of their membership's position: the spec's hero
// order), for /sync's room summary at the end of the synced range. The
// memberships table holds the current state; the few rows that changed after
// `at` are looked up in the events table as of `at`.
func (db *DB) RoomMembersSummaryAt(ctx context.Context, roomID string, at int64) (joined, invited []string, err error) {
	rows, err := db.Query(ctx, `SELECT user_id, membership, stream_pos FROM memberships
		WHERE room_id = $1 AND (membership IN ('join', 'invite') OR stream_pos > $2) ORDER BY stream_pos`, roomID, at)
	if err != nil {
		return nil, nil, fmt.Errorf("reading members of %s: %w", roomID, err)
	}
	type member struct {
		user, membership string
		pos              int64
	}
	var ms []member
	for rows.Next() {
		var m member
		if err := rows.Scan(&m.user, &m.membership, &m.pos); err != nil {
			rows.Close()
			return nil, nil, fmt.Errorf("reading members of %s: %w", roomID, err)
		}
		ms = append(ms, m)
	}
	err = rows.Err()
	rows.Close()
	if err != nil {
		return nil, nil, fmt.Errorf("reading members of %s: %w", roomID, err)
	}
	for _, m := range ms {
		if m.pos > at { // changed after `at`: its membership then
			m.membership = ""
			err := db.QueryRow(ctx, `SELECT COALESCE(membership, '') FROM events
				WHERE room_id = $1 AND type = 'm.room.member' AND state_key = $2 AND stream_pos <= $3 AND NOT soft_failed
				ORDER BY stream_pos DESC LIMIT 1`, roomID, m.user, at).Scan(&m.membership)
			if err != nil && err != ErrNotFound {
				return nil, nil, fmt.Errorf("reading membership of %s in %s: %w", m.user, roomID, err)
			}
		}
		switch m.membership {
		case "join":
			joined = append(joined, m.user)
		case "invite":
			invited = append(invited, m.user)
		}
	}
	return joined, invited, nil
}

// latestPositionsChunk bounds the rooms of one LatestEventPositions statement
// (two arguments each, well under both backends' placeholder limits).
const latestPositionsChunk = 500

// LatestEventPositions returns, for each room of bounds, the stream position
// of its latest event at or below the room's bound (soft-failed events are
// never shown, so never counted); rooms without such an event are absent.
// One statement per latestPositionsChunk rooms, each room one backwards step
// on events_room_stream, instead of one query per room.
func (db *DB) LatestEventPositions(ctx context.Context, bounds map[string]int64) (map[string]int64, error) {
	out := make(map[string]int64, len(bounds))
	rooms := make([]string, 0, len(bounds))
	for r := range bounds {
		rooms = append(rooms, r)
	}
	for len(rooms) > 0 {
		chunk := rooms[:min(len(rooms), latestPositionsChunk)]
		rooms = rooms[len(chunk):]
		var q strings.Builder
		args := make([]any, 0, 2*len(chunk))
		q.WriteString(`WITH b (room_id, up_to) AS (VALUES `)
		for i, r := range chunk {
			if i > 0 {
				q.WriteString(", ")
			}
			// CAST: PostgreSQL cannot infer the types of bare VALUES parameters.
			fmt.Fprintf(&q, "(CAST($%d AS TEXT), CAST($%d AS BIGINT))", 2*i+1, 2*i+2)
			args = append(args, r, bounds[r])
		}
		q.WriteString(`) SELECT b.room_id, (SELECT e.stream_pos FROM events e
			WHERE e.room_id = b.room_id AND e.stream_pos <= b.up_to AND NOT e.soft_failed AND NOT e.outlier
			ORDER BY e.stream_pos DESC LIMIT 1) FROM b`)
		rows, err := db.Query(ctx, q.String(), args...)
		if err != nil {
			return nil, fmt.Errorf("reading latest event positions: %w", err)
		}
		for rows.Next() {
			var room string
			var pos *int64
			if err := rows.Scan(&room, &pos); err != nil {
				rows.Close()
				return nil, fmt.Errorf("reading latest event positions: %w", err)
			}
			if pos != nil {
				out[room] = *pos
			}
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, fmt.Errorf("reading latest event positions: %w", err)
		}
	}
	return out, nil
}
