package storage

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// ServerOfUser is the server part of a user ID: what follows its first ':'
// (the room_servers backfill in migration 0130 splits the same way).
func ServerOfUser(userID string) string {
	if i := strings.IndexByte(userID, ':'); i >= 0 {
		return userID[i+1:]
	}
	return userID
}

// JoinedServers lists the servers with at least one joined member in the
// room (room_servers), sorted.
func (db *DB) JoinedServers(ctx context.Context, roomID string) ([]string, error) {
	out, err := collectStrings(db.Query(ctx, `SELECT server_name FROM room_servers WHERE room_id = $1 AND joined > 0 ORDER BY server_name`, roomID))
	if err != nil {
		return nil, fmt.Errorf("listing the servers of %s: %w", roomID, err)
	}
	return out, nil
}

// updateRoomServers applies the joined-member changes of a batch's
// membership changes to room_servers, from each change's Prev: one upsert per
// server whose count changed, never a recount.
func updateRoomServers(ctx context.Context, tx Querier, roomID string, changes []MembershipChange) error {
	delta := map[string]int64{}
	for _, m := range changes {
		was, is := m.Prev == "join", m.Membership == "join"
		switch {
		case is && !was:
			delta[ServerOfUser(m.UserID)]++
		case was && !is:
			delta[ServerOfUser(m.UserID)]--
		}
	}
	servers := make([]string, 0, len(delta))
	for s, d := range delta {
		if d != 0 {
			servers = append(servers, s)
		}
	}
	slices.Sort(servers) // a fixed lock order
	for _, s := range servers {
		if _, err := tx.Exec(ctx, `INSERT INTO room_servers (room_id, server_name, joined) VALUES ($1, $2, $3)
			ON CONFLICT (room_id, server_name) DO UPDATE SET joined = room_servers.joined + excluded.joined`,
			roomID, s, delta[s]); err != nil {
			return fmt.Errorf("updating the servers of %s: %w", roomID, err)
		}
		if delta[s] < 0 {
			if _, err := tx.Exec(ctx, `DELETE FROM room_servers WHERE room_id = $1 AND server_name = $2 AND joined <= 0`,
				roomID, s); err != nil {
				return fmt.Errorf("updating the servers of %s: %w", roomID, err)
			}
		}
	}
	return nil
}

// StreamCursor is the last position the named follower handled; found is
// false for a follower never saved.
func (db *DB) StreamCursor(ctx context.Context, name string) (pos int64, found bool, err error) {
	err = db.QueryRow(ctx, `SELECT position FROM stream_cursors WHERE name = $1`, name).Scan(&pos)
	if errors.Is(err, ErrNotFound) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("loading the cursor of %s: %w", name, err)
	}
	return pos, true, nil
}

// SaveStreamCursor records that the named follower handled everything up to pos.
func (db *DB) SaveStreamCursor(ctx context.Context, name string, pos int64) error {
	if _, err := db.Exec(ctx, `INSERT INTO stream_cursors (name, position) VALUES ($1, $2)
		ON CONFLICT (name) DO UPDATE SET position = excluded.position`, name, pos); err != nil {
		return fmt.Errorf("saving the cursor of %s: %w", name, err)
	}
	return nil
}

// StreamEvents returns the events of every room with after < stream_pos <=
// upTo, ascending, at most limit of them, for followers of the stream.
// Soft-failed events are left out (they are not part of any room's timeline), and so are
// out-of-band memberships (storage/outofband.go: not of a room this server is in).
func (db *DB) StreamEvents(ctx context.Context, after, upTo int64, limit int) ([]*Event, error) {
	evs, err := collectEvents(db.Query(ctx, `SELECT `+eventColumns+` FROM events
		WHERE stream_pos > $1 AND stream_pos <= $2 AND NOT soft_failed AND NOT outlier AND out_of_band_version IS NULL
		ORDER BY stream_pos LIMIT $3`, after, upTo, limit))
	if err != nil {
		return nil, fmt.Errorf("reading events in (%d, %d]: %w", after, upTo, err)
	}
	return evs, nil
}
