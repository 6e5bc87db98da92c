package storage

import (
	"context"
	"fmt"
)

func init() { registerStreamTable("presence") }

// Presence is a user's last known presence.
type Presence struct {
	UserID          string
	State           string // online, offline, unavailable
	StatusMsg       *string
	LastActiveTS    int64
	CurrentlyActive bool
	Pos             int64
}

// SetPresence stores p at stream position p.Pos.
func (db *DB) SetPresence(ctx context.Context, p Presence) error {
	_, err := db.Exec(ctx, `INSERT INTO presence (user_id, state, status_msg, last_active_ts, currently_active, stream_pos)
		VALUES ($1, $2, $3, $4, $5, $6)
		ON CONFLICT (user_id) DO UPDATE SET state = excluded.state, status_msg = excluded.status_msg,
			last_active_ts = excluded.last_active_ts, currently_active = excluded.currently_active,
			stream_pos = excluded.stream_pos`,
		p.UserID, p.State, p.StatusMsg, p.LastActiveTS, p.CurrentlyActive, p.Pos)
	if err != nil {
		return fmt.Errorf("storing presence of %s: %w", p.UserID, err)
	}
	return nil
}

const presenceColumns = `user_id, state, status_msg, last_active_ts, currently_active, stream_pos`

func scanPresence(r interface{ Scan(...any) error }) (Presence, error) {
	var p Presence
	err := r.Scan(&p.UserID, &p.State, &p.StatusMsg, &p.LastActiveTS, &p.CurrentlyActive, &p.Pos)
	return p, err
}

// GetPresence loads a user's presence; ErrNotFound when none was ever set.
func (db *DB) GetPresence(ctx context.Context, userID string) (*Presence, error) {
	p, err := scanPresence(db.QueryRow(ctx, `SELECT `+presenceColumns+` FROM presence WHERE user_id = $1`, userID))
	if err != nil {
		if err == ErrNotFound {
			return nil, err
		}
		return nil, fmt.Errorf("reading presence of %s: %w", userID, err)
	}
	return &p, nil
}

// PresenceSince returns the presence of the given users that changed in (from, to].
func (db *DB) PresenceSince(ctx context.Context, userIDs []string, from, to int64) ([]Presence, error) {
	var out []Presence
	err := inChunks(userIDs, func(chunk []string) error {
		rows, err := db.Query(ctx, `SELECT `+presenceColumns+` FROM presence
			WHERE stream_pos > $1 AND stream_pos <= $2 AND user_id IN (`+placeholders(3, len(chunk))+`) ORDER BY stream_pos`,
			append([]any{from, to}, anyArgs(chunk)...)...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			p, err := scanPresence(rows)
			if err != nil {
				return err
			}
			out = append(out, p)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("reading presence: %w", err)
	}
	return out, nil
}

// UsersNotOffline lists the users whose stored presence is not offline.
func (db *DB) UsersNotOffline(ctx context.Context) ([]string, error) {
	return db.userList(ctx, `SELECT user_id FROM presence WHERE state <> 'offline'`)
}
