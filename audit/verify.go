package audit

import (
	"context"
	"fmt"
)

// Problem is the first record that does not fit the chain.
type Problem struct {
	Seq    int64  // the record's sequence number (where one is missing: the number expected)
	Reason string // why, for a person
}

func (p *Problem) Error() string { return fmt.Sprintf("audit record %d: %s", p.Seq, p.Reason) }

// Verified is the result of a walk of the whole chain.
type Verified struct {
	Records int64  // records checked
	Head    string // the last record's hash (GenesisHash for an empty log)
	Problem *Problem
}

// Verify walks the chain from the first record: sequence numbers dense from
// 1, each record's prev hash the previous record's hash, each hash that of
// the record's canonical bytes. It stops at the first record that does not
// fit (Verified.Problem). A record removed from the end leaves a valid
// chain: compare Head with a copy kept elsewhere (docs/audit.md).
func Verify(ctx context.Context, store Store) (Verified, error) {
	v := Verified{Head: GenesisHash}
	next := int64(1)
	for {
		rows, err := store.AuditRecords(ctx, next, 1000)
		if err != nil {
			return v, err
		}
		for _, r := range toRecords(rows) {
			if p := check(r, next, v.Head); p != nil {
				v.Problem = p
				return v, nil
			}
			v.Records++
			v.Head = r.Hash
			next = r.Seq + 1
		}
		if len(rows) < 1000 {
			return v, nil
		}
	}
}

func check(r Record, seq int64, prev string) *Problem {
	switch {
	case r.Seq != seq:
		return &Problem{Seq: seq, Reason: fmt.Sprintf("missing: the next stored record is %d", r.Seq)}
	case r.Prev != prev:
		return &Problem{Seq: r.Seq, Reason: "its prev hash is not the previous record's hash"}
	case r.ComputeHash() != r.Hash:
		return &Problem{Seq: r.Seq, Reason: "its content does not match its hash (altered)"}
	}
	return nil
}
