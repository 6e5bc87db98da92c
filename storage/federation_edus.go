package storage

import (
	"context"
	"fmt"
	"strconv"
)

// The federation sender's EDU queue (migration 0240): per destination, the
// EDUs to send, in id order, until the transaction carrying them is
// acknowledged. The rows of the transaction in flight are marked in_txn.

// FederationEDU is one queued EDU for one destination.
type FederationEDU struct {
	ID          int64 // assigned by the store
	Destination string
	Type        string
	Content     []byte
	Ephemeral   bool
	QueuedTS    int64 // ms
}

// EnqueueFederationEDUs queues edus in one transaction. A destination that
// already holds maxPerDestination EDUs (> 0) gets nothing more: its EDUs are
// left out, and it is returned in atCap (once per EDU left out).
func (db *DB) EnqueueFederationEDUs(ctx context.Context, edus []FederationEDU, maxPerDestination int) (atCap []string, err error) {
	if len(edus) == 0 {
		return nil, nil
	}
	err = db.Tx(ctx, func(tx Querier) error {
		atCap = atCap[:0]
		for _, e := range edus {
			q := `INSERT INTO federation_edus (destination, edu_type, content, ephemeral, queued_ts) VALUES ($1, $2, $3, $4, $5)`
			args := []any{e.Destination, e.Type, string(e.Content), e.Ephemeral, e.QueuedTS}
			if maxPerDestination > 0 {
				q = `INSERT INTO federation_edus (destination, edu_type, content, ephemeral, queued_ts)
					SELECT $1, $2, $3, $4, $5 WHERE (SELECT COUNT(*) FROM federation_edus WHERE destination = $1) < $6`
				args = append(args, maxPerDestination)
			}
			n, err := tx.Exec(ctx, q, args...)
			if err != nil {
				return err
			}
			if n == 0 {
				atCap = append(atCap, e.Destination)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("queueing %d EDUs for federation: %w", len(edus), err)
	}
	return atCap, nil
}

// FederationEDUBatch reads a destination's queued EDUs in order: those of
// the transaction in flight (inTxn), or at most limit of the others.
func (db *DB) FederationEDUBatch(ctx context.Context, dest string, inTxn bool, limit int) ([]FederationEDU, error) {
	rows, err := db.Query(ctx, `SELECT id, destination, edu_type, content, ephemeral, queued_ts FROM federation_edus
		WHERE destination = $1 AND in_txn = $2 ORDER BY id LIMIT $3`, dest, inTxn, limit)
	if err != nil {
		return nil, fmt.Errorf("reading the EDU queue of %s: %w", dest, err)
	}
	defer rows.Close()
	var out []FederationEDU
	for rows.Next() {
		var e FederationEDU
		var content string
		if err := rows.Scan(&e.ID, &e.Destination, &e.Type, &content, &e.Ephemeral, &e.QueuedTS); err != nil {
			return nil, fmt.Errorf("reading the EDU queue of %s: %w", dest, err)
		}
		e.Content = []byte(content)
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading the EDU queue of %s: %w", dest, err)
	}
	return out, nil
}

// StartFederationEDUTxn records a transaction carrying the EDUs eduIDs (and
// the queued PDUs up to pduUpTo, or none when pduUpTo is the destination's
// acknowledged position) as in flight, and returns its ID: "m<pduUpTo>.<n>",
// n counting the destination's transactions with EDUs, so IDs never repeat
// (those without EDUs are "m<pduUpTo>", TxnID).
func (db *DB) StartFederationEDUTxn(ctx context.Context, dest string, pduUpTo int64, eduIDs []int64) (string, error) {
	var txnID string
	err := db.Tx(ctx, func(tx Querier) error {
		if _, err := tx.Exec(ctx, `INSERT INTO federation_destinations (destination) VALUES ($1)
			ON CONFLICT (destination) DO NOTHING`, dest); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE federation_destinations SET edu_txns = edu_txns + 1 WHERE destination = $1`, dest); err != nil {
			return err
		}
		var n int64
		if err := tx.QueryRow(ctx, `SELECT edu_txns FROM federation_destinations WHERE destination = $1`, dest).Scan(&n); err != nil {
			return err
		}
		txnID = "m" + strconv.FormatInt(pduUpTo, 10) + "." + strconv.FormatInt(n, 10)
		if _, err := tx.Exec(ctx, `UPDATE federation_destinations SET txn_id = $2, txn_upto = $3 WHERE destination = $1`,
			dest, txnID, pduUpTo); err != nil {
			return err
		}
		if len(eduIDs) == 0 {
			return nil
		}
		_, err := tx.Exec(ctx, `UPDATE federation_edus SET in_txn = TRUE WHERE destination = $1 AND id IN (`+
			placeholders(2, len(eduIDs))+`)`, append([]any{dest}, anyArgs(eduIDs)...)...)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("recording a transaction to %s: %w", dest, err)
	}
	return txnID, nil
}

// DropEphemeralFederationEDUs deletes dest's queued ephemeral EDUs but those
// of the transaction in flight (retried whole): a destination that is down
// does not need yesterday's typing notifications.
func (db *DB) DropEphemeralFederationEDUs(ctx context.Context, dest string) (int64, error) {
	n, err := db.Exec(ctx, `DELETE FROM federation_edus WHERE destination = $1 AND ephemeral AND NOT in_txn`, dest)
	if err != nil {
		return 0, fmt.Errorf("dropping ephemeral EDUs of %s: %w", dest, err)
	}
	return n, nil
}
