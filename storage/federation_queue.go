package storage

import (
	"context"
	"errors"
	"fmt"
	"slices"
)

// The federation sender's queues (migration 0140): per destination server,
// the PDUs this server originated that the destination has yet to
// acknowledge, and the destination's delivery state.

// FederationQueueItem is one queued PDU for one destination.
type FederationQueueItem struct {
	Destination string
	StreamPos   int64
	RoomID      string
	EventID     string
	QueuedTS    int64 // ms
}

// FederationDestination is a destination's delivery state.
type FederationDestination struct {
	Name         string
	Failures     int64
	BackoffUntil int64 // ms
	LastSuccess  int64 // ms
	AckedUpto    int64
	TxnID        string // the transaction in flight, "" when none
	TxnUpto      int64
}

// EnqueueFederation queues items, in one transaction. It is idempotent: an
// item already queued, or at or below its destination's acknowledged
// position, is left out.
func (db *DB) EnqueueFederation(ctx context.Context, items []FederationQueueItem) error {
	if len(items) == 0 {
		return nil
	}
	err := db.Tx(ctx, func(tx Querier) error {
		seen := map[string]bool{}
		for _, it := range items {
			if !seen[it.Destination] {
				seen[it.Destination] = true
				if _, err := tx.Exec(ctx, `INSERT INTO federation_destinations (destination) VALUES ($1)
					ON CONFLICT (destination) DO NOTHING`, it.Destination); err != nil {
					return err
				}
			}
			if _, err := tx.Exec(ctx, `INSERT INTO federation_queue (destination, stream_pos, room_id, event_id, queued_ts)
				SELECT $1, $2, $3, $4, $5 WHERE NOT EXISTS (
					SELECT 1 FROM federation_destinations WHERE destination = $1 AND acked_upto >= $2)
				ON CONFLICT (destination, stream_pos) DO NOTHING`,
				it.Destination, it.StreamPos, it.RoomID, it.EventID, it.QueuedTS); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("queueing %d PDUs for federation: %w", len(items), err)
	}
	return nil
}

const federationDestinationColumns = `destination, failures, backoff_until, last_success, acked_upto, txn_id, txn_upto`

func scanFederationDestination(r interface{ Scan(...any) error }) (*FederationDestination, error) {
	var d FederationDestination
	if err := r.Scan(&d.Name, &d.Failures, &d.BackoffUntil, &d.LastSuccess, &d.AckedUpto, &d.TxnID, &d.TxnUpto); err != nil {
		return nil, err
	}
	return &d, nil
}

// FederationDestinationState is a destination's delivery state (zero for a
// destination never queued to).
func (db *DB) FederationDestinationState(ctx context.Context, dest string) (*FederationDestination, error) {
	d, err := scanFederationDestination(db.QueryRow(ctx, `SELECT `+federationDestinationColumns+`
		FROM federation_destinations WHERE destination = $1`, dest))
	if errors.Is(err, ErrNotFound) {
		return &FederationDestination{Name: dest}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("loading the federation state of %s: %w", dest, err)
	}
	return d, nil
}

// FederationQueuedDestinations lists the destinations with queued PDUs or EDUs.
func (db *DB) FederationQueuedDestinations(ctx context.Context) ([]string, error) {
	out, err := collectStrings(db.Query(ctx, `SELECT destination FROM federation_queue
		UNION SELECT destination FROM federation_edus ORDER BY destination`))
	if err != nil {
		return nil, fmt.Errorf("listing federation destinations: %w", err)
	}
	return out, nil
}

// FederationBatch reads a destination's queue from its start, ascending, at
// most limit items; upTo > 0 stops at that position (a transaction's retry).
func (db *DB) FederationBatch(ctx context.Context, dest string, upTo int64, limit int) ([]FederationQueueItem, error) {
	if upTo <= 0 {
		upTo = 1<<63 - 1
	}
	rows, err := db.Query(ctx, `SELECT destination, stream_pos, room_id, event_id, queued_ts FROM federation_queue
		WHERE destination = $1 AND stream_pos <= $2 ORDER BY stream_pos LIMIT $3`, dest, upTo, limit)
	if err != nil {
		return nil, fmt.Errorf("reading the federation queue of %s: %w", dest, err)
	}
	defer rows.Close()
	var out []FederationQueueItem
	for rows.Next() {
		var it FederationQueueItem
		if err := rows.Scan(&it.Destination, &it.StreamPos, &it.RoomID, &it.EventID, &it.QueuedTS); err != nil {
			return nil, fmt.Errorf("reading the federation queue of %s: %w", dest, err)
		}
		out = append(out, it)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading the federation queue of %s: %w", dest, err)
	}
	return out, nil
}

// StartFederationTxn records the transaction in flight to dest: its ID and
// the last queued position it carries, so a retry (after a restart too)
// sends the same events under the same ID.
func (db *DB) StartFederationTxn(ctx context.Context, dest, txnID string, upTo int64) error {
	if _, err := db.Exec(ctx, `INSERT INTO federation_destinations (destination, txn_id, txn_upto) VALUES ($1, $2, $3)
		ON CONFLICT (destination) DO UPDATE SET txn_id = excluded.txn_id, txn_upto = excluded.txn_upto`,
		dest, txnID, upTo); err != nil {
		return fmt.Errorf("recording a transaction to %s: %w", dest, err)
	}
	return nil
}

// AckFederationTxn records that dest acknowledged everything queued up to
// upTo and the EDUs of the transaction in flight: those are deleted, the
// backoff is reset.
func (db *DB) AckFederationTxn(ctx context.Context, dest string, upTo, nowMS int64) error {
	err := db.Tx(ctx, func(tx Querier) error {
		if _, err := tx.Exec(ctx, `DELETE FROM federation_queue WHERE destination = $1 AND stream_pos <= $2`, dest, upTo); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM federation_edus WHERE destination = $1 AND in_txn`, dest); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `UPDATE federation_destinations SET failures = 0, backoff_until = 0, last_success = $2,
			acked_upto = CASE WHEN acked_upto > $3 THEN acked_upto ELSE $3 END, txn_id = '', txn_upto = 0
			WHERE destination = $1`, dest, nowMS, upTo)
		return err
	})
	if err != nil {
		return fmt.Errorf("acknowledging a transaction to %s: %w", dest, err)
	}
	return nil
}

// FederationTxnFailed records a failed attempt: the count and when to try again.
func (db *DB) FederationTxnFailed(ctx context.Context, dest string, failures, backoffUntil int64) error {
	if _, err := db.Exec(ctx, `UPDATE federation_destinations SET failures = $2, backoff_until = $3 WHERE destination = $1`,
		dest, failures, backoffUntil); err != nil {
		return fmt.Errorf("recording a failed transaction to %s: %w", dest, err)
	}
	return nil
}

// DropFederationQueue deletes everything queued for dest, PDUs and EDUs (a
// destination the policy refuses).
func (db *DB) DropFederationQueue(ctx context.Context, dest string) (int64, error) {
	n, err := db.Exec(ctx, `DELETE FROM federation_queue WHERE destination = $1`, dest)
	if err != nil {
		return 0, fmt.Errorf("dropping the federation queue of %s: %w", dest, err)
	}
	m, err := db.Exec(ctx, `DELETE FROM federation_edus WHERE destination = $1`, dest)
	if err != nil {
		return n, fmt.Errorf("dropping the EDU queue of %s: %w", dest, err)
	}
	return n + m, nil
}

// TrimFederationQueue bounds dest's queue after a long outage: in each room
// with more than maxPerRoom queued events, the events after `after` (the
// transaction in flight stays whole) that are not among the room's keep
// latest are deleted. The destination fetches the gap itself
// (get_missing_events, backfill). It returns how many were dropped.
func (db *DB) TrimFederationQueue(ctx context.Context, dest string, after int64, maxPerRoom, keep int) (int64, error) {
	rooms, err := collectStrings(db.Query(ctx, `SELECT room_id FROM federation_queue WHERE destination = $1
		GROUP BY room_id HAVING COUNT(*) > $2`, dest, maxPerRoom))
	if err != nil {
		return 0, fmt.Errorf("trimming the federation queue of %s: %w", dest, err)
	}
	var dropped int64
	for _, room := range rooms {
		n, err := db.Exec(ctx, `DELETE FROM federation_queue WHERE destination = $1 AND room_id = $2 AND stream_pos > $3
			AND stream_pos < (SELECT stream_pos FROM federation_queue WHERE destination = $1 AND room_id = $2
				ORDER BY stream_pos DESC LIMIT 1 OFFSET $4)`, dest, room, after, keep-1)
		if err != nil {
			return dropped, fmt.Errorf("trimming the federation queue of %s: %w", dest, err)
		}
		dropped += n
	}
	return dropped, nil
}

// FederationQueueStat is one destination's queue depth and oldest item.
type FederationQueueStat struct {
	Destination string
	Depth       int64
	OldestTS    int64 // ms
}

// FederationQueueStats returns the limit deepest queues, deepest first, and
// the totals over every destination (Destination "").
func (db *DB) FederationQueueStats(ctx context.Context, limit int) (top []FederationQueueStat, total FederationQueueStat, err error) {
	rows, err := db.Query(ctx, `SELECT destination, COUNT(*), MIN(queued_ts) FROM federation_queue
		GROUP BY destination ORDER BY COUNT(*) DESC, destination`)
	if err != nil {
		return nil, total, fmt.Errorf("reading federation queue figures: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var s FederationQueueStat
		if err := rows.Scan(&s.Destination, &s.Depth, &s.OldestTS); err != nil {
			return nil, total, fmt.Errorf("reading federation queue figures: %w", err)
		}
		total.Depth += s.Depth
		if total.OldestTS == 0 || s.OldestTS < total.OldestTS {
			total.OldestTS = s.OldestTS
		}
		if len(top) < limit {
			top = append(top, s)
		}
	}
	return top, total, rows.Err()
}

// JoinedServersAt lists, sorted, the servers a room event at stream
// position pos is for: those with a member joined just before it, and the
// joining user's server if it is a join. It starts from room_servers (now)
// and undoes the membership events at or after pos, each user's membership
// before pos being their latest membership event before it: a server whose
// last member the event removed still gets that event, and a server that
// joined later does not get what came before. (With forked history the
// latest event by position stands for the state: close enough for whom to
// send to.)
func (db *DB) JoinedServersAt(ctx context.Context, roomID string, pos int64) ([]string, error) {
	fail := func(err error) ([]string, error) {
		return nil, fmt.Errorf("listing the servers of %s at %d: %w", roomID, pos, err)
	}
	counts := map[string]int64{}
	rows, err := db.Query(ctx, `SELECT server_name, joined FROM room_servers WHERE room_id = $1`, roomID)
	if err != nil {
		return fail(err)
	}
	for rows.Next() {
		var s string
		var n int64
		if err := rows.Scan(&s, &n); err != nil {
			rows.Close()
			return fail(err)
		}
		counts[s] = n
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fail(err)
	}
	later, err := db.Query(ctx, `SELECT state_key, COALESCE(membership, ''), stream_pos FROM events
		WHERE room_id = $1 AND type = 'm.room.member' AND stream_pos >= $2 AND NOT soft_failed AND NOT outlier ORDER BY stream_pos`, roomID, pos)
	if err != nil {
		return fail(err)
	}
	var users []string
	seen := map[string]bool{}
	joinedBy := ""
	for later.Next() {
		var u, m string
		var p int64
		if err := later.Scan(&u, &m, &p); err != nil {
			later.Close()
			return fail(err)
		}
		if p == pos && m == "join" {
			joinedBy = ServerOfUser(u)
		}
		if !seen[u] {
			seen[u] = true
			users = append(users, u)
		}
	}
	later.Close()
	if err := later.Err(); err != nil {
		return fail(err)
	}
	for _, u := range users {
		var now, before string
		if err := db.QueryRow(ctx, `SELECT membership FROM memberships WHERE room_id = $1 AND user_id = $2`, roomID, u).Scan(&now); err != nil && !errors.Is(err, ErrNotFound) {
			return fail(err)
		}
		if err := db.QueryRow(ctx, `SELECT COALESCE(membership, '') FROM events WHERE room_id = $1 AND type = 'm.room.member'
			AND state_key = $2 AND stream_pos < $3 AND NOT soft_failed ORDER BY stream_pos DESC LIMIT 1`, roomID, u, pos).Scan(&before); err != nil && !errors.Is(err, ErrNotFound) {
			return fail(err)
		}
		s := ServerOfUser(u)
		if now == "join" {
			counts[s]--
		}
		if before == "join" {
			counts[s]++
		}
	}
	if joinedBy != "" {
		counts[joinedBy] = max(counts[joinedBy], 1)
	}
	var out []string
	for s, n := range counts {
		if n > 0 {
			out = append(out, s)
		}
	}
	slices.Sort(out)
	return out, nil
}
