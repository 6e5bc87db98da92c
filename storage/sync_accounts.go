package storage

// Read-side queries /sync makes of the account tables (0001_accounts.sql):
// stored filters and account data by stream range.

import (
	"context"
	"fmt"
	"strconv"
)

// SyncFilter returns a stored filter's JSON; ErrNotFound when the user has no
// filter with that ID.
func (db *DB) SyncFilter(ctx context.Context, userID, filterID string) (string, error) {
	n, err := strconv.ParseInt(filterID, 10, 64)
	if err != nil {
		return "", ErrNotFound
	}
	f, err := db.GetFilter(ctx, userID, n)
	if err != nil && err != ErrNotFound {
		err = fmt.Errorf("reading filter %s: %w", filterID, err)
	}
	return string(f), err
}

// AccountDataItem is one account data entry as /sync reads it; RoomID is ""
// for global data. It is AccountData with the content as a string.
type AccountDataItem struct {
	RoomID  string
	Type    string
	Content string
	Pos     int64
}

// AccountDataRange returns the user's account data written in (from, to]:
// AccountDataSince in the shape clientapi/sync reads.
func (db *DB) AccountDataRange(ctx context.Context, userID string, from, to int64) ([]AccountDataItem, error) {
	list, err := db.AccountDataSince(ctx, userID, from, to)
	if err != nil {
		return nil, err
	}
	out := make([]AccountDataItem, len(list))
	for i, a := range list {
		out[i] = AccountDataItem{RoomID: a.RoomID, Type: a.Type, Content: string(a.Content), Pos: a.StreamPos}
	}
	return out, nil
}

// RoomMembersSummary returns the room's joined and invited users (current
// state), in the order they got that membership.
func (db *DB) RoomMembersSummary(ctx context.Context, roomID string) (joined, invited []string, err error) {
	rows, err := db.Query(ctx, `SELECT user_id, membership FROM memberships
		WHERE room_id = $1 AND membership IN ('join', 'invite') ORDER BY stream_pos`, roomID)
	if err != nil {
		return nil, nil, fmt.Errorf("reading members of %s: %w", roomID, err)
	}
	defer rows.Close()
	for rows.Next() {
		var u, m string
		if err := rows.Scan(&u, &m); err != nil {
			return nil, nil, fmt.Errorf("reading members of %s: %w", roomID, err)
		}
		if m == "join" {
			joined = append(joined, u)
		} else {
			invited = append(invited, u)
		}
	}
	return joined, invited, rows.Err()
}
