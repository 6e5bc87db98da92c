package storage

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// The audit trail (migration 0300): rows of audit_log, appended after the
// last one (the primary key on seq refuses a second record with the same
// number) and read in sequence order. The chain itself (hashes, canonical
// bytes) is the audit package's.

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

// LastAudit returns the last stored record's sequence number and hash (0
// and "" when the log is empty).
func (db *DB) LastAudit(ctx context.Context) (int64, string, error) {
	var seq int64
	var hash string
	err := db.QueryRow(ctx, `SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1`).Scan(&seq, &hash)
	if errors.Is(err, ErrNotFound) {
		return 0, "", nil
	}
	if err != nil {
		return 0, "", fmt.Errorf("reading the last audit record: %w", err)
	}
	return seq, hash, nil
}

// InsertAudit inserts rows in one statement: all or none. Another appender
// that took one of their sequence numbers first makes it fail with a
// unique violation (IsUniqueViolation): the chain cannot fork, since each
// record's seq is one more than that of the record whose hash it carries.
func (db *DB) InsertAudit(ctx context.Context, rows []AuditRow) error {
	if len(rows) == 0 {
		return nil
	}
	var q strings.Builder
	q.WriteString(`INSERT INTO audit_log (seq, ts, kind, actor, body, prev_hash, hash) VALUES `)
	args := make([]any, 0, 7*len(rows))
	for i, r := range rows {
		if i > 0 {
			q.WriteString(", ")
		}
		n := len(args)
		fmt.Fprintf(&q, "($%d, $%d, $%d, $%d, $%d, $%d, $%d)", n+1, n+2, n+3, n+4, n+5, n+6, n+7)
		args = append(args, r.Seq, r.TS, r.Kind, r.Actor, r.Body, r.PrevHash, r.Hash)
	}
	if _, err := db.Exec(ctx, q.String(), args...); err != nil {
		return fmt.Errorf("appending audit records %d–%d: %w", rows[0].Seq, rows[len(rows)-1].Seq, err)
	}
	return nil
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
