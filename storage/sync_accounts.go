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
	var f string
	err = db.QueryRow(ctx, `SELECT filter FROM filters WHERE user_id = $1 AND filter_id = $2`, userID, n).Scan(&f)
	if err != nil && err != ErrNotFound {
		err = fmt.Errorf("reading filter %s: %w", filterID, err)
	}
	return f, err
}

// AccountDataItem is one account data entry; RoomID is "" for global data.
type AccountDataItem struct {
	RoomID  string
	Type    string
	Content string
	Pos     int64
}

// AccountDataRange returns the user's account data written in (from, to].
func (db *DB) AccountDataRange(ctx context.Context, userID string, from, to int64) ([]AccountDataItem, error) {
	rows, err := db.Query(ctx, `SELECT room_id, type, content, stream_pos FROM account_data
		WHERE user_id = $1 AND stream_pos > $2 AND stream_pos <= $3 ORDER BY stream_pos`, userID, from, to)
	if err != nil {
		return nil, fmt.Errorf("reading account data of %s: %w", userID, err)
	}
	defer rows.Close()
	var out []AccountDataItem
	for rows.Next() {
		var a AccountDataItem
		if err := rows.Scan(&a.RoomID, &a.Type, &a.Content, &a.Pos); err != nil {
			return nil, fmt.Errorf("reading account data of %s: %w", userID, err)
		}
		out = append(out, a)
	}
	return out, rows.Err()
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
