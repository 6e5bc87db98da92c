package storage

import (
	"context"
	"errors"
	"fmt"
)

func init() { registerStreamTable("account_data") }

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
	err := db.QueryRow(ctx, `SELECT user_id, localpart, password_hash, is_admin, deactivated, created_ts, displayname, avatar_url
		FROM users WHERE user_id = $1`, userID).Scan(&u.UserID, &u.Localpart, &u.PasswordHash, &u.IsAdmin, &u.Deactivated, &u.CreatedTS, &dn, &av)
	if err != nil {
		return nil, err
	}
	u.DisplayName, u.AvatarURL = deref(dn), deref(av)
	return &u, nil
}

// CreateDeviceWithToken creates (or re-uses) a device and stores a new access
// token (and optional refresh token) for it, in one transaction.
func (db *DB) CreateDeviceWithToken(ctx context.Context, d Device, accessHash string, expiresTS int64, refreshHash string) error {
	return db.Tx(ctx, func(tx Querier) error {
		// Logging in with an existing device_id replaces that device's tokens.
		if _, err := tx.Exec(ctx, `DELETE FROM access_tokens WHERE user_id = $1 AND device_id = $2`, d.UserID, d.DeviceID); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM refresh_tokens WHERE user_id = $1 AND device_id = $2`, d.UserID, d.DeviceID); err != nil {
			return err
		}
		n, err := tx.Exec(ctx, `UPDATE devices SET display_name = COALESCE($3, display_name) WHERE user_id = $1 AND device_id = $2`,
			d.UserID, d.DeviceID, nullString(d.DisplayName))
		if err != nil {
			return err
		}
		if n == 0 {
			if _, err := tx.Exec(ctx, `INSERT INTO devices (user_id, device_id, display_name, created_ts, last_seen_ts, last_seen_ip)
				VALUES ($1, $2, $3, $4, $4, $5)`, d.UserID, d.DeviceID, nullString(d.DisplayName), d.CreatedTS, d.LastSeenIP); err != nil {
				return err
			}
		}
		if _, err := tx.Exec(ctx, `INSERT INTO access_tokens (token_hash, user_id, device_id, created_ts, expires_ts)
			VALUES ($1, $2, $3, $4, $5)`, accessHash, d.UserID, d.DeviceID, d.CreatedTS, expiresTS); err != nil {
			return err
		}
		if refreshHash != "" {
			if _, err := tx.Exec(ctx, `INSERT INTO refresh_tokens (token_hash, user_id, device_id, created_ts)
				VALUES ($1, $2, $3, $4)`, refreshHash, d.UserID, d.DeviceID, d.CreatedTS); err != nil {
				return err
			}
		}
		return nil
	})
}

// LookupAccessToken finds the owner of a hashed access token.
func (db *DB) LookupAccessToken(ctx context.Context, tokenHash string) (*TokenOwner, error) {
	var o TokenOwner
	err := db.QueryRow(ctx, `SELECT t.user_id, t.device_id, u.is_admin, u.deactivated, t.expires_ts
		FROM access_tokens t JOIN users u ON u.user_id = t.user_id WHERE t.token_hash = $1`, tokenHash).
		Scan(&o.UserID, &o.DeviceID, &o.IsAdmin, &o.Deactivated, &o.ExpiresTS)
	if err != nil {
		return nil, err
	}
	return &o, nil
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
