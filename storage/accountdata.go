package storage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
)

func init() { registerStreamTable("account_data") }

// AccountData is one account data entry; RoomID is "" for global data.
type AccountData struct {
	RoomID    string
	Type      string
	Content   json.RawMessage
	StreamPos int64
}

// PutAccountData stores (or replaces) an account data entry at stream position pos.
func (db *DB) PutAccountData(ctx context.Context, userID, roomID, typ string, content []byte, pos int64) error {
	if _, err := db.Exec(ctx, `INSERT INTO account_data (user_id, room_id, type, content, stream_pos) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (user_id, room_id, type) DO UPDATE SET content = excluded.content, stream_pos = excluded.stream_pos`,
		userID, roomID, typ, string(content), pos); err != nil {
		return fmt.Errorf("storing account data %s for %s: %w", typ, userID, err)
	}
	return nil
}

// AccountDataSize is the size, in characters, of a user's account data
// entries (global and per room) other than the entry (roomID, typ).
func (db *DB) AccountDataSize(ctx context.Context, userID, roomID, typ string) (int64, error) {
	var n int64
	err := db.QueryRow(ctx, `SELECT COALESCE(SUM(LENGTH(content)), 0) FROM account_data
		WHERE user_id = $1 AND NOT (room_id = $2 AND type = $3)`, userID, roomID, typ).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("measuring account data of %s: %w", userID, err)
	}
	return n, nil
}

// GetAccountData loads one entry's content; ErrNotFound if there is none.
func (db *DB) GetAccountData(ctx context.Context, userID, roomID, typ string) (json.RawMessage, error) {
	var content string
	err := db.QueryRow(ctx, `SELECT content FROM account_data WHERE user_id = $1 AND room_id = $2 AND type = $3`,
		userID, roomID, typ).Scan(&content)
	if err != nil {
		return nil, err
	}
	return json.RawMessage(content), nil
}

// IgnoredUsers is the set of users in userID's m.ignored_user_list (nil
// when none): their invites and non-state events are not shown to userID.
func (db *DB) IgnoredUsers(ctx context.Context, userID string) (map[string]bool, error) {
	raw, err := db.GetAccountData(ctx, userID, "", "m.ignored_user_list")
	if errors.Is(err, ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the ignored users of %s: %w", userID, err)
	}
	var list struct {
		IgnoredUsers map[string]json.RawMessage `json:"ignored_users"`
	}
	_ = json.Unmarshal(raw, &list) // a malformed list ignores no one
	if len(list.IgnoredUsers) == 0 {
		return nil, nil
	}
	out := make(map[string]bool, len(list.IgnoredUsers))
	for u := range list.IgnoredUsers {
		out[u] = true
	}
	return out, nil
}

// AccountDataSince returns the user's entries (global and per room) changed in
// the stream range (fromPos, toPos], ordered by position. fromPos 0 returns all.
func (db *DB) AccountDataSince(ctx context.Context, userID string, fromPos, toPos int64) ([]AccountData, error) {
	rows, err := db.Query(ctx, `SELECT room_id, type, content, stream_pos FROM account_data
		WHERE user_id = $1 AND stream_pos > $2 AND stream_pos <= $3 ORDER BY stream_pos`, userID, fromPos, toPos)
	if err != nil {
		return nil, fmt.Errorf("reading account data of %s: %w", userID, err)
	}
	defer rows.Close()
	var out []AccountData
	for rows.Next() {
		var a AccountData
		var content string
		if err := rows.Scan(&a.RoomID, &a.Type, &content, &a.StreamPos); err != nil {
			return nil, err
		}
		a.Content = json.RawMessage(content)
		out = append(out, a)
	}
	return out, rows.Err()
}

// CreateFilter stores a filter and returns its ID (per user, from 0).
func (db *DB) CreateFilter(ctx context.Context, userID string, filter []byte) (int64, error) {
	var id int64
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		err = db.Tx(ctx, func(tx Querier) error {
			if err := tx.QueryRow(ctx, `SELECT COALESCE(MAX(filter_id) + 1, 0) FROM filters WHERE user_id = $1`, userID).Scan(&id); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `INSERT INTO filters (user_id, filter_id, filter) VALUES ($1, $2, $3)`, userID, id, string(filter))
			return err
		})
		if !IsUniqueViolation(err) { // a concurrent insert took the ID: try the next
			break
		}
	}
	if err != nil {
		return 0, fmt.Errorf("storing filter for %s: %w", userID, err)
	}
	return id, nil
}

// GetFilter loads a stored filter; ErrNotFound if there is none.
func (db *DB) GetFilter(ctx context.Context, userID string, filterID int64) (json.RawMessage, error) {
	var f string
	if err := db.QueryRow(ctx, `SELECT filter FROM filters WHERE user_id = $1 AND filter_id = $2`, userID, filterID).Scan(&f); err != nil {
		return nil, err
	}
	return json.RawMessage(f), nil
}

// AllocateStreamPos takes a position in the one stream (db.Stream.Allocate),
// for modules that see the store through an interface.
func (db *DB) AllocateStreamPos() (int64, func(), error) { return db.Stream.Allocate() }
