package storage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
)

// Inbound federation transactions (migration 0150): the stored results of
// each transaction, keyed by origin server and transaction ID.

// GetFederationTxn returns the per-PDU results stored for (origin, txnID),
// or ErrNotFound.
func (db *DB) GetFederationTxn(ctx context.Context, origin, txnID string) (map[string]string, error) {
	var raw string
	err := db.QueryRow(ctx, `SELECT results FROM federation_txns WHERE origin = $1 AND txn_id = $2`, origin, txnID).Scan(&raw)
	if errors.Is(err, ErrNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("reading federation transaction: %w", err)
	}
	out := map[string]string{}
	if err := json.Unmarshal([]byte(raw), &out); err != nil {
		return nil, fmt.Errorf("decoding federation transaction results: %w", err)
	}
	return out, nil
}

// PutFederationTxn records the results of (origin, txnID) received at nowMS
// (a second record of the same transaction keeps the first), then trims the
// origin's window: records older than minTS, and all but the newest keep.
func (db *DB) PutFederationTxn(ctx context.Context, origin, txnID string, results map[string]string, nowMS, minTS int64, keep int) error {
	raw, err := json.Marshal(results)
	if err != nil {
		return err
	}
	return db.Tx(ctx, func(tx Querier) error {
		if _, err := tx.Exec(ctx, `INSERT INTO federation_txns (origin, txn_id, results, received_ts) VALUES ($1, $2, $3, $4)
			ON CONFLICT (origin, txn_id) DO NOTHING`, origin, txnID, string(raw), nowMS); err != nil {
			return fmt.Errorf("recording federation transaction: %w", err)
		}
		if _, err := tx.Exec(ctx, `DELETE FROM federation_txns WHERE origin = $1 AND (received_ts < $2 OR txn_id NOT IN (
			SELECT txn_id FROM federation_txns WHERE origin = $1 ORDER BY received_ts DESC, txn_id DESC LIMIT $3))`,
			origin, minTS, keep); err != nil {
			return fmt.Errorf("trimming federation transactions: %w", err)
		}
		return nil
	})
}
