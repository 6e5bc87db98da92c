package storage

import (
	"context"
	"errors"
	"fmt"
)

// CreateOpenIDToken stores an OpenID token valid until expiresTS, sweeps the
// expired ones and keeps at most maxPerUser live tokens per user (the
// oldest go first), so a client minting tokens in a loop costs bounded rows.
func (db *DB) CreateOpenIDToken(ctx context.Context, tokenHash, userID string, nowTS, expiresTS int64, maxPerUser int) error {
	err := db.Tx(ctx, func(tx Querier) error {
		if _, err := tx.Exec(ctx, `DELETE FROM openid_tokens WHERE expires_ts <= $1`, nowTS); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO openid_tokens (token_hash, user_id, created_ts, expires_ts) VALUES ($1, $2, $3, $4)`,
			tokenHash, userID, nowTS, expiresTS); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `DELETE FROM openid_tokens WHERE user_id = $1 AND token_hash NOT IN
			(SELECT token_hash FROM openid_tokens WHERE user_id = $1 ORDER BY created_ts DESC, token_hash LIMIT $2)`, userID, maxPerUser)
		return err
	})
	if err != nil {
		return fmt.Errorf("storing an OpenID token of %s: %w", userID, err)
	}
	return nil
}

// OpenIDTokenUser is the user an OpenID token was issued to, if it has not
// expired at nowTS and the user is not deactivated; ErrNotFound otherwise.
func (db *DB) OpenIDTokenUser(ctx context.Context, tokenHash string, nowTS int64) (string, error) {
	var userID string
	err := db.QueryRow(ctx, `SELECT t.user_id FROM openid_tokens t JOIN users u ON u.user_id = t.user_id
		WHERE t.token_hash = $1 AND t.expires_ts > $2 AND NOT u.deactivated`, tokenHash, nowTS).Scan(&userID)
	if errors.Is(err, ErrNotFound) {
		return "", err
	}
	if err != nil {
		return "", fmt.Errorf("reading an OpenID token: %w", err)
	}
	return userID, nil
}
