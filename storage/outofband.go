package storage

import (
	"context"
	"errors"
	"fmt"
)

// Out-of-band memberships (migration 0170): a local user's invite, knock or
// leave of a room this server is not in. The member event is an events row
// with a stream position, out_of_band_version set and no snapshots
// (state_before = state_after = 0); the room has no rooms row, current state
// or memberships row, so everything that asks whether the room is known
// still says no, while the user's membership history
// (UserMembershipEvents, MembershipChanges) includes it. Creating the room
// here (a remote join) deletes the room's out-of-band rows in the same
// transaction (WriteRoomEvents): the room's own events take over.

// ErrRoomKnown is WriteOutOfBand's answer for a room that has a rooms row.
var ErrRoomKnown = errors.New("room is known")

// OutOfBand is a stored out-of-band membership event.
type OutOfBand struct {
	Event       *Event
	RoomVersion string
}

// WriteOutOfBand stores an out-of-band member event of a room that is not
// known (ErrRoomKnown otherwise). An event already stored is left as it is.
func (db *DB) WriteOutOfBand(ctx context.Context, e *Event, roomVersion string) error {
	return db.Tx(ctx, func(tx Querier) error {
		var n int
		if err := tx.QueryRow(ctx, `SELECT COUNT(*) FROM rooms WHERE room_id = $1`, e.RoomID).Scan(&n); err != nil {
			return fmt.Errorf("checking room %s: %w", e.RoomID, err)
		}
		if n > 0 {
			return ErrRoomKnown
		}
		if _, err := tx.Exec(ctx, `INSERT INTO events (event_id, room_id, stream_pos, depth, type, state_key, sender,
			origin_server_ts, json, state_before, state_after, membership, out_of_band_version)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0, 0, $10, $11) ON CONFLICT (event_id) DO NOTHING`,
			e.EventID, e.RoomID, e.StreamPos, e.Depth, e.Type, e.StateKey, e.Sender, e.OriginServerTS, string(e.JSON),
			nullString(e.Membership), roomVersion); err != nil {
			return fmt.Errorf("storing out-of-band event %s: %w", e.EventID, err)
		}
		return nil
	})
}

// LatestOutOfBand is userID's latest out-of-band membership event in roomID
// (ErrNotFound if none).
func (db *DB) LatestOutOfBand(ctx context.Context, roomID, userID string) (*OutOfBand, error) {
	var version string
	var eventID string
	err := db.QueryRow(ctx, `SELECT event_id, out_of_band_version FROM events
		WHERE type = 'm.room.member' AND state_key = $1 AND room_id = $2 AND out_of_band_version IS NOT NULL
		ORDER BY stream_pos DESC LIMIT 1`, userID, roomID).Scan(&eventID, &version)
	if err != nil {
		return nil, err
	}
	ev, err := db.GetEvent(ctx, eventID)
	if err != nil {
		return nil, err
	}
	return &OutOfBand{Event: ev, RoomVersion: version}, nil
}

// deleteOutOfBand removes a room's out-of-band rows (the room is being created).
func deleteOutOfBand(ctx context.Context, tx Querier, roomID string) error {
	if _, err := tx.Exec(ctx, `DELETE FROM events WHERE room_id = $1 AND out_of_band_version IS NOT NULL`, roomID); err != nil {
		return fmt.Errorf("dropping out-of-band events of %s: %w", roomID, err)
	}
	return nil
}
