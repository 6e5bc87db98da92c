package storage

import (
	"context"
	"errors"
	"fmt"
)

// Our users' device-list announcements awaiting the federation sender's
// queue (the keyserver's outbox, migration 0280). A change of a local
// user's devices or signing keys records here, in its own transaction,
// what other servers must be told; the keyserver numbers, queues and clears
// the rows, and announces what a crash left on startup.

// SigningKeysOutbox is the device_id of an outbox row standing for the
// user's signing keys (an m.signing_key_update).
const SigningKeysOutbox = ""

// signingKeysNumbered marks a signing-keys row taken by an announcement in
// progress (signing-key updates carry no stream_id).
const signingKeysNumbered = -1

// PendingAnnouncement is a numbered outbox row: an update to queue with
// this StreamID (DeviceID SigningKeysOutbox: the signing keys, StreamID -1).
type PendingAnnouncement struct {
	DeviceID string
	StreamID int64
}

func addOutbox(ctx context.Context, tx Querier, userID string, deviceIDs ...string) error {
	for _, d := range deviceIDs {
		if _, err := tx.Exec(ctx, `INSERT INTO device_list_outbox (user_id, device_id, stream_id) VALUES ($1, $2, 0)
			ON CONFLICT DO NOTHING`, userID, d); err != nil {
			return fmt.Errorf("recording %s's device-list announcement: %w", userID, err)
		}
	}
	return nil
}

// MarkDeviceRenamed records a local device's rename: a device-list change
// at pos and its announcement to other servers, in one transaction.
func (db *DB) MarkDeviceRenamed(ctx context.Context, userID, deviceID string, pos int64) error {
	return db.Tx(ctx, func(tx Querier) error {
		if err := markDeviceListChanged(ctx, tx, userID, pos); err != nil {
			return err
		}
		return addOutbox(ctx, tx, userID, deviceID)
	})
}

// NumberDeviceListAnnouncements gives userID's unnumbered device rows
// consecutive stream_ids (reserved in device_list_outbound, in device_id
// order) and takes the signing-keys row, in one transaction, and returns
// every numbered row: devices in stream_id order (those a crash left
// first), then the signing keys. The caller queues them in that order and
// clears each with DeviceListAnnounced; one caller per user at a time.
func (db *DB) NumberDeviceListAnnouncements(ctx context.Context, userID string) ([]PendingAnnouncement, error) {
	var out []PendingAnnouncement
	err := db.Tx(ctx, func(tx Querier) error {
		out = out[:0]
		fresh, err := collectStrings(tx.Query(ctx, `SELECT device_id FROM device_list_outbox
			WHERE user_id = $1 AND stream_id = 0 AND device_id <> '' ORDER BY device_id`, userID))
		if err != nil {
			return fmt.Errorf("reading %s's pending announcements: %w", userID, err)
		}
		if len(fresh) > 0 {
			var prev int64
			err := tx.QueryRow(ctx, `SELECT stream_id FROM device_list_outbound WHERE user_id = $1`, userID).Scan(&prev)
			if err != nil && !errors.Is(err, ErrNotFound) {
				return fmt.Errorf("reading %s's device-list stream id: %w", userID, err)
			}
			for i, d := range fresh {
				if _, err := tx.Exec(ctx, `UPDATE device_list_outbox SET stream_id = $3 WHERE user_id = $1 AND device_id = $2 AND stream_id = 0`,
					userID, d, prev+int64(i)+1); err != nil {
					return fmt.Errorf("numbering %s's announcement: %w", userID, err)
				}
			}
			if _, err := tx.Exec(ctx, `INSERT INTO device_list_outbound (user_id, stream_id) VALUES ($1, $2)
				ON CONFLICT (user_id) DO UPDATE SET stream_id = excluded.stream_id`, userID, prev+int64(len(fresh))); err != nil {
				return fmt.Errorf("reserving %s's device-list stream ids: %w", userID, err)
			}
		}
		// The signing keys: one pending update suffices (it carries the keys
		// current when it is sent).
		if _, err := tx.Exec(ctx, `INSERT INTO device_list_outbox (user_id, device_id, stream_id)
			SELECT user_id, device_id, $2 FROM device_list_outbox WHERE user_id = $1 AND device_id = '' AND stream_id = 0
			ON CONFLICT DO NOTHING`, userID, signingKeysNumbered); err != nil {
			return fmt.Errorf("taking %s's signing-key announcement: %w", userID, err)
		}
		if _, err := tx.Exec(ctx, `DELETE FROM device_list_outbox WHERE user_id = $1 AND device_id = '' AND stream_id = 0`, userID); err != nil {
			return fmt.Errorf("taking %s's signing-key announcement: %w", userID, err)
		}
		rows, err := tx.Query(ctx, `SELECT device_id, stream_id FROM device_list_outbox WHERE user_id = $1 AND stream_id <> 0
			ORDER BY CASE WHEN stream_id < 0 THEN 1 ELSE 0 END, stream_id`, userID)
		if err != nil {
			return fmt.Errorf("reading %s's numbered announcements: %w", userID, err)
		}
		defer rows.Close()
		for rows.Next() {
			var p PendingAnnouncement
			if err := rows.Scan(&p.DeviceID, &p.StreamID); err != nil {
				return err
			}
			out = append(out, p)
		}
		return rows.Err()
	})
	return out, err
}

// DeviceListAnnounced clears an outbox row once its update is queued.
func (db *DB) DeviceListAnnounced(ctx context.Context, userID string, p PendingAnnouncement) error {
	if _, err := db.Exec(ctx, `DELETE FROM device_list_outbox WHERE user_id = $1 AND device_id = $2 AND stream_id = $3`,
		userID, p.DeviceID, p.StreamID); err != nil {
		return fmt.Errorf("clearing %s's announcement: %w", userID, err)
	}
	return nil
}

// DropDeviceListAnnouncements clears all of userID's outbox rows (no other
// server is there to tell).
func (db *DB) DropDeviceListAnnouncements(ctx context.Context, userID string) error {
	if _, err := db.Exec(ctx, `DELETE FROM device_list_outbox WHERE user_id = $1`, userID); err != nil {
		return fmt.Errorf("clearing %s's announcements: %w", userID, err)
	}
	return nil
}

// UsersWithPendingAnnouncements lists up to limit users with outbox rows,
// after the user ID after (for paging).
func (db *DB) UsersWithPendingAnnouncements(ctx context.Context, after string, limit int) ([]string, error) {
	users, err := collectStrings(db.Query(ctx, `SELECT DISTINCT user_id FROM device_list_outbox WHERE user_id > $1
		ORDER BY user_id LIMIT $2`, after, limit))
	if err != nil {
		return nil, fmt.Errorf("reading pending device-list announcements: %w", err)
	}
	return users, nil
}

// signedOwnKeysOutbox records the announcements of the signatures signer
// added to their own keys: the signed devices, and the signing keys when
// the master key was signed (signatures on other users' keys stay private).
func signedOwnKeysOutbox(ctx context.Context, tx Querier, sigs []KeySignature) error {
	for _, s := range sigs {
		if s.TargetUserID != s.SignerUserID {
			continue
		}
		var n int
		if err := tx.QueryRow(ctx, `SELECT COUNT(*) FROM cross_signing_keys WHERE user_id = $1 AND key_type = 'master' AND public_key = $2`,
			s.TargetUserID, s.TargetKeyID).Scan(&n); err != nil {
			return fmt.Errorf("reading %s's master key: %w", s.TargetUserID, err)
		}
		target := s.TargetKeyID
		if n > 0 {
			target = SigningKeysOutbox
		}
		if err := addOutbox(ctx, tx, s.SignerUserID, target); err != nil {
			return err
		}
	}
	return nil
}
