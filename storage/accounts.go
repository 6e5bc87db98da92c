package storage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// User is a local account.
type User struct {
	UserID       string
	Localpart    string
	PasswordHash string
	IsAdmin      bool
	Deactivated  bool
	CreatedTS    int64
	DisplayName  string
	AvatarURL    string
	// ProfileFields holds extended profile fields (m.tz, custom keys).
	ProfileFields map[string]json.RawMessage
}

// Device is a user's logged-in device.
type Device struct {
	UserID      string
	DeviceID    string
	DisplayName string
	CreatedTS   int64
	LastSeenTS  int64
	LastSeenIP  string
}

// TokenOwner is what an access token authenticates.
type TokenOwner struct {
	UserID      string
	DeviceID    string
	IsAdmin     bool
	Deactivated bool
	ExpiresTS   int64
	// RefreshHash is the refresh token issued with the access token ("" if
	// none); RefreshPending says the refresh token it was exchanged for is
	// still valid, until ConfirmRefresh.
	RefreshHash    string
	RefreshPending bool
}

// ErrUserExists is returned when a user ID is taken.
var ErrUserExists = errors.New("user already exists")

// CreateUser inserts a new user.
func (db *DB) CreateUser(ctx context.Context, u User) error {
	_, err := db.Exec(ctx, `INSERT INTO users (user_id, localpart, password_hash, is_admin, created_ts, displayname)
		VALUES ($1, $2, $3, $4, $5, $6)`, u.UserID, u.Localpart, u.PasswordHash, u.IsAdmin, u.CreatedTS, nullString(u.DisplayName))
	if IsUniqueViolation(err) {
		return ErrUserExists
	}
	if err != nil {
		return fmt.Errorf("creating user %s: %w", u.UserID, err)
	}
	return nil
}

// GetUser loads a user by ID; ErrNotFound if there is none.
func (db *DB) GetUser(ctx context.Context, userID string) (*User, error) {
	var u User
	var dn, av *string
	var fields string
	err := db.QueryRow(ctx, `SELECT user_id, localpart, password_hash, is_admin, deactivated, created_ts, displayname, avatar_url, profile_fields
		FROM users WHERE user_id = $1`, userID).Scan(&u.UserID, &u.Localpart, &u.PasswordHash, &u.IsAdmin, &u.Deactivated, &u.CreatedTS, &dn, &av, &fields)
	if err != nil {
		return nil, err
	}
	u.DisplayName, u.AvatarURL = deref(dn), deref(av)
	if err := json.Unmarshal([]byte(fields), &u.ProfileFields); err != nil {
		return nil, fmt.Errorf("user %s: corrupt profile_fields: %w", userID, err)
	}
	return &u, nil
}

// UserExists reports whether a user ID (active or deactivated) is taken.
func (db *DB) UserExists(ctx context.Context, userID string) (bool, error) {
	var n int
	err := db.QueryRow(ctx, `SELECT COUNT(*) FROM users WHERE user_id = $1`, userID).Scan(&n)
	return n > 0, err
}

// SetDisplayName sets (or with "" clears) a user's display name.
func (db *DB) SetDisplayName(ctx context.Context, userID, name string) error {
	_, err := db.Exec(ctx, `UPDATE users SET displayname = $2 WHERE user_id = $1`, userID, nullString(name))
	return err
}

// SetAvatarURL sets (or with "" clears) a user's avatar.
func (db *DB) SetAvatarURL(ctx context.Context, userID, url string) error {
	_, err := db.Exec(ctx, `UPDATE users SET avatar_url = $2 WHERE user_id = $1`, userID, nullString(url))
	return err
}

// SetProfileFields replaces a user's extended profile fields.
func (db *DB) SetProfileFields(ctx context.Context, userID string, fields map[string]json.RawMessage) error {
	if fields == nil {
		fields = map[string]json.RawMessage{}
	}
	raw, err := json.Marshal(fields)
	if err != nil {
		return err
	}
	_, err = db.Exec(ctx, `UPDATE users SET profile_fields = $2 WHERE user_id = $1`, userID, string(raw))
	return err
}

// DeactivateUser marks a user deactivated and removes every device and token
// in one transaction; with erase it also clears the profile, account data and
// filters and records the user in erased_users (ErasedUsers). It returns
// the IDs of the devices removed.
func (db *DB) DeactivateUser(ctx context.Context, userID string, erase bool) ([]string, error) {
	var devices []string
	err := db.Tx(ctx, func(tx Querier) error {
		var err error
		if devices, err = deviceIDs(ctx, tx, userID); err != nil {
			return err
		}
		stmts := []string{
			`UPDATE users SET deactivated = TRUE WHERE user_id = $1`,
			`DELETE FROM access_tokens WHERE user_id = $1`,
			`DELETE FROM refresh_tokens WHERE user_id = $1`,
			`DELETE FROM login_tokens WHERE user_id = $1`,
			`DELETE FROM devices WHERE user_id = $1`,
			`DELETE FROM pushers WHERE user_id = $1`,
			`DELETE FROM uia_sessions WHERE user_id = $1`,
		}
		if erase {
			stmts = append(stmts,
				`UPDATE users SET displayname = NULL, avatar_url = NULL, profile_fields = '{}' WHERE user_id = $1`,
				`DELETE FROM account_data WHERE user_id = $1`,
				`DELETE FROM filters WHERE user_id = $1`,
			)
			if _, err := tx.Exec(ctx, `INSERT INTO erased_users (user_id, erased_ts) VALUES ($1, $2) ON CONFLICT (user_id) DO NOTHING`,
				userID, time.Now().UnixMilli()); err != nil {
				return err
			}
		}
		for _, q := range stmts {
			if _, err := tx.Exec(ctx, q, userID); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("deactivating %s: %w", userID, err)
	}
	if erase {
		db.addErased(userID)
	}
	return devices, nil
}

func deviceIDs(ctx context.Context, q Querier, userID string) ([]string, error) {
	return collectStrings(q.Query(ctx, `SELECT device_id FROM devices WHERE user_id = $1 ORDER BY device_id`, userID))
}

// CreateDeviceWithToken creates (or re-uses) a device and stores a new access
// token (and optional refresh token) for it, in one transaction.
func (db *DB) CreateDeviceWithToken(ctx context.Context, d Device, accessHash string, expiresTS int64, refreshHash string) error {
	return db.Tx(ctx, func(tx Querier) error {
		// Logging in with an existing device_id replaces that device's tokens.
		if err := deleteDeviceTokens(ctx, tx, d.UserID, d.DeviceID); err != nil {
			return err
		}
		n, err := tx.Exec(ctx, `UPDATE devices SET display_name = COALESCE($3, display_name), last_seen_ts = $4, last_seen_ip = $5
			WHERE user_id = $1 AND device_id = $2`,
			d.UserID, d.DeviceID, nullString(d.DisplayName), d.CreatedTS, d.LastSeenIP)
		if err != nil {
			return err
		}
		if n == 0 {
			if _, err := tx.Exec(ctx, `INSERT INTO devices (user_id, device_id, display_name, created_ts, last_seen_ts, last_seen_ip)
				VALUES ($1, $2, $3, $4, $4, $5)`, d.UserID, d.DeviceID, nullString(d.DisplayName), d.CreatedTS, d.LastSeenIP); err != nil {
				return err
			}
		}
		return insertTokens(ctx, tx, d.UserID, d.DeviceID, accessHash, expiresTS, refreshHash, d.CreatedTS)
	})
}

func deleteDeviceTokens(ctx context.Context, tx Querier, userID, deviceID string) error {
	if _, err := tx.Exec(ctx, `DELETE FROM access_tokens WHERE user_id = $1 AND device_id = $2`, userID, deviceID); err != nil {
		return err
	}
	_, err := tx.Exec(ctx, `DELETE FROM refresh_tokens WHERE user_id = $1 AND device_id = $2`, userID, deviceID)
	return err
}

// deleteDevice removes a device with its tokens and the pushers it
// registered (a pusher belongs to the session that set it, as in Synapse:
// pushers of other sessions go when a password change logs them out). It
// returns how many device rows went (0: there was no such device).
func deleteDevice(ctx context.Context, tx Querier, userID, deviceID string) (int64, error) {
	if err := deleteDeviceTokens(ctx, tx, userID, deviceID); err != nil {
		return 0, err
	}
	if _, err := tx.Exec(ctx, `DELETE FROM pushers WHERE user_id = $1 AND device_id = $2`, userID, deviceID); err != nil {
		return 0, err
	}
	return tx.Exec(ctx, `DELETE FROM devices WHERE user_id = $1 AND device_id = $2`, userID, deviceID)
}

func insertTokens(ctx context.Context, tx Querier, userID, deviceID, accessHash string, expiresTS int64, refreshHash string, now int64) error {
	if _, err := tx.Exec(ctx, `INSERT INTO access_tokens (token_hash, user_id, device_id, created_ts, expires_ts, refresh_hash)
		VALUES ($1, $2, $3, $4, $5, $6)`, accessHash, userID, deviceID, now, expiresTS, nullString(refreshHash)); err != nil {
		return err
	}
	if refreshHash != "" {
		if _, err := tx.Exec(ctx, `INSERT INTO refresh_tokens (token_hash, user_id, device_id, created_ts)
			VALUES ($1, $2, $3, $4)`, refreshHash, userID, deviceID, now); err != nil {
			return err
		}
	}
	return nil
}

// LookupAccessToken finds the owner of a hashed access token.
func (db *DB) LookupAccessToken(ctx context.Context, tokenHash string) (*TokenOwner, error) {
	var o TokenOwner
	var refresh *string
	err := db.QueryRow(ctx, `SELECT t.user_id, t.device_id, u.is_admin, u.deactivated, t.expires_ts, t.refresh_hash,
			t.refresh_hash IS NOT NULL AND EXISTS (SELECT 1 FROM refresh_tokens p WHERE p.next_hash = t.refresh_hash)
		FROM access_tokens t JOIN users u ON u.user_id = t.user_id WHERE t.token_hash = $1`, tokenHash).
		Scan(&o.UserID, &o.DeviceID, &o.IsAdmin, &o.Deactivated, &o.ExpiresTS, &refresh, &o.RefreshPending)
	if err != nil {
		return nil, err
	}
	o.RefreshHash = deref(refresh)
	return &o, nil
}

// RotateRefreshToken exchanges a refresh token for a new access and refresh
// token, in one transaction; ErrNotFound when it is unknown or revoked.
//
// The spec keeps the old refresh token valid until one of the new tokens is
// used, so a client that lost the answer can refresh again: the old token and
// the access token issued with it stay, marked as superseded by the new
// refresh token (next_hash), and whatever an earlier use of the same token
// issued is dropped. Everything else of the device goes: using a refresh token
// confirms it, revoking the token it replaced.
func (db *DB) RotateRefreshToken(ctx context.Context, oldRefreshHash, accessHash string, expiresTS int64, refreshHash string, now int64) (userID, deviceID string, err error) {
	err = db.Tx(ctx, func(tx Querier) error {
		// The update locks the row on PostgreSQL: concurrent uses of one
		// token run one after the other, and the last one's tokens win.
		if err := tx.QueryRow(ctx, `UPDATE refresh_tokens SET next_hash = $2 WHERE token_hash = $1 RETURNING user_id, device_id`,
			oldRefreshHash, refreshHash).Scan(&userID, &deviceID); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM refresh_tokens WHERE user_id = $1 AND device_id = $2 AND token_hash <> $3`,
			userID, deviceID, oldRefreshHash); err != nil {
			return err
		}
		if err := deleteAccessTokensExcept(ctx, tx, userID, deviceID, oldRefreshHash); err != nil {
			return err
		}
		return insertTokens(ctx, tx, userID, deviceID, accessHash, expiresTS, refreshHash, now)
	})
	return userID, deviceID, err
}

// ConfirmRefresh is called when an access token issued with refreshHash is
// first used: the refresh token exchanged for it, and the access tokens issued
// before, are revoked.
func (db *DB) ConfirmRefresh(ctx context.Context, userID, deviceID, refreshHash string) error {
	return db.Tx(ctx, func(tx Querier) error {
		n, err := tx.Exec(ctx, `DELETE FROM refresh_tokens WHERE user_id = $1 AND device_id = $2 AND next_hash = $3`,
			userID, deviceID, refreshHash)
		if err != nil || n == 0 {
			// Nothing to confirm: another request did, or the old refresh
			// token was used again meanwhile and these tokens are on their way out.
			return err
		}
		return deleteAccessTokensExcept(ctx, tx, userID, deviceID, refreshHash)
	})
}

// deleteAccessTokensExcept deletes a device's access tokens other than those
// issued with the refresh token refreshHash.
func deleteAccessTokensExcept(ctx context.Context, tx Querier, userID, deviceID, refreshHash string) error {
	_, err := tx.Exec(ctx, `DELETE FROM access_tokens WHERE user_id = $1 AND device_id = $2
		AND (refresh_hash IS NULL OR refresh_hash <> $3)`, userID, deviceID, refreshHash)
	return err
}

// CreateLoginToken stores a single-use login token.
func (db *DB) CreateLoginToken(ctx context.Context, tokenHash, userID string, expiresTS int64) error {
	_, err := db.Exec(ctx, `INSERT INTO login_tokens (token_hash, user_id, expires_ts) VALUES ($1, $2, $3)`, tokenHash, userID, expiresTS)
	return err
}

// ConsumeLoginToken deletes a login token and returns its user if it had not
// expired at now; ErrNotFound otherwise. Expired tokens are swept on the way.
func (db *DB) ConsumeLoginToken(ctx context.Context, tokenHash string, now int64) (string, error) {
	var userID string
	err := db.Tx(ctx, func(tx Querier) error {
		var expires int64
		if err := tx.QueryRow(ctx, `SELECT user_id, expires_ts FROM login_tokens WHERE token_hash = $1`, tokenHash).Scan(&userID, &expires); err != nil {
			return err
		}
		n, err := tx.Exec(ctx, `DELETE FROM login_tokens WHERE token_hash = $1`, tokenHash)
		if err != nil {
			return err
		}
		if n == 0 || expires <= now {
			return ErrNotFound
		}
		return nil
	})
	if err == nil || errors.Is(err, ErrNotFound) {
		_, _ = db.Exec(ctx, `DELETE FROM login_tokens WHERE expires_ts <= $1`, now)
	}
	return userID, err
}

// ListDevices returns a user's devices ordered by ID.
func (db *DB) ListDevices(ctx context.Context, userID string) ([]Device, error) {
	rows, err := db.Query(ctx, `SELECT user_id, device_id, display_name, created_ts, last_seen_ts, last_seen_ip
		FROM devices WHERE user_id = $1 ORDER BY device_id`, userID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Device
	for rows.Next() {
		var d Device
		var dn *string
		if err := rows.Scan(&d.UserID, &d.DeviceID, &dn, &d.CreatedTS, &d.LastSeenTS, &d.LastSeenIP); err != nil {
			return nil, err
		}
		d.DisplayName = deref(dn)
		out = append(out, d)
	}
	return out, rows.Err()
}

// GetDevice loads one device; ErrNotFound if the user has no such device.
func (db *DB) GetDevice(ctx context.Context, userID, deviceID string) (*Device, error) {
	var d Device
	var dn *string
	err := db.QueryRow(ctx, `SELECT user_id, device_id, display_name, created_ts, last_seen_ts, last_seen_ip
		FROM devices WHERE user_id = $1 AND device_id = $2`, userID, deviceID).
		Scan(&d.UserID, &d.DeviceID, &dn, &d.CreatedTS, &d.LastSeenTS, &d.LastSeenIP)
	if err != nil {
		return nil, err
	}
	d.DisplayName = deref(dn)
	return &d, nil
}

// SetDeviceDisplayName renames a device; ErrNotFound if it does not exist.
func (db *DB) SetDeviceDisplayName(ctx context.Context, userID, deviceID, name string) error {
	n, err := db.Exec(ctx, `UPDATE devices SET display_name = $3 WHERE user_id = $1 AND device_id = $2`, userID, deviceID, nullString(name))
	if err != nil {
		return err
	}
	if n == 0 {
		return ErrNotFound
	}
	return nil
}

// TouchDevice records when and from where a device was last seen.
func (db *DB) TouchDevice(ctx context.Context, userID, deviceID string, ts int64, ip string) error {
	_, err := db.Exec(ctx, `UPDATE devices SET last_seen_ts = $3, last_seen_ip = $4 WHERE user_id = $1 AND device_id = $2`, userID, deviceID, ts, ip)
	return err
}

// DeleteDevices removes devices and their tokens; it returns the IDs that existed.
func (db *DB) DeleteDevices(ctx context.Context, userID string, deviceIDs []string) ([]string, error) {
	var deleted []string
	err := db.Tx(ctx, func(tx Querier) error {
		deleted = deleted[:0]
		for _, d := range deviceIDs {
			n, err := deleteDevice(ctx, tx, userID, d)
			if err != nil {
				return err
			}
			if n > 0 {
				deleted = append(deleted, d)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("deleting devices of %s: %w", userID, err)
	}
	return deleted, nil
}

// DeleteOtherDevices removes every device of userID except keep ("" keeps none).
func (db *DB) DeleteOtherDevices(ctx context.Context, userID, keep string) ([]string, error) {
	ids, err := deviceIDs(ctx, db, userID)
	if err != nil {
		return nil, err
	}
	var del []string
	for _, d := range ids {
		if d != keep {
			del = append(del, d)
		}
	}
	return db.DeleteDevices(ctx, userID, del)
}

// ChangePassword sets a new password hash and, when logoutOthers, removes
// every other device with its tokens, atomically. It returns the removed devices.
func (db *DB) ChangePassword(ctx context.Context, userID, hash string, logoutOthers bool, keepDevice string) ([]string, error) {
	var deleted []string
	err := db.Tx(ctx, func(tx Querier) error {
		n, err := tx.Exec(ctx, `UPDATE users SET password_hash = $2 WHERE user_id = $1`, userID, hash)
		if err != nil {
			return err
		}
		if n == 0 {
			return ErrNotFound
		}
		if !logoutOthers {
			return nil
		}
		ids, err := deviceIDs(ctx, tx, userID)
		if err != nil {
			return err
		}
		for _, d := range ids {
			if d == keepDevice {
				continue
			}
			if _, err := deleteDevice(ctx, tx, userID, d); err != nil {
				return err
			}
			deleted = append(deleted, d)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("changing password of %s: %w", userID, err)
	}
	return deleted, nil
}

func nullString(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
