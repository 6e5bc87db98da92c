package storage

import (
	"context"
	"fmt"
)

func init() { registerStreamTable("receipts") }

// Receipt is one user's receipt of one type (and thread) in a room.
type Receipt struct {
	RoomID   string
	UserID   string
	Type     string // m.read, m.read.private, m.fully_read is account data, not a receipt
	ThreadID string // "" for an unthreaded receipt
	EventID  string
	TS       int64
	Pos      int64
}

// UpsertReceipt records r at stream position r.Pos, replacing the user's
// previous receipt of the same type and thread in the room.
func (db *DB) UpsertReceipt(ctx context.Context, r Receipt) error {
	_, err := db.Exec(ctx, `INSERT INTO receipts (room_id, user_id, receipt_type, thread_id, event_id, ts, stream_pos)
		VALUES ($1, $2, $3, $4, $5, $6, $7)
		ON CONFLICT (room_id, user_id, receipt_type, thread_id)
		DO UPDATE SET event_id = excluded.event_id, ts = excluded.ts, stream_pos = excluded.stream_pos`,
		r.RoomID, r.UserID, r.Type, r.ThreadID, r.EventID, r.TS, r.Pos)
	if err != nil {
		return fmt.Errorf("storing receipt in %s: %w", r.RoomID, err)
	}
	return nil
}

// ReceiptsInRange returns the receipts with a position in (from, to] in the
// rooms userID is joined to, or whose membership changed after from (an
// incremental /sync decides those from the membership at to). The rooms are
// chosen in SQL so that a sync reads its own rooms' receipts through the
// (room_id, stream_pos) index, never every receipt on the server.
func (db *DB) ReceiptsInRange(ctx context.Context, userID string, from, to int64) ([]Receipt, error) {
	return db.receiptQuery(ctx, `JOIN memberships m ON m.room_id = r.room_id AND m.user_id = $3
		AND (m.membership = 'join' OR m.stream_pos > $1)
		WHERE r.stream_pos > $1 AND r.stream_pos <= $2 ORDER BY r.stream_pos`, from, to, userID)
}

// RoomReceipts returns all of a room's receipts with positions <= to.
func (db *DB) RoomReceipts(ctx context.Context, roomID string, to int64) ([]Receipt, error) {
	return db.receiptQuery(ctx, `WHERE r.room_id = $1 AND r.stream_pos <= $2 ORDER BY r.stream_pos`, roomID, to)
}

func (db *DB) receiptQuery(ctx context.Context, where string, args ...any) ([]Receipt, error) {
	rows, err := db.Query(ctx, `SELECT r.room_id, r.user_id, r.receipt_type, r.thread_id, r.event_id, r.ts, r.stream_pos
		FROM receipts r `+where, args...)
	if err != nil {
		return nil, fmt.Errorf("reading receipts: %w", err)
	}
	defer rows.Close()
	var out []Receipt
	for rows.Next() {
		var r Receipt
		if err := rows.Scan(&r.RoomID, &r.UserID, &r.Type, &r.ThreadID, &r.EventID, &r.TS, &r.Pos); err != nil {
			return nil, fmt.Errorf("reading receipts: %w", err)
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// UserReceipts returns user's own receipts (all types and threads) in a room.
func (db *DB) UserReceipts(ctx context.Context, roomID, userID string) ([]Receipt, error) {
	rows, err := db.Query(ctx, `SELECT room_id, user_id, receipt_type, thread_id, event_id, ts, stream_pos
		FROM receipts WHERE room_id = $1 AND user_id = $2`, roomID, userID)
	if err != nil {
		return nil, fmt.Errorf("reading receipts of %s in %s: %w", userID, roomID, err)
	}
	defer rows.Close()
	var out []Receipt
	for rows.Next() {
		var r Receipt
		if err := rows.Scan(&r.RoomID, &r.UserID, &r.Type, &r.ThreadID, &r.EventID, &r.TS, &r.Pos); err != nil {
			return nil, fmt.Errorf("reading receipts of %s in %s: %w", userID, roomID, err)
		}
		out = append(out, r)
	}
	return out, rows.Err()
}
