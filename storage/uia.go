package storage

import (
	"context"
	"encoding/json"
	"fmt"
)

// UIASession is a user-interactive authentication session.
type UIASession struct {
	SessionID string
	UserID    string // "" while registering
	Request   string // method + path it was opened for
	Completed []string
	// RegistrationToken is a database registration token this session holds
	// a pending use of.
	RegistrationToken string
	CreatedTS         int64
}

// CreateUIASession stores a new session.
func (db *DB) CreateUIASession(ctx context.Context, s UIASession) error {
	_, err := db.Exec(ctx, `INSERT INTO uia_sessions (session_id, user_id, request, completed, created_ts) VALUES ($1, $2, $3, '[]', $4)`,
		s.SessionID, s.UserID, s.Request, s.CreatedTS)
	if err != nil {
		return fmt.Errorf("creating UIA session: %w", err)
	}
	return nil
}

// GetUIASession loads a session; ErrNotFound if there is none.
func (db *DB) GetUIASession(ctx context.Context, sessionID string) (*UIASession, error) {
	var s UIASession
	var completed string
	err := db.QueryRow(ctx, `SELECT session_id, user_id, request, completed, registration_token, created_ts FROM uia_sessions WHERE session_id = $1`,
		sessionID).Scan(&s.SessionID, &s.UserID, &s.Request, &completed, &s.RegistrationToken, &s.CreatedTS)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal([]byte(completed), &s.Completed); err != nil {
		return nil, fmt.Errorf("UIA session %s: corrupt completed list: %w", sessionID, err)
	}
	return &s, nil
}

// CompleteUIAStage records a completed stage.
func (db *DB) CompleteUIAStage(ctx context.Context, sessionID string, completed []string) error {
	raw, _ := json.Marshal(completed)
	_, err := db.Exec(ctx, `UPDATE uia_sessions SET completed = $2 WHERE session_id = $1`, sessionID, string(raw))
	return err
}

// ClaimUIASession atomically uses up a session: exactly one caller gets it
// (with the registration token it holds a pending use of, or ""); every other
// concurrent or later caller gets ErrNotFound.
func (db *DB) ClaimUIASession(ctx context.Context, sessionID string) (registrationToken string, err error) {
	err = db.Tx(ctx, func(tx Querier) error {
		return tx.QueryRow(ctx, `DELETE FROM uia_sessions WHERE session_id = $1 RETURNING registration_token`, sessionID).
			Scan(&registrationToken)
	})
	return registrationToken, err
}

// ExpireUIASessions deletes sessions created before `before`, releasing the
// pending registration-token uses they held.
func (db *DB) ExpireUIASessions(ctx context.Context, before int64) error {
	return db.Tx(ctx, func(tx Querier) error {
		tokens, err := collectStrings(tx.Query(ctx, `SELECT registration_token FROM uia_sessions WHERE created_ts < $1 AND registration_token <> ''`, before))
		if err != nil {
			return err
		}
		for _, t := range tokens {
			if _, err := tx.Exec(ctx, `UPDATE registration_tokens SET pending = pending - 1 WHERE token = $1 AND pending > 0`, t); err != nil {
				return err
			}
		}
		_, err = tx.Exec(ctx, `DELETE FROM uia_sessions WHERE created_ts < $1`, before)
		return err
	})
}

// RegistrationToken is a token stored in the database.
type RegistrationToken struct {
	Token       string
	UsesAllowed *int64 // nil: unlimited
	Pending     int64
	Completed   int64
	ExpiryTS    *int64 // nil: never
}

// CreateRegistrationToken stores a new token.
func (db *DB) CreateRegistrationToken(ctx context.Context, t RegistrationToken) error {
	_, err := db.Exec(ctx, `INSERT INTO registration_tokens (token, uses_allowed, expiry_ts) VALUES ($1, $2, $3)`, t.Token, t.UsesAllowed, t.ExpiryTS)
	if IsUniqueViolation(err) {
		return fmt.Errorf("registration token %q already exists", t.Token)
	}
	return err
}

// ListRegistrationTokens returns every stored token.
func (db *DB) ListRegistrationTokens(ctx context.Context) ([]RegistrationToken, error) {
	rows, err := db.Query(ctx, `SELECT token, uses_allowed, pending, completed, expiry_ts FROM registration_tokens ORDER BY token`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []RegistrationToken
	for rows.Next() {
		var t RegistrationToken
		if err := rows.Scan(&t.Token, &t.UsesAllowed, &t.Pending, &t.Completed, &t.ExpiryTS); err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// RegistrationTokenUsable reports whether a stored token exists, has not
// expired at now and has uses left (counting pending ones).
func (db *DB) RegistrationTokenUsable(ctx context.Context, token string, now int64) (bool, error) {
	var n int
	err := db.QueryRow(ctx, `SELECT COUNT(*) FROM registration_tokens WHERE token = $1
		AND (uses_allowed IS NULL OR pending + completed < uses_allowed)
		AND (expiry_ts IS NULL OR expiry_ts > $2)`, token, now).Scan(&n)
	return n > 0, err
}

// ReserveRegistrationToken takes a pending use of a stored token for a UIA
// session, atomically with the usability check so that concurrent
// registrations cannot exceed uses_allowed. It returns false when the token
// is not usable.
func (db *DB) ReserveRegistrationToken(ctx context.Context, sessionID, token string, completed []string, now int64) (bool, error) {
	ok := false
	err := db.Tx(ctx, func(tx Querier) error {
		n, err := tx.Exec(ctx, `UPDATE registration_tokens SET pending = pending + 1 WHERE token = $1
			AND (uses_allowed IS NULL OR pending + completed < uses_allowed)
			AND (expiry_ts IS NULL OR expiry_ts > $2)`, token, now)
		if err != nil || n == 0 {
			return err
		}
		raw, _ := json.Marshal(completed)
		if _, err := tx.Exec(ctx, `UPDATE uia_sessions SET registration_token = $2, completed = $3 WHERE session_id = $1`,
			sessionID, token, string(raw)); err != nil {
			return err
		}
		ok = true
		return nil
	})
	return ok, err
}

// SettleRegistrationToken ends a pending use of token: completed when the
// account was created, released otherwise.
func (db *DB) SettleRegistrationToken(ctx context.Context, token string, used bool) error {
	completed := 0
	if used {
		completed = 1
	}
	_, err := db.Exec(ctx, `UPDATE registration_tokens SET pending = pending - 1, completed = completed + $2
		WHERE pending > 0 AND token = $1`, token, completed)
	return err
}
