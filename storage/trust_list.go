package storage

import (
	"context"
	"errors"
	"fmt"
)

// ErrTrustListNewer is PutTrustList's answer when a newer version from
// the same issuer is stored already.
var ErrTrustListNewer = errors.New("a newer trust list version is stored")

// StoredTrustList is the last consortium trust list accepted from an issuer
// (table residency_trust_list).
type StoredTrustList struct {
	Issuer     string
	Version    int64
	Document   []byte // the signed document as fetched
	AcceptedTS int64
}

// GetTrustList returns the last trust list accepted from issuer;
// ErrNotFound when none was.
func (db *DB) GetTrustList(ctx context.Context, issuer string) (StoredTrustList, error) {
	t := StoredTrustList{Issuer: issuer}
	var doc string
	if err := db.QueryRow(ctx, `SELECT version, document, accepted_ts FROM residency_trust_list WHERE issuer = $1`, issuer).
		Scan(&t.Version, &doc, &t.AcceptedTS); err != nil {
		return StoredTrustList{}, err
	}
	t.Document = []byte(doc)
	return t, nil
}

// PutTrustList records t as the last trust list accepted from its issuer.
// It never goes back: a version lower than the stored one is not written
// (ErrTrustListNewer), so two processes refreshing at once cannot roll it back.
func (db *DB) PutTrustList(ctx context.Context, t StoredTrustList) error {
	n, err := db.Exec(ctx, `INSERT INTO residency_trust_list (issuer, version, document, accepted_ts) VALUES ($1, $2, $3, $4)
		ON CONFLICT (issuer) DO UPDATE SET version = excluded.version, document = excluded.document, accepted_ts = excluded.accepted_ts
		WHERE residency_trust_list.version <= excluded.version`, t.Issuer, t.Version, string(t.Document), t.AcceptedTS)
	if err != nil {
		return fmt.Errorf("recording trust list version %d of %s: %w", t.Version, t.Issuer, err)
	}
	if n == 0 {
		return fmt.Errorf("recording trust list version %d of %s: %w", t.Version, t.Issuer, ErrTrustListNewer)
	}
	return nil
}

// PolicyState is the residency policy last recorded in the audit trail
// (table residency_policy_state).
type PolicyState struct {
	Fingerprint string
	Summary     []byte // JSON
	RecordedTS  int64
}

// GetPolicyState returns the policy last recorded; ErrNotFound when none was.
func (db *DB) GetPolicyState(ctx context.Context) (PolicyState, error) {
	var p PolicyState
	var summary string
	if err := db.QueryRow(ctx, `SELECT fingerprint, summary, recorded_ts FROM residency_policy_state WHERE id = 1`).
		Scan(&p.Fingerprint, &summary, &p.RecordedTS); err != nil {
		return PolicyState{}, err
	}
	p.Summary = []byte(summary)
	return p, nil
}

// PutPolicyState records p as the policy last recorded.
func (db *DB) PutPolicyState(ctx context.Context, p PolicyState) error {
	if _, err := db.Exec(ctx, `INSERT INTO residency_policy_state (id, fingerprint, summary, recorded_ts) VALUES (1, $1, $2, $3)
		ON CONFLICT (id) DO UPDATE SET fingerprint = excluded.fingerprint, summary = excluded.summary, recorded_ts = excluded.recorded_ts`,
		p.Fingerprint, string(p.Summary), p.RecordedTS); err != nil {
		return fmt.Errorf("recording the residency policy's fingerprint: %w", err)
	}
	return nil
}
