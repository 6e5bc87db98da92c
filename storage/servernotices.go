package storage

import (
	"context"
	"errors"
	"fmt"
)

// ServerNoticeRoom returns a user's server notices room; ErrNotFound if none.
func (db *DB) ServerNoticeRoom(ctx context.Context, userID string) (string, error) {
	var roomID string
	err := db.QueryRow(ctx, `SELECT room_id FROM server_notice_rooms WHERE user_id = $1`, userID).Scan(&roomID)
	if errors.Is(err, ErrNotFound) {
		return "", err
	}
	if err != nil {
		return "", fmt.Errorf("loading the server notices room of %s: %w", userID, err)
	}
	return roomID, nil
}

// SetServerNoticeRoom records a user's server notices room.
func (db *DB) SetServerNoticeRoom(ctx context.Context, userID, roomID string) error {
	_, err := db.Exec(ctx, `INSERT INTO server_notice_rooms (user_id, room_id) VALUES ($1, $2)
		ON CONFLICT (user_id) DO UPDATE SET room_id = excluded.room_id`, userID, roomID)
	if err != nil {
		return fmt.Errorf("recording the server notices room of %s: %w", userID, err)
	}
	return nil
}
