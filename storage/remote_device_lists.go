package storage

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// Remote users' device lists (the keyserver's cache, migration 0250) and the
// stream_ids of the device-list updates we send for local users.

// RemoteDevice is one cached device of a remote user.
type RemoteDevice struct {
	KeyJSON     []byte // signed device_keys as their server gave it; nil: the device has no keys
	DisplayName string
}

// RemoteDeviceList is a remote user's cached device list.
type RemoteDeviceList struct {
	UserID   string
	StreamID int64 // last update applied; -1: unknown
	Stale    bool  // to be resynced before use
	// FilledPos is the stream position when the list was last fetched whole.
	FilledPos int64
	Devices   map[string]RemoteDevice
	// CrossSigning holds the master and self_signing keys by type.
	CrossSigning map[string][]byte
	// Seen are the stream_ids of the latest updates applied (prev_id checks).
	Seen map[int64]bool
}

// remoteSeenKept bounds the stream_ids remembered per user.
const remoteSeenKept = 50

// RemoteDeviceLists returns the cached lists of the given users (those with
// none are absent).
func (db *DB) RemoteDeviceLists(ctx context.Context, userIDs []string) (map[string]*RemoteDeviceList, error) {
	out := map[string]*RemoteDeviceList{}
	err := inChunks(userIDs, func(chunk []string) error {
		in, args := placeholders(1, len(chunk)), anyArgs(chunk)
		rows, err := db.Query(ctx, `SELECT user_id, stream_id, stale, filled_pos FROM remote_device_lists WHERE user_id IN (`+in+`)`, args...)
		if err != nil {
			return fmt.Errorf("reading remote device lists: %w", err)
		}
		for rows.Next() {
			l := &RemoteDeviceList{Devices: map[string]RemoteDevice{}, CrossSigning: map[string][]byte{}, Seen: map[int64]bool{}}
			if err := rows.Scan(&l.UserID, &l.StreamID, &l.Stale, &l.FilledPos); err != nil {
				rows.Close()
				return err
			}
			out[l.UserID] = l
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		rows, err = db.Query(ctx, `SELECT user_id, device_id, key_json, display_name FROM remote_device_keys WHERE user_id IN (`+in+`)`, args...)
		if err != nil {
			return fmt.Errorf("reading remote device keys: %w", err)
		}
		for rows.Next() {
			var u, d, j, name string
			if err := rows.Scan(&u, &d, &j, &name); err != nil {
				rows.Close()
				return err
			}
			if l := out[u]; l != nil {
				dev := RemoteDevice{DisplayName: name}
				if j != "" {
					dev.KeyJSON = []byte(j)
				}
				l.Devices[d] = dev
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		rows, err = db.Query(ctx, `SELECT user_id, key_type, key_json FROM remote_cross_signing_keys WHERE user_id IN (`+in+`)`, args...)
		if err != nil {
			return fmt.Errorf("reading remote cross-signing keys: %w", err)
		}
		for rows.Next() {
			var u, typ, j string
			if err := rows.Scan(&u, &typ, &j); err != nil {
				rows.Close()
				return err
			}
			if l := out[u]; l != nil {
				l.CrossSigning[typ] = []byte(j)
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		rows, err = db.Query(ctx, `SELECT user_id, stream_id FROM remote_device_list_seen WHERE user_id IN (`+in+`)`, args...)
		if err != nil {
			return fmt.Errorf("reading remote device-list stream ids: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var u string
			var sid int64
			if err := rows.Scan(&u, &sid); err != nil {
				return err
			}
			if l := out[u]; l != nil {
				l.Seen[sid] = true
			}
		}
		return rows.Err()
	})
	return out, err
}

// ReplaceRemoteDeviceList stores a whole list (a resync, or keys fetched by
// /user/keys/query with StreamID -1), replacing what was cached; it is fresh.
func (db *DB) ReplaceRemoteDeviceList(ctx context.Context, l RemoteDeviceList, now int64) error {
	return db.ReplaceRemoteDeviceLists(ctx, []RemoteDeviceList{l}, now)
}

// ReplaceRemoteDeviceLists is ReplaceRemoteDeviceList for many users, in
// one transaction.
func (db *DB) ReplaceRemoteDeviceLists(ctx context.Context, lists []RemoteDeviceList, now int64) error {
	pos := db.Stream.Current()
	return db.Tx(ctx, func(tx Querier) error {
		for _, l := range lists {
			if err := replaceRemoteList(ctx, tx, l, pos, now); err != nil {
				return err
			}
		}
		return nil
	})
}

func replaceRemoteList(ctx context.Context, tx Querier, l RemoteDeviceList, pos, now int64) error {
	for _, q := range []string{`DELETE FROM remote_device_keys WHERE user_id = $1`,
		`DELETE FROM remote_cross_signing_keys WHERE user_id = $1`, `DELETE FROM remote_device_list_seen WHERE user_id = $1`} {
		if _, err := tx.Exec(ctx, q, l.UserID); err != nil {
			return fmt.Errorf("clearing %s's cached device list: %w", l.UserID, err)
		}
	}
	if err := upsertRemoteList(ctx, tx, l.UserID, l.StreamID, pos, now); err != nil {
		return err
	}
	for dev, d := range l.Devices {
		if err := putRemoteDevice(ctx, tx, l.UserID, dev, d); err != nil {
			return err
		}
	}
	for typ, k := range l.CrossSigning {
		if err := putRemoteCrossSigningKey(ctx, tx, l.UserID, typ, k); err != nil {
			return err
		}
	}
	return nil
}

// RemoteDeviceUpdate is one applied m.device_list_update.
type RemoteDeviceUpdate struct {
	UserID, DeviceID string
	StreamID         int64
	Deleted          bool
	Device           RemoteDevice
}

// ApplyRemoteDeviceUpdate applies one device's update to a cached list: the
// device replaced or deleted, the list's stream_id advanced and remembered.
func (db *DB) ApplyRemoteDeviceUpdate(ctx context.Context, u RemoteDeviceUpdate, now int64) error {
	return db.Tx(ctx, func(tx Querier) error {
		if u.Deleted {
			if _, err := tx.Exec(ctx, `DELETE FROM remote_device_keys WHERE user_id = $1 AND device_id = $2`, u.UserID, u.DeviceID); err != nil {
				return fmt.Errorf("deleting a remote device: %w", err)
			}
		} else if err := putRemoteDevice(ctx, tx, u.UserID, u.DeviceID, u.Device); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE remote_device_lists SET stream_id = $2, updated_ts = $3 WHERE user_id = $1`,
			u.UserID, u.StreamID, now); err != nil {
			return fmt.Errorf("advancing %s's device list: %w", u.UserID, err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO remote_device_list_seen (user_id, stream_id) VALUES ($1, $2) ON CONFLICT DO NOTHING`,
			u.UserID, u.StreamID); err != nil {
			return fmt.Errorf("remembering a device-list update: %w", err)
		}
		// Keep only the latest few stream_ids.
		_, err := tx.Exec(ctx, `DELETE FROM remote_device_list_seen WHERE user_id = $1 AND stream_id NOT IN
			(SELECT stream_id FROM remote_device_list_seen WHERE user_id = $1 ORDER BY stream_id DESC LIMIT $2)`, u.UserID, remoteSeenKept)
		return err
	})
}

// SetRemoteCrossSigningKeys replaces the given cross-signing keys of a
// cached remote user.
func (db *DB) SetRemoteCrossSigningKeys(ctx context.Context, userID string, keys map[string][]byte) error {
	return db.Tx(ctx, func(tx Querier) error {
		for typ, k := range keys {
			if err := putRemoteCrossSigningKey(ctx, tx, userID, typ, k); err != nil {
				return err
			}
		}
		return nil
	})
}

// MarkRemoteDeviceListStale marks a user's list to be resynced before use
// (creating an empty one when none is cached).
func (db *DB) MarkRemoteDeviceListStale(ctx context.Context, userID string, now int64) error {
	_, err := db.Exec(ctx, `INSERT INTO remote_device_lists (user_id, stream_id, stale, updated_ts) VALUES ($1, -1, TRUE, $2)
		ON CONFLICT (user_id) DO UPDATE SET stale = TRUE`, userID, now)
	if err != nil {
		return fmt.Errorf("marking %s's device list stale: %w", userID, err)
	}
	return nil
}

// DropRemoteDeviceList forgets a remote user's cached list (nobody here
// shares a room with them any more).
func (db *DB) DropRemoteDeviceList(ctx context.Context, userID string) error {
	return db.Tx(ctx, func(tx Querier) error {
		for _, table := range []string{"remote_device_lists", "remote_device_keys", "remote_cross_signing_keys", "remote_device_list_seen"} {
			if _, err := tx.Exec(ctx, `DELETE FROM `+table+` WHERE user_id = $1`, userID); err != nil {
				return fmt.Errorf("dropping %s's cached device list: %w", userID, err)
			}
		}
		return nil
	})
}

// NextDeviceListStreamIDs reserves n consecutive stream_ids for a local
// user's outbound device-list updates: it returns the last one sent before
// (0: none) and the first reserved (prev+1).
func (db *DB) NextDeviceListStreamIDs(ctx context.Context, userID string, n int) (prev int64, err error) {
	err = db.Tx(ctx, func(tx Querier) error {
		err := tx.QueryRow(ctx, `SELECT stream_id FROM device_list_outbound WHERE user_id = $1`, userID).Scan(&prev)
		if err != nil && !errors.Is(err, ErrNotFound) {
			return fmt.Errorf("reading %s's device-list stream id: %w", userID, err)
		}
		_, err = tx.Exec(ctx, `INSERT INTO device_list_outbound (user_id, stream_id) VALUES ($1, $2)
			ON CONFLICT (user_id) DO UPDATE SET stream_id = excluded.stream_id`, userID, prev+int64(n))
		return err
	})
	return prev, err
}

// DeviceListStreamID is the stream_id of the last device-list update sent
// for a local user (0: none yet): GET /user/devices's stream_id.
func (db *DB) DeviceListStreamID(ctx context.Context, userID string) (int64, error) {
	var sid int64
	err := db.QueryRow(ctx, `SELECT stream_id FROM device_list_outbound WHERE user_id = $1`, userID).Scan(&sid)
	if errors.Is(err, ErrNotFound) {
		return 0, nil
	}
	return sid, err
}

func upsertRemoteList(ctx context.Context, tx Querier, userID string, streamID, pos, now int64) error {
	if _, err := tx.Exec(ctx, `INSERT INTO remote_device_lists (user_id, stream_id, stale, filled_pos, updated_ts) VALUES ($1, $2, FALSE, $3, $4)
		ON CONFLICT (user_id) DO UPDATE SET stream_id = excluded.stream_id, stale = FALSE, filled_pos = excluded.filled_pos,
			updated_ts = excluded.updated_ts`,
		userID, streamID, pos, now); err != nil {
		return fmt.Errorf("storing %s's device list: %w", userID, err)
	}
	if streamID >= 0 {
		if _, err := tx.Exec(ctx, `INSERT INTO remote_device_list_seen (user_id, stream_id) VALUES ($1, $2) ON CONFLICT DO NOTHING`,
			userID, streamID); err != nil {
			return fmt.Errorf("remembering a device-list stream id: %w", err)
		}
	}
	return nil
}

func putRemoteDevice(ctx context.Context, tx Querier, userID, deviceID string, d RemoteDevice) error {
	if _, err := tx.Exec(ctx, `INSERT INTO remote_device_keys (user_id, device_id, key_json, display_name) VALUES ($1, $2, $3, $4)
		ON CONFLICT (user_id, device_id) DO UPDATE SET key_json = excluded.key_json, display_name = excluded.display_name`,
		userID, deviceID, string(d.KeyJSON), d.DisplayName); err != nil {
		return fmt.Errorf("storing a remote device: %w", err)
	}
	return nil
}

func putRemoteCrossSigningKey(ctx context.Context, tx Querier, userID, typ string, k []byte) error {
	if _, err := tx.Exec(ctx, `INSERT INTO remote_cross_signing_keys (user_id, key_type, key_json) VALUES ($1, $2, $3)
		ON CONFLICT (user_id, key_type) DO UPDATE SET key_json = excluded.key_json`, userID, typ, string(k)); err != nil {
		return fmt.Errorf("storing a remote cross-signing key: %w", err)
	}
	return nil
}

// SharingSinceMany is SharingSince for many users at once (one query per
// chunk of users, not one scan per user): the users sharing a room with a
// user of server, each with its position; the others are absent.
func (db *DB) SharingSinceMany(ctx context.Context, userIDs []string, server string) (map[string]int64, error) {
	pattern := "%:" + strings.NewReplacer(`\`, `\\`, "%", `\%`, "_", `\_`).Replace(server)
	out := map[string]int64{}
	err := inChunks(userIDs, func(chunk []string) error {
		rows, err := db.Query(ctx, `SELECT theirs.user_id,
			MIN(CASE WHEN theirs.stream_pos > ours.first_pos THEN theirs.stream_pos ELSE ours.first_pos END)
			FROM memberships theirs
			JOIN (SELECT room_id, MIN(stream_pos) AS first_pos FROM memberships
			      WHERE membership IN ('join', 'invite') AND user_id LIKE $1 ESCAPE '\' GROUP BY room_id) ours
			  ON ours.room_id = theirs.room_id
			WHERE theirs.user_id IN (`+placeholders(2, len(chunk))+`) AND theirs.membership IN ('join', 'invite')
			GROUP BY theirs.user_id`, append([]any{pattern}, anyArgs(chunk)...)...)
		if err != nil {
			return fmt.Errorf("reading which users share a room with %s: %w", server, err)
		}
		defer rows.Close()
		for rows.Next() {
			var u string
			var pos int64
			if err := rows.Scan(&u, &pos); err != nil {
				return err
			}
			out[u] = pos
		}
		return rows.Err()
	})
	return out, err
}

// SharingSince tells whether a remote user shares a room (joined or invited)
// with a user of server (ours), and since when without interruption in at
// least one room: the earliest, over those rooms, of the later of their own
// membership's position and the earliest current membership of one of
// server's users there. A list fetched before that position may have missed
// updates (their server sent us none while we shared no room).
func (db *DB) SharingSince(ctx context.Context, userID, server string) (since int64, sharing bool, err error) {
	pattern := "%:" + strings.NewReplacer(`\`, `\\`, "%", `\%`, "_", `\_`).Replace(server)
	var pos *int64
	err = db.QueryRow(ctx, `SELECT MIN(CASE WHEN theirs.stream_pos > ours.first_pos THEN theirs.stream_pos ELSE ours.first_pos END)
		FROM memberships theirs
		JOIN (SELECT room_id, MIN(stream_pos) AS first_pos FROM memberships
		      WHERE membership IN ('join', 'invite') AND user_id LIKE $2 ESCAPE '\' GROUP BY room_id) ours
		  ON ours.room_id = theirs.room_id
		WHERE theirs.user_id = $1 AND theirs.membership IN ('join', 'invite')`, userID, pattern).Scan(&pos)
	if err != nil {
		return 0, false, fmt.Errorf("reading whether %s shares a room with %s: %w", userID, server, err)
	}
	if pos == nil {
		return 0, false, nil
	}
	return *pos, true, nil
}
