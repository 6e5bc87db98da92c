package storage

import (
	"context"
	"fmt"
	"strings"
	"time"
)

func init() { registerStreamTable("push_rules") }

// PushRules returns the user's stored ruleset JSON and its stream position;
// ErrNotFound when the user never changed a rule (the server defaults apply).
func (db *DB) PushRules(ctx context.Context, userID string) (ruleset string, pos int64, err error) {
	err = db.QueryRow(ctx, `SELECT ruleset, stream_pos FROM push_rules WHERE user_id = $1`, userID).Scan(&ruleset, &pos)
	if err != nil && err != ErrNotFound {
		err = fmt.Errorf("reading push rules of %s: %w", userID, err)
	}
	return ruleset, pos, err
}

// UpdatePushRules runs a read-modify-write of the user's ruleset at stream
// position pos, serialized against concurrent updates of the same user.
// update receives the stored JSON ("" when none) and returns the new JSON, or
// an error that aborts the change.
func (db *DB) UpdatePushRules(ctx context.Context, userID string, pos int64, update func(current string) (string, error)) error {
	return db.Tx(ctx, func(tx Querier) error {
		// Take the row lock first (PostgreSQL); SQLite's write transaction is exclusive already.
		if _, err := tx.Exec(ctx, `INSERT INTO push_rules (user_id, ruleset, stream_pos) VALUES ($1, '', 0)
			ON CONFLICT (user_id) DO NOTHING`, userID); err != nil {
			return fmt.Errorf("locking push rules of %s: %w", userID, err)
		}
		q := `SELECT ruleset FROM push_rules WHERE user_id = $1`
		if db.dialect == Postgres {
			q += ` FOR UPDATE`
		}
		var current string
		if err := tx.QueryRow(ctx, q, userID).Scan(&current); err != nil {
			return fmt.Errorf("reading push rules of %s: %w", userID, err)
		}
		next, err := update(current)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE push_rules SET ruleset = $2, stream_pos = $3 WHERE user_id = $1`, userID, next, pos); err != nil {
			return fmt.Errorf("storing push rules of %s: %w", userID, err)
		}
		return nil
	})
}

// Pusher is a registered push gateway target.
type Pusher struct {
	UserID   string
	AppID    string
	PushKey  string
	DeviceID string
	JSON     string // the pusher object as set by the client
	// CreatedTS is when the pusher was first set (ms); read, never written.
	CreatedTS int64
}

// SetPusher adds or replaces a pusher. With append=false, pushers of other
// users with the same app_id and pushkey are removed, as the spec asks.
func (db *DB) SetPusher(ctx context.Context, p Pusher, appendPusher bool) error {
	return db.Tx(ctx, func(tx Querier) error {
		if !appendPusher {
			if _, err := tx.Exec(ctx, `DELETE FROM pushers WHERE app_id = $1 AND pushkey = $2 AND user_id <> $3`, p.AppID, p.PushKey, p.UserID); err != nil {
				return fmt.Errorf("replacing pushers: %w", err)
			}
		}
		_, err := tx.Exec(ctx, `INSERT INTO pushers (user_id, app_id, pushkey, device_id, pusher, created_ts)
			VALUES ($1, $2, $3, $4, $5, $6)
			ON CONFLICT (user_id, app_id, pushkey) DO UPDATE SET device_id = excluded.device_id, pusher = excluded.pusher`,
			p.UserID, p.AppID, p.PushKey, p.DeviceID, p.JSON, time.Now().UnixMilli())
		if err != nil {
			return fmt.Errorf("storing pusher: %w", err)
		}
		return nil
	})
}

// DeletePusher removes the user's pusher for app_id and pushkey (no error if absent).
func (db *DB) DeletePusher(ctx context.Context, userID, appID, pushKey string) error {
	if _, err := db.Exec(ctx, `DELETE FROM pushers WHERE user_id = $1 AND app_id = $2 AND pushkey = $3`, userID, appID, pushKey); err != nil {
		return fmt.Errorf("deleting pusher: %w", err)
	}
	return nil
}

// Pushers lists the user's pushers.
func (db *DB) Pushers(ctx context.Context, userID string) ([]Pusher, error) {
	return db.scanPushers(ctx, `SELECT user_id, app_id, pushkey, device_id, pusher, created_ts FROM pushers WHERE user_id = $1 ORDER BY created_ts, app_id, pushkey`, userID)
}

func (db *DB) scanPushers(ctx context.Context, query string, args ...any) ([]Pusher, error) {
	rows, err := db.Query(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("listing pushers: %w", err)
	}
	defer rows.Close()
	var out []Pusher
	for rows.Next() {
		var p Pusher
		if err := rows.Scan(&p.UserID, &p.AppID, &p.PushKey, &p.DeviceID, &p.JSON, &p.CreatedTS); err != nil {
			return nil, fmt.Errorf("listing pushers: %w", err)
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// UsersWithPushRulesMentioning returns the users whose own push rules contain
// text (a room ID): the few to look at when a room is replaced, instead of
// reading every member's rules. A superset (LIKE's "_" matches any
// character); callers match exactly.
func (db *DB) UsersWithPushRulesMentioning(ctx context.Context, text string) ([]string, error) {
	rows, err := db.Query(ctx, `SELECT user_id FROM push_rules WHERE ruleset LIKE $1`, "%"+strings.ReplaceAll(text, "%", "")+"%")
	if err != nil {
		return nil, fmt.Errorf("finding push rules mentioning %s: %w", text, err)
	}
	defer rows.Close()
	var users []string
	for rows.Next() {
		var u string
		if err := rows.Scan(&u); err != nil {
			return nil, err
		}
		users = append(users, u)
	}
	return users, rows.Err()
}
