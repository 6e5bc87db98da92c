package storage

// Batched reads for push delivery: one statement (per inChunkSize users) for
// all the recipients of an event, instead of one query per recipient.

import (
	"context"
	"encoding/json"
	"fmt"
)

// JoinedRoomsOfUsers maps each of the users to the rooms they are joined to
// (not forgotten), as RoomsOfUser(user, "join") lists them.
func (db *DB) JoinedRoomsOfUsers(ctx context.Context, userIDs []string) (map[string][]string, error) {
	out := map[string][]string{}
	err := inChunks(userIDs, func(chunk []string) error {
		rows, err := db.Query(ctx, `SELECT user_id, room_id FROM memberships
			WHERE membership = 'join' AND NOT forgotten AND user_id IN (`+placeholders(1, len(chunk))+`) ORDER BY stream_pos`,
			anyArgs(chunk)...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var u, r string
			if err := rows.Scan(&u, &r); err != nil {
				return err
			}
			out[u] = append(out[u], r)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("reading the joined rooms of %d users: %w", len(userIDs), err)
	}
	return out, nil
}

// MemberDisplayNames maps each of the users with a member event in the
// room's current state to its content's displayname ("" when unset).
func (db *DB) MemberDisplayNames(ctx context.Context, roomID string, userIDs []string) (map[string]string, error) {
	out := map[string]string{}
	err := inChunks(userIDs, func(chunk []string) error {
		rows, err := db.Query(ctx, `SELECT c.state_key, e.json FROM current_state c JOIN events e ON e.event_id = c.event_id
			WHERE c.room_id = $1 AND c.type = 'm.room.member' AND c.state_key IN (`+placeholders(2, len(chunk))+`)`,
			append([]any{roomID}, anyArgs(chunk)...)...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var u, js string
			if err := rows.Scan(&u, &js); err != nil {
				return err
			}
			var pdu struct {
				Content struct {
					DisplayName string `json:"displayname"`
				} `json:"content"`
			}
			_ = json.Unmarshal([]byte(js), &pdu)
			out[u] = pdu.Content.DisplayName
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("reading display names in %s: %w", roomID, err)
	}
	return out, nil
}

// ReceiptPosition is a receipt with the stream position of the event it
// names.
type ReceiptPosition struct {
	RoomID                 string // set by UserReceiptPositions
	UserID, Type, ThreadID string
	EventPos               int64
}

// ReceiptPositions lists the users' receipts in the room whose event is one
// of the room's (not soft-failed, not an outlier), with that event's
// position: UserReceipts and EventPosition for many users at once.
func (db *DB) ReceiptPositions(ctx context.Context, roomID string, userIDs []string) ([]ReceiptPosition, error) {
	var out []ReceiptPosition
	err := inChunks(userIDs, func(chunk []string) error {
		rows, err := db.Query(ctx, `SELECT r.user_id, r.receipt_type, r.thread_id, e.stream_pos FROM receipts r
			JOIN events e ON e.event_id = r.event_id AND e.room_id = r.room_id AND NOT e.soft_failed AND NOT e.outlier
			WHERE r.room_id = $1 AND r.user_id IN (`+placeholders(2, len(chunk))+`)`, append([]any{roomID}, anyArgs(chunk)...)...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var r ReceiptPosition
			if err := rows.Scan(&r.UserID, &r.Type, &r.ThreadID, &r.EventPos); err != nil {
				return err
			}
			out = append(out, r)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("reading receipts in %s: %w", roomID, err)
	}
	return out, nil
}

// MembershipHistories is UserMembershipHistory for many users of one room.
func (db *DB) MembershipHistories(ctx context.Context, roomID string, userIDs []string) (map[string][]UserMembershipChange, error) {
	out := map[string][]UserMembershipChange{}
	err := inChunks(userIDs, func(chunk []string) error {
		rows, err := db.Query(ctx, `SELECT state_key, room_id, COALESCE(membership, ''), event_id, stream_pos, sender FROM events
			WHERE type = 'm.room.member' AND room_id = $1 AND NOT soft_failed AND NOT outlier
			AND state_key IN (`+placeholders(2, len(chunk))+`) ORDER BY stream_pos ASC`, append([]any{roomID}, anyArgs(chunk)...)...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var u string
			var c UserMembershipChange
			if err := rows.Scan(&u, &c.RoomID, &c.Membership, &c.EventID, &c.StreamPos, &c.Sender); err != nil {
				return err
			}
			out[u] = append(out[u], c)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("reading membership histories in %s: %w", roomID, err)
	}
	return out, nil
}
