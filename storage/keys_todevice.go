package storage

import (
	"context"
	"fmt"
)

// ToDeviceMessage is a to-device message for one target device.
type ToDeviceMessage struct {
	UserID, DeviceID string // target; DeviceID "*" on input means every device of UserID
	StreamPos        int64
	Sender           string
	Type             string
	Content          []byte
}

// SendToDevice stores messages sent by (senderUser, senderDevice) under txnID
// at pos, once: a transaction ID already handled for that device stores
// nothing and reports dup. Targets that are not devices of the user (or the
// user's dehydrated device) are dropped, as are "*" targets' missing devices.
// Each target device keeps at most maxPending messages; the oldest are
// dropped beyond that. It returns the users that received something.
func (db *DB) SendToDevice(ctx context.Context, senderUser, senderDevice, txnID string, msgs []ToDeviceMessage,
	pos, now int64, maxPending int) (delivered []string, dup bool, err error) {
	err = db.Tx(ctx, func(tx Querier) error {
		delivered, dup = nil, false
		n, err := tx.Exec(ctx, `INSERT INTO to_device_txns (user_id, device_id, txn_id, created_ts) VALUES ($1, $2, $3, $4)
			ON CONFLICT DO NOTHING`, senderUser, senderDevice, txnID, now)
		if err != nil {
			return fmt.Errorf("recording to-device txn: %w", err)
		}
		if n == 0 {
			dup = true
			return nil
		}
		devices, err := devicesOf(ctx, tx, msgs)
		if err != nil {
			return err
		}
		seen := map[string]bool{}
		for _, m := range msgs {
			devs := devices[m.UserID]
			targets := []string{m.DeviceID}
			if m.DeviceID == "*" {
				targets = targets[:0]
				for d := range devs {
					targets = append(targets, d)
				}
			}
			for _, d := range targets {
				if !devs[d] {
					continue
				}
				if _, err := tx.Exec(ctx, `INSERT INTO to_device_messages (user_id, device_id, stream_pos, sender, type, content)
					VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (user_id, device_id, stream_pos)
					DO UPDATE SET sender = excluded.sender, type = excluded.type, content = excluded.content`,
					m.UserID, d, pos, m.Sender, m.Type, string(m.Content)); err != nil {
					return fmt.Errorf("storing to-device message: %w", err)
				}
				// Bound the queue: drop what lies beyond the newest maxPending.
				if _, err := tx.Exec(ctx, `DELETE FROM to_device_messages WHERE user_id = $1 AND device_id = $2 AND stream_pos <=
					(SELECT stream_pos FROM to_device_messages WHERE user_id = $1 AND device_id = $2
					 ORDER BY stream_pos DESC LIMIT 1 OFFSET $3)`, m.UserID, d, maxPending); err != nil {
					return fmt.Errorf("trimming to-device queue: %w", err)
				}
				if !seen[m.UserID] {
					seen[m.UserID] = true
					delivered = append(delivered, m.UserID)
				}
			}
		}
		// Transaction IDs only need to outlive client retries.
		_, err = tx.Exec(ctx, `DELETE FROM to_device_txns WHERE user_id = $1 AND device_id = $2 AND created_ts < $3`,
			senderUser, senderDevice, now-24*3600*1000)
		return err
	})
	return delivered, dup, err
}

// devicesOf lists the devices (dehydrated ones too) of the users msgs are
// for: user → device IDs. One query per chunk of users, not per user: a
// request may name tens of thousands of users, and this runs in the write
// transaction.
func devicesOf(ctx context.Context, tx Querier, msgs []ToDeviceMessage) (map[string]map[string]bool, error) {
	devices := map[string]map[string]bool{}
	var users []string
	for _, m := range msgs {
		if _, ok := devices[m.UserID]; !ok {
			devices[m.UserID] = map[string]bool{}
			users = append(users, m.UserID)
		}
	}
	err := inChunks(users, func(chunk []string) error {
		in := placeholders(1, len(chunk))
		rows, err := tx.Query(ctx, `SELECT user_id, device_id FROM devices WHERE user_id IN (`+in+`)
			UNION SELECT user_id, device_id FROM dehydrated_devices WHERE user_id IN (`+in+`)`, anyArgs(chunk)...)
		if err != nil {
			return fmt.Errorf("listing devices: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var u, d string
			if err := rows.Scan(&u, &d); err != nil {
				return err
			}
			devices[u][d] = true
		}
		return rows.Err()
	})
	return devices, err
}

// ToDeviceSince returns up to limit messages for a device after stream position after, oldest first.
func (db *DB) ToDeviceSince(ctx context.Context, userID, deviceID string, after int64, limit int) ([]ToDeviceMessage, error) {
	rows, err := db.Query(ctx, `SELECT stream_pos, sender, type, content FROM to_device_messages
		WHERE user_id = $1 AND device_id = $2 AND stream_pos > $3 ORDER BY stream_pos LIMIT $4`, userID, deviceID, after, limit)
	if err != nil {
		return nil, fmt.Errorf("reading to-device messages: %w", err)
	}
	defer rows.Close()
	var out []ToDeviceMessage
	for rows.Next() {
		m := ToDeviceMessage{UserID: userID, DeviceID: deviceID}
		var content string
		if err := rows.Scan(&m.StreamPos, &m.Sender, &m.Type, &content); err != nil {
			return nil, err
		}
		m.Content = []byte(content)
		out = append(out, m)
	}
	return out, rows.Err()
}

// DeleteToDeviceUpTo deletes a device's messages at or below pos (acknowledged by its next sync).
func (db *DB) DeleteToDeviceUpTo(ctx context.Context, userID, deviceID string, pos int64) error {
	if _, err := db.Exec(ctx, `DELETE FROM to_device_messages WHERE user_id = $1 AND device_id = $2 AND stream_pos <= $3`,
		userID, deviceID, pos); err != nil {
		return fmt.Errorf("deleting to-device messages: %w", err)
	}
	return nil
}
