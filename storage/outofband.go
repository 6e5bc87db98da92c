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
//
// A room this server knows but stopped following (its last local member
// left or was banned: the copy is stale, events since were never sent here)
// takes an invite of a local user out of band too (WriteOutOfBandUnjoined):
// the invite could not be authorized against the stale state, and it will
// not come by /send. Rejoining it (RoomWrite.DropOutOfBand) deletes the rows.

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
		return insertOutOfBand(ctx, tx, e, roomVersion)
	})
}

// ErrServerJoined is WriteOutOfBandUnjoined's answer for a room the server
// has a joined member in (or that is not known).
var ErrServerJoined = errors.New("server is in the room")

// WriteOutOfBandUnjoined stores an out-of-band member event of a room that is
// known but that server has no joined member in (ErrServerJoined otherwise):
// a stale copy, which the event does not touch. An event already stored is
// left as it is.
func (db *DB) WriteOutOfBandUnjoined(ctx context.Context, e *Event, roomVersion, server string) error {
	return db.Tx(ctx, func(tx Querier) error {
		var known, joined int
		if err := tx.QueryRow(ctx, `SELECT (SELECT COUNT(*) FROM rooms WHERE room_id = $1),
			(SELECT COUNT(*) FROM room_servers WHERE room_id = $1 AND server_name = $2 AND joined > 0)`,
			e.RoomID, server).Scan(&known, &joined); err != nil {
			return fmt.Errorf("checking room %s: %w", e.RoomID, err)
		}
		if known == 0 || joined > 0 {
			return ErrServerJoined
		}
		return insertOutOfBand(ctx, tx, e, roomVersion)
	})
}

func insertOutOfBand(ctx context.Context, tx Querier, e *Event, roomVersion string) error {
	if _, err := tx.Exec(ctx, `INSERT INTO events (event_id, room_id, stream_pos, depth, type, state_key, sender,
		origin_server_ts, json, state_before, state_after, membership, out_of_band_version)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0, 0, $10, $11) ON CONFLICT (event_id) DO NOTHING`,
		e.EventID, e.RoomID, e.StreamPos, e.Depth, e.Type, e.StateKey, e.Sender, e.OriginServerTS, string(e.JSON),
		nullString(e.Membership), roomVersion); err != nil {
		return fmt.Errorf("storing out-of-band event %s: %w", e.EventID, err)
	}
	return nil
}

// OutOfBandEventIDs lists roomID's out-of-band events (a known room's are
// those WriteOutOfBandUnjoined stored).
func (db *DB) OutOfBandEventIDs(ctx context.Context, roomID string) ([]string, error) {
	out, err := collectStrings(db.Query(ctx, `SELECT event_id FROM events WHERE room_id = $1 AND out_of_band_version IS NOT NULL`, roomID))
	if err != nil {
		return nil, fmt.Errorf("listing the out-of-band events of %s: %w", roomID, err)
	}
	return out, nil
}

// LatestOutOfBand is userID's latest out-of-band membership event in roomID
// (the deepest in the room, then the last stored) that no membership event of
// the room's own stored later and deeper in the room supersedes (ErrNotFound
// if none).
func (db *DB) LatestOutOfBand(ctx context.Context, roomID, userID string) (*OutOfBand, error) {
	var version string
	var eventID string
	err := db.QueryRow(ctx, `SELECT event_id, out_of_band_version FROM events o
		WHERE type = 'm.room.member' AND state_key = $1 AND room_id = $2 AND out_of_band_version IS NOT NULL
		AND NOT EXISTS (SELECT 1 FROM events l WHERE l.room_id = o.room_id AND l.type = 'm.room.member'
			AND l.state_key = o.state_key AND l.out_of_band_version IS NULL AND NOT l.outlier AND NOT l.soft_failed
			AND l.stream_pos > o.stream_pos AND l.depth > o.depth)
		ORDER BY depth DESC, stream_pos DESC LIMIT 1`, userID, roomID).Scan(&eventID, &version)
	if err != nil {
		return nil, err
	}
	ev, err := db.GetEvent(ctx, eventID)
	if err != nil {
		return nil, err
	}
	return &OutOfBand{Event: ev, RoomVersion: version}, nil
}

// deleteOutOfBand removes a room's out-of-band rows (the room is being
// created, or rejoined).
func deleteOutOfBand(ctx context.Context, tx Querier, roomID string) error {
	if _, err := tx.Exec(ctx, `DELETE FROM events WHERE room_id = $1 AND out_of_band_version IS NOT NULL`, roomID); err != nil {
		return fmt.Errorf("dropping out-of-band events of %s: %w", roomID, err)
	}
	return nil
}
