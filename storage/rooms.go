package storage

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
)

// GetRoom loads a room's row; ErrNotFound if the server does not know it.
func (db *DB) GetRoom(ctx context.Context, roomID string) (*RoomRow, error) {
	var r RoomRow
	var extrem string
	err := db.QueryRow(ctx, `SELECT room_id, room_version, creator, created_ts, is_public, state_snapshot, extremities, max_depth,
		COALESCE((SELECT chain_len FROM state_snapshots s WHERE s.snapshot_id = rooms.state_snapshot), 0)
		FROM rooms WHERE room_id = $1`, roomID).Scan(&r.RoomID, &r.RoomVersion, &r.Creator, &r.CreatedTS, &r.IsPublic,
		&r.StateSnapshot, &extrem, &r.MaxDepth, &r.ChainLen)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal([]byte(extrem), &r.Extremities); err != nil {
		return nil, fmt.Errorf("room %s: bad extremities: %w", roomID, err)
	}
	return &r, nil
}

// CurrentStateEvents returns the events of a room's current state.
func (db *DB) CurrentStateEvents(ctx context.Context, roomID string) ([]*Event, error) {
	return collectEvents(db.Query(ctx, `SELECT `+prefixed("e")+` FROM current_state c JOIN events e ON e.event_id = c.event_id
		WHERE c.room_id = $1`, roomID))
}

// CurrentStateEvent returns one event of a room's current state; ErrNotFound if unset.
func (db *DB) CurrentStateEvent(ctx context.Context, roomID, evType, stateKey string) (*Event, error) {
	return scanEvent(db.QueryRow(ctx, `SELECT `+prefixed("e")+` FROM current_state c JOIN events e ON e.event_id = c.event_id
		WHERE c.room_id = $1 AND c.type = $2 AND c.state_key = $3`, roomID, evType, stateKey))
}

func prefixed(alias string) string {
	cols := strings.Fields(strings.ReplaceAll(eventColumns, ",", " "))
	for i, c := range cols {
		cols[i] = alias + "." + c
	}
	return strings.Join(cols, ", ")
}

// Membership is a row of the memberships table.
type Membership struct {
	RoomID     string
	UserID     string
	Membership string
	EventID    string
	StreamPos  int64
	Forgotten  bool
}

// GetMembership returns a user's current membership in a room; ErrNotFound if none.
func (db *DB) GetMembership(ctx context.Context, roomID, userID string) (*Membership, error) {
	var m Membership
	err := db.QueryRow(ctx, `SELECT room_id, user_id, membership, event_id, stream_pos, forgotten FROM memberships
		WHERE room_id = $1 AND user_id = $2`, roomID, userID).Scan(&m.RoomID, &m.UserID, &m.Membership, &m.EventID, &m.StreamPos, &m.Forgotten)
	if err != nil {
		return nil, err
	}
	return &m, nil
}

// RoomsOfUser lists the rooms where a user's membership is one of the given
// ones (all when none given), excluding forgotten rooms.
func (db *DB) RoomsOfUser(ctx context.Context, userID string, memberships ...string) ([]Membership, error) {
	rows, err := db.Query(ctx, `SELECT room_id, user_id, membership, event_id, stream_pos, forgotten FROM memberships
		WHERE user_id = $1 AND NOT forgotten ORDER BY stream_pos`, userID)
	if err != nil {
		return nil, fmt.Errorf("loading rooms of %s: %w", userID, err)
	}
	return filterMemberships(rows, memberships)
}

// RoomMembers lists a room's members with one of the given memberships (all when none given).
func (db *DB) RoomMembers(ctx context.Context, roomID string, memberships ...string) ([]Membership, error) {
	rows, err := db.Query(ctx, `SELECT room_id, user_id, membership, event_id, stream_pos, forgotten FROM memberships
		WHERE room_id = $1 ORDER BY stream_pos`, roomID)
	if err != nil {
		return nil, fmt.Errorf("loading members of %s: %w", roomID, err)
	}
	return filterMemberships(rows, memberships)
}

func filterMemberships(rows Rows, want []string) ([]Membership, error) {
	defer rows.Close()
	var out []Membership
	for rows.Next() {
		var m Membership
		if err := rows.Scan(&m.RoomID, &m.UserID, &m.Membership, &m.EventID, &m.StreamPos, &m.Forgotten); err != nil {
			return nil, err
		}
		if len(want) > 0 {
			ok := false
			for _, w := range want {
				ok = ok || w == m.Membership
			}
			if !ok {
				continue
			}
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

// MemberCounts returns a room's joined and invited member counts.
func (db *DB) MemberCounts(ctx context.Context, roomID string) (joined, invited int, err error) {
	err = db.QueryRow(ctx, `SELECT
		COALESCE(SUM(CASE WHEN membership = 'join' THEN 1 ELSE 0 END), 0),
		COALESCE(SUM(CASE WHEN membership = 'invite' THEN 1 ELSE 0 END), 0)
		FROM memberships WHERE room_id = $1`, roomID).Scan(&joined, &invited)
	return
}

// Heroes returns up to limit members (joined or invited first, then others)
// other than userID, by earliest membership, for room summaries.
func (db *DB) Heroes(ctx context.Context, roomID, userID string, limit int) ([]string, error) {
	return collectStrings(db.Query(ctx, `SELECT user_id FROM memberships WHERE room_id = $1 AND user_id <> $2
		ORDER BY CASE WHEN membership IN ('join', 'invite') THEN 0 ELSE 1 END, stream_pos LIMIT $3`, roomID, userID, limit))
}

// ForgetRoom marks a room forgotten for a user who has left it.
func (db *DB) ForgetRoom(ctx context.Context, roomID, userID string) error {
	_, err := db.Exec(ctx, `UPDATE memberships SET forgotten = TRUE WHERE room_id = $1 AND user_id = $2 AND membership IN ('leave', 'ban')`, roomID, userID)
	return err
}

// ForgottenRooms is the set of rooms the user forgot (and has not rejoined).
func (db *DB) ForgottenRooms(ctx context.Context, userID string) (map[string]bool, error) {
	rooms, err := collectStrings(db.Query(ctx, `SELECT room_id FROM memberships WHERE user_id = $1 AND forgotten`, userID))
	if err != nil {
		return nil, fmt.Errorf("listing the forgotten rooms of %s: %w", userID, err)
	}
	out := make(map[string]bool, len(rooms))
	for _, r := range rooms {
		out[r] = true
	}
	return out, nil
}

// LookupTxn returns the event a client transaction created; ErrNotFound if none.
func (db *DB) LookupTxn(ctx context.Context, userID, deviceID, txnID string) (roomID, eventID string, err error) {
	err = db.QueryRow(ctx, `SELECT room_id, event_id FROM room_txns WHERE user_id = $1 AND device_id = $2 AND txn_id = $3`,
		userID, deviceID, txnID).Scan(&roomID, &eventID)
	return
}

// --- aliases and the room directory ---

// ErrAliasExists is returned when an alias is taken.
var ErrAliasExists = fmt.Errorf("alias already exists")

// CreateAlias maps alias to roomID.
func (db *DB) CreateAlias(ctx context.Context, alias, roomID, creator string) error {
	_, err := db.Exec(ctx, `INSERT INTO room_aliases (alias, room_id, creator) VALUES ($1, $2, $3)`, alias, roomID, creator)
	if IsUniqueViolation(err) {
		return ErrAliasExists
	}
	return err
}

// ResolveAlias returns the room of an alias and who created it; ErrNotFound if unknown.
func (db *DB) ResolveAlias(ctx context.Context, alias string) (roomID, creator string, err error) {
	err = db.QueryRow(ctx, `SELECT room_id, creator FROM room_aliases WHERE alias = $1`, alias).Scan(&roomID, &creator)
	return
}

// DeleteAlias removes an alias.
func (db *DB) DeleteAlias(ctx context.Context, alias string) error {
	_, err := db.Exec(ctx, `DELETE FROM room_aliases WHERE alias = $1`, alias)
	return err
}

// MoveAliases points every alias of one room at another (room upgrades).
func (db *DB) MoveAliases(ctx context.Context, fromRoom, toRoom string) error {
	_, err := db.Exec(ctx, `UPDATE room_aliases SET room_id = $1 WHERE room_id = $2`, toRoom, fromRoom)
	return err
}

// RoomAliases lists the local aliases of a room (an empty list, not nil, when
// it has none: it is answered as a JSON array).
func (db *DB) RoomAliases(ctx context.Context, roomID string) ([]string, error) {
	out, err := collectStrings(db.Query(ctx, `SELECT alias FROM room_aliases WHERE room_id = $1 ORDER BY alias`, roomID))
	if out == nil && err == nil {
		out = []string{}
	}
	return out, err
}

// SetRoomPublic publishes or unpublishes a room in the directory.
func (db *DB) SetRoomPublic(ctx context.Context, roomID string, public bool) error {
	_, err := db.Exec(ctx, `UPDATE rooms SET is_public = $1 WHERE room_id = $2`, public, roomID)
	return err
}

// PublicRoomIDs lists the rooms published in the directory, by room ID.
func (db *DB) PublicRoomIDs(ctx context.Context) ([]string, error) {
	return collectStrings(db.Query(ctx, `SELECT room_id FROM rooms WHERE is_public ORDER BY room_id`))
}

// AddReport records a user's report of an event (or of a room when eventID is "").
func (db *DB) AddReport(ctx context.Context, roomID, eventID, reporter, reason string, score *int64, ts int64) error {
	_, err := db.Exec(ctx, `INSERT INTO event_reports (room_id, event_id, reporter, reason, score, created_ts) VALUES ($1, $2, $3, $4, $5, $6)`,
		roomID, eventID, reporter, reason, score, ts)
	return err
}
