package storage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
)

// RoomResidency is a room's zone under the residency policy (table
// room_residency).
type RoomResidency struct {
	RoomID    string
	Zone      string
	Rule      string // what decided it
	Source    string // "created" (pinned at creation here) or "classified" (a room hosted elsewhere)
	DecidedTS int64
}

// GetRoomResidency returns a room's recorded zone; ErrNotFound if none was
// decided yet.
func (db *DB) GetRoomResidency(ctx context.Context, roomID string) (RoomResidency, error) {
	r := RoomResidency{RoomID: roomID}
	err := db.QueryRow(ctx, `SELECT zone, rule, source, decided_ts FROM room_residency WHERE room_id = $1`, roomID).
		Scan(&r.Zone, &r.Rule, &r.Source, &r.DecidedTS)
	if err != nil {
		return RoomResidency{}, err
	}
	return r, nil
}

// PinRoomResidency records a room's zone unless one is recorded already,
// and returns the recorded one: the first decision stays.
func (db *DB) PinRoomResidency(ctx context.Context, r RoomResidency) (RoomResidency, error) {
	if _, err := db.Exec(ctx, `INSERT INTO room_residency (room_id, zone, rule, source, decided_ts) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (room_id) DO NOTHING`, r.RoomID, r.Zone, r.Rule, r.Source, r.DecidedTS); err != nil {
		return RoomResidency{}, fmt.Errorf("recording the zone of %s: %w", r.RoomID, err)
	}
	return db.GetRoomResidency(ctx, r.RoomID)
}

// RoomFacts is what the residency rules classify a room by, read from the
// store's copy of its state.
type RoomFacts struct {
	Creator  string // m.room.create's sender (its creator in room versions before 11)
	RoomType string // m.room.create's content.type ("" without)
	// Aliases: the canonical alias and its alt_aliases.
	Aliases []string
	// Residency is the zone m.room.create's content pins
	// (org.myelin.residency.zone), "" without.
	Residency string
}

// GetRoomFacts reads a room's classification facts from its current state;
// ErrNotFound when the server holds no m.room.create for it.
func (db *DB) GetRoomFacts(ctx context.Context, roomID string) (RoomFacts, error) {
	create, err := db.CurrentStateEvent(ctx, roomID, "m.room.create", "")
	if err != nil {
		return RoomFacts{}, err
	}
	var pdu struct {
		Sender  string `json:"sender"`
		Content struct {
			Creator   string `json:"creator"`
			Type      any    `json:"type"`
			Residency struct {
				Zone any `json:"zone"`
			} `json:"org.myelin.residency"`
		} `json:"content"`
	}
	if err := json.Unmarshal(create.JSON, &pdu); err != nil {
		return RoomFacts{}, fmt.Errorf("room %s: reading m.room.create: %w", roomID, err)
	}
	f := RoomFacts{Creator: pdu.Sender}
	if f.Creator == "" {
		f.Creator = pdu.Content.Creator
	}
	f.RoomType, _ = pdu.Content.Type.(string)
	f.Residency, _ = pdu.Content.Residency.Zone.(string)
	alias, err := db.CurrentStateEvent(ctx, roomID, "m.room.canonical_alias", "")
	switch {
	case errors.Is(err, ErrNotFound):
	case err != nil:
		return RoomFacts{}, err
	default:
		var c struct {
			Content struct {
				Alias      any   `json:"alias"`
				AltAliases []any `json:"alt_aliases"`
			} `json:"content"`
		}
		if json.Unmarshal(alias.JSON, &c) == nil {
			if a, ok := c.Content.Alias.(string); ok && a != "" {
				f.Aliases = append(f.Aliases, a)
			}
			for _, v := range c.Content.AltAliases {
				if a, ok := v.(string); ok && a != "" && len(f.Aliases) < 20 {
					f.Aliases = append(f.Aliases, a)
				}
			}
		}
	}
	return f, nil
}

// RoomEncrypted reports whether a room's current state has m.room.encryption.
func (db *DB) RoomEncrypted(ctx context.Context, roomID string) (bool, error) {
	var n int
	if err := db.QueryRow(ctx, `SELECT COUNT(*) FROM current_state WHERE room_id = $1 AND type = 'm.room.encryption' AND state_key = ''`,
		roomID).Scan(&n); err != nil {
		return false, fmt.Errorf("room %s: reading m.room.encryption: %w", roomID, err)
	}
	return n > 0, nil
}
