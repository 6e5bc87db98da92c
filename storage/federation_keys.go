package storage

import (
	"context"
	"fmt"
)

// ServerKey is one remote server signing key as the key fetcher stored it.
type ServerKey struct {
	ServerName string
	KeyID      string
	VerifyKey  string // unpadded base64 ed25519 public key
	// ValidUntilTS (ms) is when a current key must be refetched; ExpiredTS (ms)
	// is set instead for a key listed in old_verify_keys.
	ValidUntilTS int64
	ExpiredTS    int64
	// KeyJSON is the signed key response that carried the key.
	KeyJSON   string
	FetchedTS int64
}

// StoreServerKeys upserts keys. A row is only replaced by news at least as
// good: a key once seen expired keeps its expiry unless a newer response
// expires it again, and a current key's validity never moves backwards (a
// notary's stale cached answer must not undo a fresher direct fetch).
func (db *DB) StoreServerKeys(ctx context.Context, keys []ServerKey) error {
	if len(keys) == 0 {
		return nil
	}
	return db.Tx(ctx, func(tx Querier) error {
		for _, k := range keys {
			_, err := tx.Exec(ctx, `INSERT INTO server_keys
				(server_name, key_id, verify_key, valid_until_ts, expired_ts, key_json, fetched_ts)
				VALUES ($1, $2, $3, $4, $5, $6, $7)
				ON CONFLICT (server_name, key_id) DO UPDATE SET
					verify_key = excluded.verify_key, valid_until_ts = excluded.valid_until_ts,
					expired_ts = excluded.expired_ts, key_json = excluded.key_json, fetched_ts = excluded.fetched_ts
				WHERE excluded.expired_ts <> 0
					OR (server_keys.expired_ts = 0 AND excluded.valid_until_ts >= server_keys.valid_until_ts)`,
				k.ServerName, k.KeyID, k.VerifyKey, k.ValidUntilTS, k.ExpiredTS, k.KeyJSON, k.FetchedTS)
			if err != nil {
				return fmt.Errorf("storing key %s of %s: %w", k.KeyID, k.ServerName, err)
			}
		}
		return nil
	})
}

const serverKeyColumns = `server_name, key_id, verify_key, valid_until_ts, expired_ts, key_json, fetched_ts`

func scanServerKey(r interface{ Scan(...any) error }) (ServerKey, error) {
	var k ServerKey
	err := r.Scan(&k.ServerName, &k.KeyID, &k.VerifyKey, &k.ValidUntilTS, &k.ExpiredTS, &k.KeyJSON, &k.FetchedTS)
	return k, err
}

// GetServerKey returns one stored key; ErrNotFound when it was never seen.
func (db *DB) GetServerKey(ctx context.Context, serverName, keyID string) (*ServerKey, error) {
	k, err := scanServerKey(db.QueryRow(ctx, `SELECT `+serverKeyColumns+` FROM server_keys
		WHERE server_name = $1 AND key_id = $2`, serverName, keyID))
	if err != nil {
		if err == ErrNotFound {
			return nil, err
		}
		return nil, fmt.Errorf("reading key %s of %s: %w", keyID, serverName, err)
	}
	return &k, nil
}

// ServerKeys returns every stored key of a server, freshest first.
func (db *DB) ServerKeys(ctx context.Context, serverName string) ([]ServerKey, error) {
	rows, err := db.Query(ctx, `SELECT `+serverKeyColumns+` FROM server_keys
		WHERE server_name = $1 ORDER BY fetched_ts DESC, key_id`, serverName)
	if err != nil {
		return nil, fmt.Errorf("reading keys of %s: %w", serverName, err)
	}
	defer rows.Close()
	var out []ServerKey
	for rows.Next() {
		k, err := scanServerKey(rows)
		if err != nil {
			return nil, fmt.Errorf("reading keys of %s: %w", serverName, err)
		}
		out = append(out, k)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading keys of %s: %w", serverName, err)
	}
	return out, nil
}
