package storage

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// The push queue (migration 0370): notifications waiting for push gateways,
// one row per pusher, delivered by push.Delivery.

// PushQueueItem is one queued notification for one pusher.
type PushQueueItem struct {
	ID       int64
	UserID   string
	AppID    string
	PushKey  string
	URL      string // the gateway
	Dedup    string // unique key: the same event for the same pusher is queued once
	Body     string // the request body
	QueuedTS int64  // ms
	Attempts int64
}

// EnqueuePushes queues items in one transaction; an item whose Dedup key is
// already queued (pending or done) is left out.
func (db *DB) EnqueuePushes(ctx context.Context, items []PushQueueItem) error {
	if len(items) == 0 {
		return nil
	}
	err := db.Tx(ctx, func(tx Querier) error {
		for _, it := range items {
			if _, err := tx.Exec(ctx, `INSERT INTO push_queue (user_id, app_id, pushkey, url, dedup, body, queued_ts)
				VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (dedup) DO NOTHING`,
				it.UserID, it.AppID, it.PushKey, it.URL, it.Dedup, it.Body, it.QueuedTS); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("queueing %d pushes: %w", len(items), err)
	}
	return nil
}

// PendingPushGateways lists the gateways with pending pushes.
func (db *DB) PendingPushGateways(ctx context.Context) ([]string, error) {
	rows, err := db.Query(ctx, `SELECT DISTINCT url FROM push_queue WHERE done_ts = 0`)
	if err != nil {
		return nil, fmt.Errorf("listing push gateways: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var u string
		if err := rows.Scan(&u); err != nil {
			return nil, fmt.Errorf("listing push gateways: %w", err)
		}
		out = append(out, u)
	}
	return out, rows.Err()
}

// PendingPushes are a gateway's first pending pushes, oldest first. Pushes
// whose pusher is gone (deleted by its user, its device logged out, the
// account deactivated) are marked gone first: they are never sent.
func (db *DB) PendingPushes(ctx context.Context, url string, limit int) ([]PushQueueItem, error) {
	if _, err := db.Exec(ctx, `UPDATE push_queue SET done_ts = $2, result = 'gone'
		WHERE url = $1 AND done_ts = 0 AND NOT EXISTS (SELECT 1 FROM pushers p
			WHERE p.user_id = push_queue.user_id AND p.app_id = push_queue.app_id AND p.pushkey = push_queue.pushkey)`,
		url, time.Now().UnixMilli()); err != nil {
		return nil, fmt.Errorf("dropping the pushes of deleted pushers: %w", err)
	}
	rows, err := db.Query(ctx, `SELECT id, user_id, app_id, pushkey, url, dedup, body, queued_ts, attempts
		FROM push_queue WHERE url = $1 AND done_ts = 0 ORDER BY id LIMIT $2`, url, limit)
	if err != nil {
		return nil, fmt.Errorf("reading the push queue: %w", err)
	}
	defer rows.Close()
	var out []PushQueueItem
	for rows.Next() {
		var it PushQueueItem
		if err := rows.Scan(&it.ID, &it.UserID, &it.AppID, &it.PushKey, &it.URL, &it.Dedup, &it.Body, &it.QueuedTS, &it.Attempts); err != nil {
			return nil, fmt.Errorf("reading the push queue: %w", err)
		}
		out = append(out, it)
	}
	return out, rows.Err()
}

// FinishPushes marks pushes done with result (sent, rejected, refused,
// expired, gone) at ts (ms).
func (db *DB) FinishPushes(ctx context.Context, ids []int64, result string, ts int64) error {
	if len(ids) == 0 {
		return nil
	}
	args := []any{result, ts}
	ph := make([]string, len(ids))
	for i, id := range ids {
		args = append(args, id)
		ph[i] = fmt.Sprintf("$%d", i+3)
	}
	if _, err := db.Exec(ctx, `UPDATE push_queue SET done_ts = $2, result = $1 WHERE id IN (`+strings.Join(ph, ", ")+`)`, args...); err != nil {
		return fmt.Errorf("finishing %d pushes: %w", len(ids), err)
	}
	return nil
}

// CountPushAttempt records a failed attempt at a push.
func (db *DB) CountPushAttempt(ctx context.Context, id int64) error {
	if _, err := db.Exec(ctx, `UPDATE push_queue SET attempts = attempts + 1 WHERE id = $1`, id); err != nil {
		return fmt.Errorf("counting a push attempt: %w", err)
	}
	return nil
}

// PrunePushQueue deletes the pushes done before ts (ms).
func (db *DB) PrunePushQueue(ctx context.Context, before int64) error {
	if _, err := db.Exec(ctx, `DELETE FROM push_queue WHERE done_ts > 0 AND done_ts < $1`, before); err != nil {
		return fmt.Errorf("pruning the push queue: %w", err)
	}
	return nil
}

// PushQueueDepth is the number of pending pushes.
func (db *DB) PushQueueDepth(ctx context.Context) (int64, error) {
	var n int64
	if err := db.QueryRow(ctx, `SELECT COUNT(*) FROM push_queue WHERE done_ts = 0`).Scan(&n); err != nil {
		return 0, fmt.Errorf("counting pending pushes: %w", err)
	}
	return n, nil
}

// RoomPushers lists the pushers of the users joined to roomID whose join
// came before stream position before (an event there does not notify those
// who joined after it); pushers belong to local users only.
func (db *DB) RoomPushers(ctx context.Context, roomID string, before int64) ([]Pusher, error) {
	return db.scanPushers(ctx, `SELECT p.user_id, p.app_id, p.pushkey, p.device_id, p.pusher, p.created_ts
		FROM pushers p JOIN memberships m ON m.user_id = p.user_id
		WHERE m.room_id = $1 AND m.membership = 'join' AND m.stream_pos < $2 ORDER BY p.user_id, p.created_ts`, roomID, before)
}

// DeletePushersByKey removes the pushers of app_id and pushkey, whoever set
// them (a gateway rejected the pushkey), and marks their pending pushes gone.
func (db *DB) DeletePushersByKey(ctx context.Context, appID, pushKey string, ts int64) error {
	err := db.Tx(ctx, func(tx Querier) error {
		if _, err := tx.Exec(ctx, `DELETE FROM pushers WHERE app_id = $1 AND pushkey = $2`, appID, pushKey); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `UPDATE push_queue SET done_ts = $3, result = 'gone'
			WHERE app_id = $1 AND pushkey = $2 AND done_ts = 0`, appID, pushKey, ts)
		return err
	})
	if err != nil {
		return fmt.Errorf("deleting rejected pushers: %w", err)
	}
	return nil
}
