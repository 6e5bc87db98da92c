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
	FetchedTS    int64
}

// ServerKeyResponse is a signed key response of a server (GET
// /_matrix/key/v2/server), kept as received so that this server can re-serve
// it as a notary.
type ServerKeyResponse struct {
	ServerName   string
	ValidUntilTS int64 // ms, capped at fetch time
	FetchedTS    int64
	JSON         string
}

// What is kept per server: key servers are chosen by whoever names them in
// a request, so nothing about one server may grow without bound.
const (
	// KeptServerKeyResponses: the latest responses (by validity) are kept;
	// older ones are deleted when a new one is stored.
	KeptServerKeyResponses = 2
	// KeptServerKeys: the most recently fetched keys of a server are kept
	// (far more than a response may carry, so a response's keys all stay).
	KeptServerKeys = 256
)

// StoreServerKeyResponse stores a checked response and the keys it carries
// in one transaction: the response once (an identical one already stored is
// only marked fetched again), the keys as StoreServerKeys does; then the
// server's responses and keys are pruned to the bounds above.
func (db *DB) StoreServerKeyResponse(ctx context.Context, resp ServerKeyResponse, keys []ServerKey) error {
	return db.Tx(ctx, func(tx Querier) error {
		if err := storeServerKeys(ctx, tx, keys); err != nil {
			return err
		}
		n, err := tx.Exec(ctx, `UPDATE server_key_responses SET
				fetched_ts = $3, valid_until_ts = CASE WHEN valid_until_ts > $4 THEN valid_until_ts ELSE $4 END
			WHERE server_name = $1 AND key_json = $2`, resp.ServerName, resp.JSON, resp.FetchedTS, resp.ValidUntilTS)
		if err != nil {
			return fmt.Errorf("storing key response of %s: %w", resp.ServerName, err)
		}
		if n == 0 {
			if _, err := tx.Exec(ctx, `INSERT INTO server_key_responses (server_name, valid_until_ts, fetched_ts, key_json)
				VALUES ($1, $2, $3, $4)`, resp.ServerName, resp.ValidUntilTS, resp.FetchedTS, resp.JSON); err != nil {
				return fmt.Errorf("storing key response of %s: %w", resp.ServerName, err)
			}
		}
		if _, err := tx.Exec(ctx, `DELETE FROM server_key_responses WHERE server_name = $1 AND id NOT IN (
				SELECT id FROM server_key_responses WHERE server_name = $1
				ORDER BY valid_until_ts DESC, fetched_ts DESC, id DESC LIMIT $2)`,
			resp.ServerName, KeptServerKeyResponses); err != nil {
			return fmt.Errorf("pruning key responses of %s: %w", resp.ServerName, err)
		}
		return pruneServerKeys(ctx, tx, resp.ServerName)
	})
}

// StoreServerKeys upserts keys (without a response) and prunes each server's
// keys to KeptServerKeys.
func (db *DB) StoreServerKeys(ctx context.Context, keys []ServerKey) error {
	if len(keys) == 0 {
		return nil
	}
	return db.Tx(ctx, func(tx Querier) error {
		if err := storeServerKeys(ctx, tx, keys); err != nil {
			return err
		}
		seen := map[string]bool{}
		for _, k := range keys {
			if !seen[k.ServerName] {
				seen[k.ServerName] = true
				if err := pruneServerKeys(ctx, tx, k.ServerName); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// storeServerKeys upserts keys. A row is only replaced by news at least as
// good: a key once seen expired keeps its expiry unless a newer response
// expires it again, and a current key's validity never moves backwards (a
// notary's stale cached answer must not undo a fresher direct fetch).
func storeServerKeys(ctx context.Context, tx Querier, keys []ServerKey) error {
	for _, k := range keys {
		_, err := tx.Exec(ctx, `INSERT INTO server_keys
			(server_name, key_id, verify_key, valid_until_ts, expired_ts, fetched_ts)
			VALUES ($1, $2, $3, $4, $5, $6)
			ON CONFLICT (server_name, key_id) DO UPDATE SET
				verify_key = excluded.verify_key, valid_until_ts = excluded.valid_until_ts,
				expired_ts = excluded.expired_ts, fetched_ts = excluded.fetched_ts
			WHERE excluded.expired_ts <> 0
				OR (server_keys.expired_ts = 0 AND excluded.valid_until_ts >= server_keys.valid_until_ts)`,
			k.ServerName, k.KeyID, k.VerifyKey, k.ValidUntilTS, k.ExpiredTS, k.FetchedTS)
		if err != nil {
			return fmt.Errorf("storing key %s of %s: %w", k.KeyID, k.ServerName, err)
		}
	}
	return nil
}

// pruneServerKeys keeps the KeptServerKeys most recently fetched keys of server.
func pruneServerKeys(ctx context.Context, tx Querier, server string) error {
	_, err := tx.Exec(ctx, `DELETE FROM server_keys WHERE server_name = $1 AND key_id NOT IN (
			SELECT key_id FROM server_keys WHERE server_name = $1
			ORDER BY fetched_ts DESC, key_id LIMIT $2)`, server, KeptServerKeys)
	if err != nil {
		return fmt.Errorf("pruning keys of %s: %w", server, err)
	}
	return nil
}

const serverKeyColumns = `server_name, key_id, verify_key, valid_until_ts, expired_ts, fetched_ts`

func scanServerKey(r interface{ Scan(...any) error }) (ServerKey, error) {
	var k ServerKey
	err := r.Scan(&k.ServerName, &k.KeyID, &k.VerifyKey, &k.ValidUntilTS, &k.ExpiredTS, &k.FetchedTS)
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

// ServerKeyResponses returns the stored responses of a server (at most
// KeptServerKeyResponses), the longest valid first.
func (db *DB) ServerKeyResponses(ctx context.Context, serverName string) ([]ServerKeyResponse, error) {
	rows, err := db.Query(ctx, `SELECT valid_until_ts, fetched_ts, key_json FROM server_key_responses
		WHERE server_name = $1 ORDER BY valid_until_ts DESC, fetched_ts DESC, id DESC LIMIT $2`, serverName, KeptServerKeyResponses)
	if err != nil {
		return nil, fmt.Errorf("reading key responses of %s: %w", serverName, err)
	}
	defer rows.Close()
	var out []ServerKeyResponse
	for rows.Next() {
		r := ServerKeyResponse{ServerName: serverName}
		if err := rows.Scan(&r.ValidUntilTS, &r.FetchedTS, &r.JSON); err != nil {
			return nil, fmt.Errorf("reading key responses of %s: %w", serverName, err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading key responses of %s: %w", serverName, err)
	}
	return out, nil
}
