package storage

import (
	"context"
	"errors"
	"fmt"
)

// Server-side key backup (room_keys). A user's current backup is their
// highest version not deleted; keys may only be written to it.

// BackupVersion describes one backup version.
type BackupVersion struct {
	Version   int64
	Algorithm string
	AuthData  []byte
	Etag      int64
	Count     int64
}

// BackupKey is one session's backed-up key.
type BackupKey struct {
	RoomID            string
	SessionID         string
	FirstMessageIndex int64
	ForwardedCount    int64
	IsVerified        bool
	SessionData       []byte
}

// WrongBackupVersionError is returned when writing to a version that is not current.
type WrongBackupVersionError struct{ Current int64 } // 0: no current backup

func (e *WrongBackupVersionError) Error() string {
	return fmt.Sprintf("backup version is not current (current %d)", e.Current)
}

// CreateBackupVersion creates a new version, which becomes current.
func (db *DB) CreateBackupVersion(ctx context.Context, userID, algorithm string, authData []byte) (int64, error) {
	var v int64
	err := db.Tx(ctx, func(tx Querier) error {
		if err := tx.QueryRow(ctx, `SELECT COALESCE(MAX(version), 0) + 1 FROM backup_versions WHERE user_id = $1`, userID).Scan(&v); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO backup_versions (user_id, version, algorithm, auth_data) VALUES ($1, $2, $3, $4)`,
			userID, v, algorithm, string(authData))
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("creating backup version: %w", err)
	}
	return v, nil
}

func currentBackupVersion(ctx context.Context, q Querier, userID string) (int64, error) {
	var v int64
	err := q.QueryRow(ctx, `SELECT COALESCE(MAX(version), 0) FROM backup_versions WHERE user_id = $1 AND NOT deleted`, userID).Scan(&v)
	return v, err
}

// GetBackupVersion loads a version (0: the current one); ErrNotFound if it
// does not exist or was deleted.
func (db *DB) GetBackupVersion(ctx context.Context, userID string, version int64) (*BackupVersion, error) {
	if version == 0 {
		v, err := currentBackupVersion(ctx, db, userID)
		if err != nil {
			return nil, err
		}
		if v == 0 {
			return nil, ErrNotFound
		}
		version = v
	}
	b := BackupVersion{Version: version}
	var auth string
	err := db.QueryRow(ctx, `SELECT algorithm, auth_data, etag,
		(SELECT COUNT(*) FROM backup_keys k WHERE k.user_id = v.user_id AND k.version = v.version)
		FROM backup_versions v WHERE user_id = $1 AND version = $2 AND NOT deleted`, userID, version).
		Scan(&b.Algorithm, &auth, &b.Etag, &b.Count)
	if err != nil {
		return nil, err
	}
	b.AuthData = []byte(auth)
	return &b, nil
}

// UpdateBackupVersion replaces a version's auth_data; ErrNotFound if it does not exist.
func (db *DB) UpdateBackupVersion(ctx context.Context, userID string, version int64, authData []byte) error {
	n, err := db.Exec(ctx, `UPDATE backup_versions SET auth_data = $3 WHERE user_id = $1 AND version = $2 AND NOT deleted`,
		userID, version, string(authData))
	if err != nil {
		return fmt.Errorf("updating backup version: %w", err)
	}
	if n == 0 {
		return ErrNotFound
	}
	return nil
}

// DeleteBackupVersion deletes a version and its keys; ErrNotFound if it does not exist.
func (db *DB) DeleteBackupVersion(ctx context.Context, userID string, version int64) error {
	return db.Tx(ctx, func(tx Querier) error {
		n, err := tx.Exec(ctx, `UPDATE backup_versions SET deleted = TRUE WHERE user_id = $1 AND version = $2 AND NOT deleted`, userID, version)
		if err != nil {
			return fmt.Errorf("deleting backup version: %w", err)
		}
		if n == 0 {
			return ErrNotFound
		}
		_, err = tx.Exec(ctx, `DELETE FROM backup_keys WHERE user_id = $1 AND version = $2`, userID, version)
		return err
	})
}

// betterBackupKey applies the spec's rule for keeping an existing key:
// verified beats unverified, then lower first_message_index, then lower
// forwarded_count. It reports whether candidate should replace existing.
func betterBackupKey(candidate, existing BackupKey) bool {
	if candidate.IsVerified != existing.IsVerified {
		return candidate.IsVerified
	}
	if candidate.FirstMessageIndex != existing.FirstMessageIndex {
		return candidate.FirstMessageIndex < existing.FirstMessageIndex
	}
	return candidate.ForwardedCount < existing.ForwardedCount
}

// PutBackupKeys stores keys in version, which must be current
// (*WrongBackupVersionError otherwise; ErrNotFound if it does not exist).
// An existing key is replaced only by a better one. It returns the new etag and count.
func (db *DB) PutBackupKeys(ctx context.Context, userID string, version int64, keys []BackupKey) (etag, count int64, err error) {
	err = db.Tx(ctx, func(tx Querier) error {
		if err := checkCurrentBackup(ctx, tx, userID, version); err != nil {
			return err
		}
		changed := false
		for _, k := range keys {
			var old BackupKey
			err := tx.QueryRow(ctx, `SELECT first_message_index, forwarded_count, is_verified FROM backup_keys
				WHERE user_id = $1 AND version = $2 AND room_id = $3 AND session_id = $4`, userID, version, k.RoomID, k.SessionID).
				Scan(&old.FirstMessageIndex, &old.ForwardedCount, &old.IsVerified)
			switch {
			case errors.Is(err, ErrNotFound):
			case err != nil:
				return fmt.Errorf("reading backup key: %w", err)
			case !betterBackupKey(k, old):
				continue
			}
			if _, err := tx.Exec(ctx, `INSERT INTO backup_keys (user_id, version, room_id, session_id, first_message_index,
				forwarded_count, is_verified, session_data) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
				ON CONFLICT (user_id, version, room_id, session_id) DO UPDATE SET first_message_index = excluded.first_message_index,
				forwarded_count = excluded.forwarded_count, is_verified = excluded.is_verified, session_data = excluded.session_data`,
				userID, version, k.RoomID, k.SessionID, k.FirstMessageIndex, k.ForwardedCount, k.IsVerified, string(k.SessionData)); err != nil {
				return fmt.Errorf("storing backup key: %w", err)
			}
			changed = true
		}
		if changed {
			if _, err := tx.Exec(ctx, `UPDATE backup_versions SET etag = etag + 1 WHERE user_id = $1 AND version = $2`, userID, version); err != nil {
				return err
			}
		}
		return backupEtagCount(ctx, tx, userID, version, &etag, &count)
	})
	return etag, count, err
}

func checkCurrentBackup(ctx context.Context, tx Querier, userID string, version int64) error {
	cur, err := currentBackupVersion(ctx, tx, userID)
	if err != nil {
		return fmt.Errorf("reading current backup version: %w", err)
	}
	if cur != version {
		exists, err := backupVersionExists(ctx, tx, userID, version)
		if err != nil {
			return err
		}
		if !exists && cur == 0 {
			return ErrNotFound
		}
		return &WrongBackupVersionError{Current: cur}
	}
	return nil
}

// backupVersionExists reports whether the user has the version, not deleted.
func backupVersionExists(ctx context.Context, q Querier, userID string, version int64) (bool, error) {
	var n int
	err := q.QueryRow(ctx, `SELECT COUNT(*) FROM backup_versions WHERE user_id = $1 AND version = $2 AND NOT deleted`,
		userID, version).Scan(&n)
	return n > 0, err
}

// backupKeysWhere completes a statement on backup_keys whose WHERE clause
// holds user_id = $1 AND version = $2 so that it narrows to a room (roomID
// set) or to one session (sessionID too), with the arguments to run it with.
func backupKeysWhere(q, userID string, version int64, roomID, sessionID string) (string, []any) {
	args := []any{userID, version}
	if roomID != "" {
		q += ` AND room_id = $3`
		args = append(args, roomID)
		if sessionID != "" {
			q += ` AND session_id = $4`
			args = append(args, sessionID)
		}
	}
	return q, args
}

func backupEtagCount(ctx context.Context, q Querier, userID string, version int64, etag, count *int64) error {
	return q.QueryRow(ctx, `SELECT etag, (SELECT COUNT(*) FROM backup_keys WHERE user_id = $1 AND version = $2)
		FROM backup_versions WHERE user_id = $1 AND version = $2`, userID, version).Scan(etag, count)
}

// GetBackupKeys returns keys of a version, all of them (roomID ""), a room's
// (sessionID "") or one session's. ErrNotFound if the version does not exist.
func (db *DB) GetBackupKeys(ctx context.Context, userID string, version int64, roomID, sessionID string) ([]BackupKey, error) {
	exists, err := backupVersionExists(ctx, db, userID, version)
	if err != nil {
		return nil, err
	}
	if !exists {
		return nil, ErrNotFound
	}
	q, args := backupKeysWhere(`SELECT room_id, session_id, first_message_index, forwarded_count, is_verified, session_data
		FROM backup_keys WHERE user_id = $1 AND version = $2`, userID, version, roomID, sessionID)
	rows, err := db.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("reading backup keys: %w", err)
	}
	defer rows.Close()
	var out []BackupKey
	for rows.Next() {
		var k BackupKey
		var data string
		if err := rows.Scan(&k.RoomID, &k.SessionID, &k.FirstMessageIndex, &k.ForwardedCount, &k.IsVerified, &data); err != nil {
			return nil, err
		}
		k.SessionData = []byte(data)
		out = append(out, k)
	}
	return out, rows.Err()
}

// DeleteBackupKeys deletes keys of a version at the given level (as
// GetBackupKeys). ErrNotFound if the version does not exist.
func (db *DB) DeleteBackupKeys(ctx context.Context, userID string, version int64, roomID, sessionID string) (etag, count int64, err error) {
	err = db.Tx(ctx, func(tx Querier) error {
		exists, err := backupVersionExists(ctx, tx, userID, version)
		if err != nil {
			return err
		}
		if !exists {
			return ErrNotFound
		}
		q, args := backupKeysWhere(`DELETE FROM backup_keys WHERE user_id = $1 AND version = $2`, userID, version, roomID, sessionID)
		n, err := tx.Exec(ctx, q, args...)
		if err != nil {
			return fmt.Errorf("deleting backup keys: %w", err)
		}
		if n > 0 {
			if _, err := tx.Exec(ctx, `UPDATE backup_versions SET etag = etag + 1 WHERE user_id = $1 AND version = $2`, userID, version); err != nil {
				return err
			}
		}
		return backupEtagCount(ctx, tx, userID, version, &etag, &count)
	})
	return etag, count, err
}

// DehydratedDevice is a user's dehydrated device (MSC3814).
type DehydratedDevice struct {
	DeviceID    string
	DeviceData  []byte
	DisplayName string
}

// PutDehydratedDevice replaces the user's dehydrated device (removing the
// previous one's keys and messages) and stores the new device's keys, in one
// transaction; device-list change at up.StreamPos.
func (db *DB) PutDehydratedDevice(ctx context.Context, userID string, d DehydratedDevice, up KeyUpload) error {
	return db.Tx(ctx, func(tx Querier) error {
		var old string
		err := tx.QueryRow(ctx, `SELECT device_id FROM dehydrated_devices WHERE user_id = $1`, userID).Scan(&old)
		if err != nil && !errors.Is(err, ErrNotFound) {
			return fmt.Errorf("reading dehydrated device: %w", err)
		}
		if old != "" {
			if _, err := deleteDeviceKeysTx(ctx, tx, userID, []string{old}, up.StreamPos); err != nil {
				return err
			}
		}
		if _, err := tx.Exec(ctx, `INSERT INTO dehydrated_devices (user_id, device_id, device_data, display_name) VALUES ($1, $2, $3, $4)`,
			userID, d.DeviceID, string(d.DeviceData), d.DisplayName); err != nil {
			return fmt.Errorf("storing dehydrated device: %w", err)
		}
		_, err = uploadKeysTx(ctx, tx, up)
		return err
	})
}

// GetDehydratedDevice returns the user's dehydrated device; ErrNotFound if none.
func (db *DB) GetDehydratedDevice(ctx context.Context, userID string) (*DehydratedDevice, error) {
	var d DehydratedDevice
	var data string
	err := db.QueryRow(ctx, `SELECT device_id, device_data, display_name FROM dehydrated_devices WHERE user_id = $1`, userID).
		Scan(&d.DeviceID, &data, &d.DisplayName)
	if err != nil {
		return nil, err
	}
	d.DeviceData = []byte(data)
	return &d, nil
}
