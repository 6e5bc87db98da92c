package storage

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
)

func init() { registerStreamTable("events") }

// StateKey names a slot of room state.
type StateKey struct{ Type, StateKey string }

// StateMap is the one shape of room state at the storage boundary: the event
// ID in each slot. A read returns a whole state and never holds an empty ID.
// A write (Snapshot.Entries of a delta, RoomWrite.StateChanges) holds only the
// slots it changes, and an empty event ID there removes the slot.
type StateMap map[StateKey]string

// sortedKeys returns m's keys ordered by type, then state key, so that writes
// happen in a reproducible order.
func (m StateMap) sortedKeys() []StateKey {
	keys := make([]StateKey, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b StateKey) int {
		if c := strings.Compare(a.Type, b.Type); c != 0 {
			return c
		}
		return strings.Compare(a.StateKey, b.StateKey)
	})
	return keys
}

// Event is the one row type of the events table: the roomserver writes it,
// every reader (room APIs, /sync, sliding sync, push) reads it back, and
// clientevent renders it for clients. It holds only what is stored: values
// that depend on the reader (prev_content, the reader's membership at the
// event) are inputs of the renderer, not fields here.
type Event struct {
	EventID        string
	RoomID         string
	StreamPos      int64
	Depth          int64
	Type           string
	StateKey       *string
	Sender         string
	OriginServerTS int64
	JSON           []byte // the PDU (redacted once a redaction applied)
	StateBefore    int64  // snapshot IDs
	StateAfter     int64
	SoftFailed     bool
	// Outlier: stored for its content and auth/state role only (its place in
	// the DAG is unknown), never in a timeline or stream read; its StreamPos
	// is OutlierPos of a stream position.
	Outlier bool
	// AfterGap: some of its prev events are not timeline events here (it was
	// accepted with fetched state, or is a join over federation): history
	// before it may be missing (/sync starts a limited timeline at it).
	AfterGap bool
	// Relay: a remote user's membership event taken through send_join,
	// send_leave or send_knock, which the federation sender passes on to
	// the room's other servers (only this server received it).
	Relay         bool
	RedactedBy    string
	RelatesTo     string
	RelType       string
	Membership    string // content.membership of an m.room.member event
	ReplacesState string // the state event this one replaced (unsigned.replaces_state)
	TxnDevice     string // the device that sent it with a transaction ID
	TxnID         string // that client transaction ID (unsigned.transaction_id)
}

// Snapshot is a new state snapshot: the slots differing from Parent (an empty
// event ID removes one), or the whole state when Parent is 0 (a keyframe).
type Snapshot struct {
	ID       int64
	RoomID   string
	Parent   int64
	ChainLen int
	Entries  StateMap
}

// MembershipChange updates the memberships table.
type MembershipChange struct {
	UserID     string
	Membership string
	EventID    string
	StreamPos  int64
	// Prev is the user's membership before this write ("" for none): the
	// room_servers counts move by the difference.
	Prev string
}

// RoomRow is a room's row in rooms.
type RoomRow struct {
	RoomID        string
	RoomVersion   string
	Creator       string
	CreatedTS     int64
	IsPublic      bool
	StateSnapshot int64
	ChainLen      int // chain length of StateSnapshot
	Extremities   []string
	MaxDepth      int64
}

// TxnRecord maps a client transaction ID to the event it created.
type TxnRecord struct {
	UserID, DeviceID, TxnID, RoomID, EventID string
	// ClientTxnID is the ID as the client gave it; TxnID is namespaced by
	// endpoint path (roomserver txnScope). It becomes unsigned.transaction_id.
	ClientTxnID string
}

// Redaction replaces an event's JSON with its redacted form.
type Redaction struct {
	EventID      string
	RedactedBy   string
	RedactedJSON []byte
}

// RoomWrite is everything one group commit of a room writes, in one transaction.
type RoomWrite struct {
	NewRoom      *RoomRow // set when the batch creates the room
	RoomID       string
	Snapshots    []Snapshot
	Events       []Event
	Txns         []TxnRecord
	Redactions   []Redaction
	StateChanges StateMap // the slots of current_state the batch changes ("" removes one)
	Memberships  []MembershipChange
	Snapshot     int64 // the room's new current state snapshot
	Extremities  []string
	MaxDepth     int64
	// Encrypted: the room is end-to-end encrypted, so its events are not
	// indexed for search (search.go).
	Encrypted bool
	// DropOutOfBand: the batch rejoins a known room, whose out-of-band rows
	// (WriteOutOfBandUnjoined) its own events replace; deleted first.
	DropOutOfBand bool
}

// WriteRoomEvents persists a batch of events of one room, their state
// snapshots, the room's new current state, memberships and joined servers
// (room_servers), and forward extremities, all in one transaction.
func (db *DB) WriteRoomEvents(ctx context.Context, w *RoomWrite) error {
	extrem, err := json.Marshal(w.Extremities)
	if err != nil {
		return err
	}
	return db.Tx(ctx, func(tx Querier) error {
		if r := w.NewRoom; r != nil {
			if _, err := tx.Exec(ctx, `INSERT INTO rooms (room_id, room_version, creator, created_ts, is_public)
				VALUES ($1, $2, $3, $4, $5)`, r.RoomID, r.RoomVersion, r.Creator, r.CreatedTS, r.IsPublic); err != nil {
				return fmt.Errorf("inserting room: %w", err)
			}
			if err := deleteOutOfBand(ctx, tx, r.RoomID); err != nil {
				return err
			}
		}
		if w.DropOutOfBand {
			if err := deleteOutOfBand(ctx, tx, w.RoomID); err != nil {
				return err
			}
		}
		for _, s := range w.Snapshots {
			if _, err := tx.Exec(ctx, `INSERT INTO state_snapshots (snapshot_id, room_id, parent_id, chain_len) VALUES ($1, $2, $3, $4)`,
				s.ID, s.RoomID, s.Parent, s.ChainLen); err != nil {
				return fmt.Errorf("inserting snapshot: %w", err)
			}
			if err := insertEntries(ctx, tx, s.ID, s.Entries); err != nil {
				return err
			}
		}
		for _, e := range w.Events {
			if n, err := tx.Exec(ctx, `INSERT INTO events (event_id, room_id, stream_pos, depth, type, state_key, sender,
				origin_server_ts, json, state_before, state_after, soft_failed, relates_to, rel_type, membership,
				replaces_state, txn_device, txn_id, outlier, after_gap, relay)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)`+deoutlier,
				e.EventID, e.RoomID, e.StreamPos, e.Depth, e.Type, e.StateKey, e.Sender, e.OriginServerTS, string(e.JSON),
				e.StateBefore, e.StateAfter, e.SoftFailed, nullString(e.RelatesTo), nullString(e.RelType), nullString(e.Membership),
				nullString(e.ReplacesState), nullString(e.TxnDevice), nullString(e.TxnID), e.Outlier, e.AfterGap, e.Relay); err != nil {
				return fmt.Errorf("inserting event %s: %w", e.EventID, err)
			} else if n != 1 && !e.Outlier {
				return fmt.Errorf("inserting event %s: %w", e.EventID, ErrEventExists)
			}
			if !e.SoftFailed && !e.Outlier && !w.Encrypted {
				if err := db.indexForSearch(ctx, tx, &e); err != nil {
					return err
				}
			}
		}
		for _, t := range w.Txns {
			if _, err := tx.Exec(ctx, `INSERT INTO room_txns (user_id, device_id, txn_id, room_id, event_id) VALUES ($1, $2, $3, $4, $5)`,
				t.UserID, t.DeviceID, t.TxnID, t.RoomID, t.EventID); err != nil {
				return fmt.Errorf("recording transaction: %w", err)
			}
		}
		for _, r := range w.Redactions {
			if _, err := tx.Exec(ctx, `UPDATE events SET json = $1, redacted_by = $2 WHERE event_id = $3`,
				string(r.RedactedJSON), r.RedactedBy, r.EventID); err != nil {
				return fmt.Errorf("redacting %s: %w", r.EventID, err)
			}
			if err := db.unindexForSearch(ctx, tx, r.EventID); err != nil {
				return err
			}
		}
		for _, k := range w.StateChanges.sortedKeys() {
			var err error
			if eventID := w.StateChanges[k]; eventID == "" {
				_, err = tx.Exec(ctx, `DELETE FROM current_state WHERE room_id = $1 AND type = $2 AND state_key = $3`,
					w.RoomID, k.Type, k.StateKey)
			} else {
				_, err = tx.Exec(ctx, `INSERT INTO current_state (room_id, type, state_key, event_id) VALUES ($1, $2, $3, $4)
					ON CONFLICT (room_id, type, state_key) DO UPDATE SET event_id = excluded.event_id`,
					w.RoomID, k.Type, k.StateKey, eventID)
			}
			if err != nil {
				return fmt.Errorf("updating current state: %w", err)
			}
		}
		for _, m := range w.Memberships {
			if _, err := tx.Exec(ctx, `INSERT INTO memberships (room_id, user_id, membership, event_id, stream_pos, forgotten)
				VALUES ($1, $2, $3, $4, $5, FALSE)
				ON CONFLICT (room_id, user_id) DO UPDATE SET membership = excluded.membership, event_id = excluded.event_id,
					stream_pos = excluded.stream_pos, forgotten = FALSE`,
				w.RoomID, m.UserID, m.Membership, m.EventID, m.StreamPos); err != nil {
				return fmt.Errorf("updating membership: %w", err)
			}
		}
		if err := updateRoomServers(ctx, tx, w.RoomID, w.Memberships); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE rooms SET state_snapshot = $1, extremities = $2, max_depth = $3 WHERE room_id = $4`,
			w.Snapshot, string(extrem), w.MaxDepth, w.RoomID); err != nil {
			return fmt.Errorf("updating room: %w", err)
		}
		return nil
	})
}

// deoutlier completes the events INSERT: an event stored as an outlier that
// now arrives with its place in the DAG known (backfill, /send) takes the new
// row's position, state and flags; a redacted outlier keeps its redacted JSON.
// Any other duplicate changes nothing: an outlier written again is skipped
// (its content is stored already), an event written again is ErrEventExists.
const deoutlier = `
				ON CONFLICT (event_id) DO UPDATE SET stream_pos = excluded.stream_pos, depth = excluded.depth,
					state_before = excluded.state_before, state_after = excluded.state_after, soft_failed = excluded.soft_failed,
					outlier = excluded.outlier, replaces_state = excluded.replaces_state, after_gap = excluded.after_gap,
					json = CASE WHEN events.redacted_by IS NULL THEN excluded.json ELSE events.json END
				WHERE events.outlier AND NOT excluded.outlier`

// ErrEventExists: an event written again that is stored and not an outlier.
var ErrEventExists = errors.New("event already stored")

// outlierBase offsets outlier stream positions far below any other
// (OutlierPos): 2^62 below zero, where no range read's lower bound reaches.
const outlierBase = int64(1) << 62

// OutlierPos is the stream position an outlier is stored at, from a stream
// position p allocated for it: unique like p, far below zero.
func OutlierPos(p int64) int64 { return p - outlierBase }

func insertEntries(ctx context.Context, tx Querier, snapshot int64, entries StateMap) error {
	// Multi-row inserts: keyframes of large rooms hold thousands of entries.
	// Sorted, so that the rows (and their order) are reproducible.
	keys := entries.sortedKeys()
	const chunk = 200
	for start := 0; start < len(keys); start += chunk {
		end := min(start+chunk, len(keys))
		var sb strings.Builder
		sb.WriteString(`INSERT INTO state_snapshot_entries (snapshot_id, type, state_key, event_id) VALUES `)
		args := make([]any, 0, (end-start)*4)
		for i, k := range keys[start:end] {
			if i > 0 {
				sb.WriteByte(',')
			}
			sb.WriteString("(" + placeholders(len(args)+1, 4) + ")")
			args = append(args, snapshot, k.Type, k.StateKey, entries[k])
		}
		if _, err := tx.Exec(ctx, sb.String(), args...); err != nil {
			return fmt.Errorf("inserting snapshot entries: %w", err)
		}
	}
	return nil
}

// MaxSnapshotID is the largest snapshot ID in use (the roomserver allocates
// the next ones in memory).
func (db *DB) MaxSnapshotID(ctx context.Context) (int64, error) {
	var n int64
	err := db.QueryRow(ctx, `SELECT COALESCE(MAX(snapshot_id), 0) FROM state_snapshots`).Scan(&n)
	return n, err
}

// SnapshotState loads the full state a snapshot names, walking its chain back
// to the keyframe. Snapshot 0 is the empty state.
func (db *DB) SnapshotState(ctx context.Context, snapshot int64) (StateMap, error) {
	if snapshot == 0 {
		return StateMap{}, nil
	}
	rows, err := db.Query(ctx, `WITH RECURSIVE chain(id, parent, n) AS (
			SELECT snapshot_id, parent_id, 0 FROM state_snapshots WHERE snapshot_id = $1
			UNION ALL
			SELECT s.snapshot_id, s.parent_id, c.n + 1 FROM state_snapshots s JOIN chain c ON s.snapshot_id = c.parent
		)
		SELECT e.type, e.state_key, e.event_id, c.n FROM chain c JOIN state_snapshot_entries e ON e.snapshot_id = c.id
		ORDER BY c.n DESC`, snapshot)
	if err != nil {
		return nil, fmt.Errorf("loading snapshot %d: %w", snapshot, err)
	}
	defer rows.Close()
	out := StateMap{}
	for rows.Next() {
		var k StateKey
		var eventID string
		var n int
		if err := rows.Scan(&k.Type, &k.StateKey, &eventID, &n); err != nil {
			return nil, fmt.Errorf("loading snapshot %d: %w", snapshot, err)
		}
		// Oldest first: later (closer) snapshots override; an empty event
		// ID removes the slot.
		if eventID == "" {
			delete(out, k)
		} else {
			out[k] = eventID
		}
	}
	return out, rows.Err()
}

const eventColumns = `event_id, room_id, stream_pos, depth, type, state_key, sender, origin_server_ts, json,
	state_before, state_after, soft_failed, redacted_by, relates_to, rel_type, membership, replaces_state, txn_device, txn_id, outlier, after_gap, relay`

func scanEvent(r interface{ Scan(...any) error }) (*Event, error) {
	var e Event
	var js string
	var stateKey, redactedBy, relatesTo, relType, membership, replaces, txnDevice, txnID *string
	if err := r.Scan(&e.EventID, &e.RoomID, &e.StreamPos, &e.Depth, &e.Type, &stateKey, &e.Sender, &e.OriginServerTS, &js,
		&e.StateBefore, &e.StateAfter, &e.SoftFailed, &redactedBy, &relatesTo, &relType, &membership, &replaces, &txnDevice, &txnID, &e.Outlier, &e.AfterGap, &e.Relay); err != nil {
		return nil, err
	}
	e.JSON = []byte(js)
	e.StateKey = stateKey
	e.RedactedBy, e.RelatesTo, e.RelType, e.Membership = deref(redactedBy), deref(relatesTo), deref(relType), deref(membership)
	e.ReplacesState, e.TxnDevice, e.TxnID = deref(replaces), deref(txnDevice), deref(txnID)
	return &e, nil
}

func collectEvents(rows Rows, err error) ([]*Event, error) {
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*Event
	for rows.Next() {
		e, err := scanEvent(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// GetEvent loads one event by ID; ErrNotFound if unknown.
func (db *DB) GetEvent(ctx context.Context, eventID string) (*Event, error) {
	return scanEvent(db.QueryRow(ctx, `SELECT `+eventColumns+` FROM events WHERE event_id = $1`, eventID))
}

// GetEvents loads events by ID; unknown IDs are absent from the result.
func (db *DB) GetEvents(ctx context.Context, ids []string) (map[string]*Event, error) {
	out := make(map[string]*Event, len(ids))
	err := inChunks(ids, func(chunk []string) error {
		evs, err := collectEvents(db.Query(ctx, `SELECT `+eventColumns+` FROM events WHERE event_id IN (`+placeholders(1, len(chunk))+`)`,
			anyArgs(chunk)...))
		for _, e := range evs {
			out[e.EventID] = e
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("loading events: %w", err)
	}
	return out, nil
}

// EventsInStreamOrder loads events by ID in stream order (the order a
// state's events are shown in); unknown IDs are left out.
func (db *DB) EventsInStreamOrder(ctx context.Context, ids []string) ([]*Event, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	byID, err := db.GetEvents(ctx, ids)
	if err != nil {
		return nil, err
	}
	out := make([]*Event, 0, len(byID))
	for _, e := range byID {
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b *Event) int { return cmp.Compare(a.StreamPos, b.StreamPos) })
	return out, nil
}

// TopoPos is a position in a room's topological order: just after the event
// at (Depth, Stream).
type TopoPos struct{ Depth, Stream int64 }

// RoomEventsByTopology returns a room's timeline events in topological order
// (depth, stream_pos): forwards those after from (exclusive) up to to
// (inclusive, when set); backwards those at or before from down to to
// (exclusive). With streamRanges (inclusive stream position ranges), only
// events inside one of them: the rest is skipped in the database.
func (db *DB) RoomEventsByTopology(ctx context.Context, roomID string, from TopoPos, to *TopoPos, backwards bool, limit int, streamRanges [][2]int64) ([]*Event, error) {
	args := []any{roomID, from.Depth, from.Stream, 0, 0, limit}
	inRanges := ""
	if streamRanges != nil {
		conds := make([]string, len(streamRanges))
		for i, r := range streamRanges {
			conds[i] = fmt.Sprintf("stream_pos BETWEEN $%d AND $%d", len(args)+1, len(args)+2)
			args = append(args, r[0], r[1])
		}
		inRanges = " AND (" + strings.Join(conds, " OR ") + ")"
		if len(conds) == 0 {
			inRanges = " AND FALSE"
		}
	}
	if backwards {
		lo := TopoPos{-1 << 62, 0}
		if to != nil {
			lo = *to
		}
		args[3], args[4] = lo.Depth, lo.Stream
		return collectEvents(db.Query(ctx, `SELECT `+eventColumns+` FROM events
			WHERE room_id = $1 AND NOT soft_failed AND NOT outlier
			  AND (depth < $2 OR (depth = $2 AND stream_pos <= $3))
			  AND (depth > $4 OR (depth = $4 AND stream_pos > $5))`+inRanges+`
			ORDER BY depth DESC, stream_pos DESC LIMIT $6`, args...))
	}
	hi := TopoPos{1 << 62, 0}
	if to != nil {
		hi = *to
	}
	args[3], args[4] = hi.Depth, hi.Stream
	return collectEvents(db.Query(ctx, `SELECT `+eventColumns+` FROM events
		WHERE room_id = $1 AND NOT soft_failed AND NOT outlier
		  AND (depth > $2 OR (depth = $2 AND stream_pos > $3))
		  AND (depth < $4 OR (depth = $4 AND stream_pos <= $5))`+inRanges+`
		ORDER BY depth ASC, stream_pos ASC LIMIT $6`, args...))
}

// TopoPosAtStream is the topological position of the latest event of the room
// at or before stream position pos ({0,0} if none).
func (db *DB) TopoPosAtStream(ctx context.Context, roomID string, pos int64) (TopoPos, error) {
	var p TopoPos
	err := db.QueryRow(ctx, `SELECT depth, stream_pos FROM events WHERE room_id = $1 AND stream_pos <= $2 AND NOT soft_failed AND NOT outlier
		ORDER BY stream_pos DESC LIMIT 1`, roomID, pos).Scan(&p.Depth, &p.Stream)
	if err == ErrNotFound {
		return TopoPos{}, nil
	}
	return p, err
}

// snapshotAtStream is the state_after snapshot of the room's last event at or
// before stream position pos; ErrNotFound when the room had no events then.
func (db *DB) snapshotAtStream(ctx context.Context, roomID string, pos int64) (int64, error) {
	var snap int64
	err := db.QueryRow(ctx, `SELECT state_after FROM events WHERE room_id = $1 AND stream_pos <= $2 AND NOT soft_failed AND NOT outlier
		ORDER BY stream_pos DESC LIMIT 1`, roomID, pos).Scan(&snap)
	return snap, err
}

// StateAtPosition returns the room's state after its last event at or
// before stream position pos (empty when the room had no events by then).
func (db *DB) StateAtPosition(ctx context.Context, roomID string, pos int64) (StateMap, error) {
	snap, err := db.snapshotAtStream(ctx, roomID, pos)
	if err == ErrNotFound {
		return StateMap{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading state of %s at %d: %w", roomID, pos, err)
	}
	return db.SnapshotState(ctx, snap)
}

// StateBeforeEvent returns the room state before the event (its state_before snapshot).
func (db *DB) StateBeforeEvent(ctx context.Context, eventID string) (StateMap, error) {
	var snap int64
	if err := db.QueryRow(ctx, `SELECT state_before FROM events WHERE event_id = $1`, eventID).Scan(&snap); err != nil {
		return nil, fmt.Errorf("reading state before %s: %w", eventID, err)
	}
	return db.SnapshotState(ctx, snap)
}

// FirstMemberPosition is the stream position of the room's first membership
// event (its creator's join); ErrNotFound if it has none.
func (db *DB) FirstMemberPosition(ctx context.Context, roomID string) (int64, error) {
	var pos int64
	err := db.QueryRow(ctx, `SELECT stream_pos FROM events WHERE room_id = $1 AND type = 'm.room.member' AND NOT soft_failed AND NOT outlier
		ORDER BY stream_pos LIMIT 1`, roomID).Scan(&pos)
	return pos, err
}

// UserMembershipChange is one membership event concerning a user.
type UserMembershipChange struct {
	RoomID     string
	Membership string
	EventID    string
	StreamPos  int64
	Sender     string
}

// userMembershipQuery selects a user's membership events (state_key $1),
// for collectMembershipChanges; callers add conditions and the order.
// A member event stored after an out-of-band one of the same user but
// earlier in the room (lower depth: the unban that reaches a stale copy after
// the invite that followed it, WriteOutOfBandUnjoined; a knock's rejection
// recorded after the user knocked again) is left out: the out-of-band event
// stays the user's latest membership.
const userMembershipQuery = `SELECT room_id, COALESCE(membership, ''), event_id, stream_pos, sender FROM events
	WHERE type = 'm.room.member' AND state_key = $1 AND NOT soft_failed AND NOT outlier
	AND NOT EXISTS (SELECT 1 FROM events o WHERE o.out_of_band_version IS NOT NULL
		AND o.room_id = events.room_id AND o.state_key = events.state_key AND o.type = 'm.room.member'
		AND o.stream_pos < events.stream_pos AND o.depth > events.depth)`

func collectMembershipChanges(rows Rows, err error) ([]UserMembershipChange, error) {
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []UserMembershipChange
	for rows.Next() {
		var c UserMembershipChange
		if err := rows.Scan(&c.RoomID, &c.Membership, &c.EventID, &c.StreamPos, &c.Sender); err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// MembershipChanges lists the membership events whose state_key is userID
// with after < stream_pos <= upTo, ascending.
func (db *DB) MembershipChanges(ctx context.Context, userID string, after, upTo int64) ([]UserMembershipChange, error) {
	out, err := collectMembershipChanges(db.Query(ctx, userMembershipQuery+` AND stream_pos > $2 AND stream_pos <= $3
		ORDER BY stream_pos ASC`, userID, after, upTo))
	if err != nil {
		return nil, fmt.Errorf("loading membership changes of %s: %w", userID, err)
	}
	return out, nil
}

// UserMembershipHistory is every membership event of a user in one room,
// ascending by stream position (history visibility checks).
func (db *DB) UserMembershipHistory(ctx context.Context, roomID, userID string) ([]UserMembershipChange, error) {
	out, err := collectMembershipChanges(db.Query(ctx, userMembershipQuery+` AND room_id = $2 ORDER BY stream_pos ASC`, userID, roomID))
	if err != nil {
		return nil, fmt.Errorf("loading membership history of %s in %s: %w", userID, roomID, err)
	}
	return out, nil
}

// UserMembershipEvents returns every membership event about user with
// position <= to, oldest first. /sync derives both the user's rooms as of a
// position and the changes between two positions from it.
func (db *DB) UserMembershipEvents(ctx context.Context, userID string, to int64) ([]UserMembershipChange, error) {
	out, err := collectMembershipChanges(db.Query(ctx, userMembershipQuery+` AND stream_pos <= $2 ORDER BY stream_pos ASC`, userID, to))
	if err != nil {
		return nil, fmt.Errorf("reading memberships of %s: %w", userID, err)
	}
	return out, nil
}

// PositionedValue is a value set by the event at stream position Pos.
type PositionedValue struct {
	Pos   int64
	Value string
}

// HistoryVisibilityChanges lists a room's m.room.history_visibility events
// as (position, content.history_visibility), ascending.
func (db *DB) HistoryVisibilityChanges(ctx context.Context, roomID string) ([]PositionedValue, error) {
	rows, err := db.Query(ctx, `SELECT stream_pos, json FROM events
		WHERE room_id = $1 AND type = 'm.room.history_visibility' AND state_key = '' AND NOT soft_failed
		ORDER BY stream_pos ASC`, roomID)
	if err != nil {
		return nil, fmt.Errorf("loading history visibility of %s: %w", roomID, err)
	}
	defer rows.Close()
	var out []PositionedValue
	for rows.Next() {
		var v PositionedValue
		var js string
		if err := rows.Scan(&v.Pos, &js); err != nil {
			return nil, fmt.Errorf("loading history visibility of %s: %w", roomID, err)
		}
		var pdu struct {
			Content struct {
				HistoryVisibility string `json:"history_visibility"`
			} `json:"content"`
		}
		_ = json.Unmarshal([]byte(js), &pdu) // a malformed value counts as unset
		v.Value = pdu.Content.HistoryVisibility
		out = append(out, v)
	}
	return out, rows.Err()
}

// Relations lists events relating to eventID (optionally of one rel_type and
// event type) in stream order, paginated by stream position. With hops > 1
// it also lists the events relating to those, and so on, up to hops
// relationships away (MSC3981's recursion): every event on the way must pass
// the same filters, and the bound keeps a cycle of relations (possible with
// the sender-chosen event IDs of room versions 1 and 2) finite.
func (db *DB) Relations(ctx context.Context, roomID, eventID, relType, evType string, hops int, from int64, to *int64, backwards bool, limit int) ([]*Event, error) {
	// to is a point just after a stream position, as in /messages: going
	// back, the events after it; going forward, the events up to it.
	cond, order, stop := "stream_pos > $5 AND stream_pos <= $%d", "ASC", int64(1<<62)
	if backwards {
		cond, order, stop = "stream_pos < $5 AND stream_pos > $%d", "DESC", -(1 << 62) // backfilled history is below 0
		if from == 0 {
			from = 1 << 62
		}
	}
	if to != nil {
		stop = *to
	}
	if hops <= 1 {
		return collectEvents(db.Query(ctx, `SELECT `+eventColumns+` FROM events
		WHERE relates_to = $1 AND room_id = $2 AND ($3 = '' OR rel_type = $3) AND ($4 = '' OR type = $4) AND NOT soft_failed AND NOT outlier AND `+fmt.Sprintf(cond, 7)+`
		ORDER BY stream_pos `+order+` LIMIT $6`, eventID, roomID, relType, evType, from, limit, stop))
	}
	return collectEvents(db.Query(ctx, `WITH RECURSIVE related(event_id, hops) AS (
			SELECT event_id, 1 FROM events
			WHERE relates_to = $1 AND room_id = $2 AND ($3 = '' OR rel_type = $3) AND ($4 = '' OR type = $4) AND NOT soft_failed AND NOT outlier
			UNION ALL
			SELECT e.event_id, r.hops + 1 FROM events e JOIN related r ON e.relates_to = r.event_id
			WHERE r.hops < $7 AND e.room_id = $2 AND ($3 = '' OR e.rel_type = $3) AND ($4 = '' OR e.type = $4) AND NOT e.soft_failed AND NOT e.outlier
		)
		SELECT `+eventColumns+` FROM events
		WHERE event_id IN (SELECT event_id FROM related) AND event_id <> $1 AND `+fmt.Sprintf(cond, 8)+`
		ORDER BY stream_pos `+order+` LIMIT $6`, eventID, roomID, relType, evType, from, limit, hops, stop))
}

// ThreadRoots lists the events of a room that have thread replies, newest
// thread activity first, before stream position `before` (0: no bound).
func (db *DB) ThreadRoots(ctx context.Context, roomID string, before int64, limit int) ([]*Event, []int64, error) {
	if before <= 0 {
		before = 1 << 62
	}
	rows, err := db.Query(ctx, `SELECT relates_to, MAX(stream_pos) AS latest FROM events
		WHERE room_id = $1 AND rel_type = 'm.thread' AND NOT soft_failed AND NOT outlier
		GROUP BY relates_to HAVING MAX(stream_pos) < $2 ORDER BY latest DESC LIMIT $3`, roomID, before, limit)
	if err != nil {
		return nil, nil, fmt.Errorf("loading threads: %w", err)
	}
	var ids []string
	var latest []int64
	for rows.Next() {
		var id string
		var l int64
		if err := rows.Scan(&id, &l); err != nil {
			rows.Close()
			return nil, nil, err
		}
		ids, latest = append(ids, id), append(latest, l)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, nil, err
	}
	evs, err := db.GetEvents(ctx, ids)
	if err != nil {
		return nil, nil, err
	}
	var out []*Event
	var outLatest []int64
	for i, id := range ids {
		if e, ok := evs[id]; ok && e.RoomID == roomID {
			out, outLatest = append(out, e), append(outLatest, latest[i])
		}
	}
	return out, outLatest, nil
}

// ThreadReply is a thread reply's position, ID and sender.
type ThreadReply struct {
	Pos     int64
	EventID string
	Sender  string
}

// ThreadReplies lists a thread's replies, newest first, without their
// bodies: a reader counts those the user may see and loads the latest.
func (db *DB) ThreadReplies(ctx context.Context, rootID string) ([]ThreadReply, error) {
	rows, err := db.Query(ctx, `SELECT stream_pos, event_id, sender FROM events
		WHERE relates_to = $1 AND rel_type = 'm.thread' AND NOT soft_failed AND NOT outlier ORDER BY stream_pos DESC`, rootID)
	if err != nil {
		return nil, fmt.Errorf("loading replies of thread %s: %w", rootID, err)
	}
	defer rows.Close()
	var out []ThreadReply
	for rows.Next() {
		var r ThreadReply
		if err := rows.Scan(&r.Pos, &r.EventID, &r.Sender); err != nil {
			return nil, fmt.Errorf("loading replies of thread %s: %w", rootID, err)
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// EventNearTimestamp finds the room's event closest to ts in the direction
// given (forwards: the first at or after ts; backwards: the last at or before).
func (db *DB) EventNearTimestamp(ctx context.Context, roomID string, ts int64, forwards bool) (*Event, error) {
	if forwards {
		return scanEvent(db.QueryRow(ctx, `SELECT `+eventColumns+` FROM events WHERE room_id = $1 AND origin_server_ts >= $2 AND NOT soft_failed AND NOT outlier
			ORDER BY origin_server_ts ASC, stream_pos ASC LIMIT 1`, roomID, ts))
	}
	return scanEvent(db.QueryRow(ctx, `SELECT `+eventColumns+` FROM events WHERE room_id = $1 AND origin_server_ts <= $2 AND NOT soft_failed AND NOT outlier
		ORDER BY origin_server_ts DESC, stream_pos DESC LIMIT 1`, roomID, ts))
}

// RoomStorageFootprint counts the rows and bytes a room occupies in the event
// and state tables (benchmarks and operations).
func (db *DB) RoomStorageFootprint(ctx context.Context, roomID string) (rows, bytes int64, err error) {
	var evRows, evBytes, snapRows, entryRows, entryBytes, curRows, memRows int64
	if err = db.QueryRow(ctx, `SELECT COUNT(*), COALESCE(SUM(LENGTH(json) + LENGTH(event_id) + LENGTH(room_id) + LENGTH(type) + LENGTH(sender) + 64), 0)
		FROM events WHERE room_id = $1`, roomID).Scan(&evRows, &evBytes); err != nil {
		return
	}
	if err = db.QueryRow(ctx, `SELECT COUNT(*) FROM state_snapshots WHERE room_id = $1`, roomID).Scan(&snapRows); err != nil {
		return
	}
	if err = db.QueryRow(ctx, `SELECT COUNT(*), COALESCE(SUM(LENGTH(e.type) + LENGTH(e.state_key) + LENGTH(e.event_id) + 8), 0)
		FROM state_snapshot_entries e JOIN state_snapshots s ON s.snapshot_id = e.snapshot_id WHERE s.room_id = $1`, roomID).Scan(&entryRows, &entryBytes); err != nil {
		return
	}
	if err = db.QueryRow(ctx, `SELECT COUNT(*) FROM current_state WHERE room_id = $1`, roomID).Scan(&curRows); err != nil {
		return
	}
	if err = db.QueryRow(ctx, `SELECT COUNT(*) FROM memberships WHERE room_id = $1`, roomID).Scan(&memRows); err != nil {
		return
	}
	return evRows + snapRows + entryRows + curRows + memRows, evBytes + snapRows*32 + entryBytes, nil
}
