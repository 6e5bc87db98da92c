package storage

import (
	"context"
	"errors"
	"fmt"
)

// The audit trail (migration 0300): rows of audit_log, appended under the
// table's write lock and read in sequence order. The chain itself (hashes,
// canonical bytes) is the audit package's; the store only keeps rows and
// serializes appends.

// AuditRow is one stored audit record.
type AuditRow struct {
	Seq      int64
	TS       int64 // ms
	Kind     string
	Actor    string
	Body     string
	PrevHash string
	Hash     string
}

// AppendAudit appends the rows build returns after the last stored record
// (seq and hash; 0 and "" when the log is empty), in one transaction that
// holds the log's write lock from that read to the commit: concurrent
// appenders, in this process or another on the same database, queue and
// each continues the chain from the one before. SQLite's BEGIN IMMEDIATE
// takes the database's write lock; PostgreSQL locks the table in a mode
// that conflicts with itself but not with readers.
func (db *DB) AppendAudit(ctx context.Context, build func(lastSeq int64, lastHash string) ([]AuditRow, error)) error {
	return db.Tx(ctx, func(tx Querier) error {
		if db.dialect == Postgres {
			if _, err := tx.Exec(ctx, `LOCK TABLE audit_log IN SHARE ROW EXCLUSIVE MODE`); err != nil {
				return fmt.Errorf("locking the audit log: %w", err)
			}
		}
		var seq int64
		var hash string
		err := tx.QueryRow(ctx, `SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1`).Scan(&seq, &hash)
		if err != nil && !errors.Is(err, ErrNotFound) {
			return fmt.Errorf("reading the last audit record: %w", err)
		}
		rows, err := build(seq, hash)
		if err != nil {
			return err
		}
		for _, r := range rows {
			if _, err := tx.Exec(ctx, `INSERT INTO audit_log (seq, ts, kind, actor, body, prev_hash, hash)
				VALUES ($1, $2, $3, $4, $5, $6, $7)`, r.Seq, r.TS, r.Kind, r.Actor, r.Body, r.PrevHash, r.Hash); err != nil {
				return fmt.Errorf("appending audit record %d: %w", r.Seq, err)
			}
		}
		return nil
	})
}

// AuditRecords returns up to limit records with seq ≥ from, in seq order.
func (db *DB) AuditRecords(ctx context.Context, from int64, limit int) ([]AuditRow, error) {
	rows, err := db.Query(ctx, `SELECT seq, ts, kind, actor, body, prev_hash, hash FROM audit_log
		WHERE seq >= $1 ORDER BY seq LIMIT $2`, from, limit)
	if err != nil {
		return nil, fmt.Errorf("reading audit records: %w", err)
	}
	return scanAuditRows(rows)
}

// AuditRecordsBetween returns up to limit records with seq > after whose
// time is in [sinceMS, untilMS), in seq order.
func (db *DB) AuditRecordsBetween(ctx context.Context, sinceMS, untilMS, after int64, limit int) ([]AuditRow, error) {
	rows, err := db.Query(ctx, `SELECT seq, ts, kind, actor, body, prev_hash, hash FROM audit_log
		WHERE seq > $1 AND ts >= $2 AND ts < $3 ORDER BY seq LIMIT $4`, after, sinceMS, untilMS, limit)
	if err != nil {
		return nil, fmt.Errorf("reading audit records: %w", err)
	}
	return scanAuditRows(rows)
}

func scanAuditRows(rows Rows) ([]AuditRow, error) {
	defer rows.Close()
	var out []AuditRow
	for rows.Next() {
		var r AuditRow
		if err := rows.Scan(&r.Seq, &r.TS, &r.Kind, &r.Actor, &r.Body, &r.PrevHash, &r.Hash); err != nil {
			return nil, fmt.Errorf("reading audit records: %w", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading audit records: %w", err)
	}
	return out, nil
}
