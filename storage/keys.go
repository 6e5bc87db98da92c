package storage

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
)

// End-to-end encryption: device keys, one-time and fallback keys, cross-signing
// keys and signatures, device-list changes. To-device messages are in
// keys_todevice.go, key backup in keys_backup.go.

func init() {
	registerStreamTable("device_list_changes")
	registerStreamTable("to_device_messages")
}

// DeviceKeys is a device's signed identity keys. KeyJSON is canonical JSON.
type DeviceKeys struct {
	UserID     string
	DeviceID   string
	Ed25519    string
	KeyJSON    []byte
	Dehydrated bool
}

// OneTimeKey is a one-time or fallback key; KeyJSON is the canonical JSON of
// the key value (an object for signed keys, a JSON string otherwise).
type OneTimeKey struct {
	Algorithm string
	KeyID     string
	KeyJSON   []byte
}

// KeyUpload is one /keys/upload: any part may be empty.
type KeyUpload struct {
	UserID       string
	DeviceID     string
	DeviceKeys   *DeviceKeys
	OneTimeKeys  []OneTimeKey
	FallbackKeys []OneTimeKey // at most one per algorithm; replaces the stored one
	StreamPos    int64        // device-list change position, used if the device keys changed
	Now          int64
	// MaxOneTimeKeys and MaxFallbackKeys bound what the device may hold
	// after the upload (0: no bound); past them the upload changes nothing
	// and fails with a *KeyLimitError.
	MaxOneTimeKeys  int
	MaxFallbackKeys int
}

// KeyLimitError reports an upload that would leave a device holding more
// one-time (or fallback) keys than allowed.
type KeyLimitError struct {
	What      string // "one-time keys" or "fallback keys"
	Held, Max int
}

func (e *KeyLimitError) Error() string {
	return fmt.Sprintf("the device would hold %d %s, more than %d", e.Held, e.What, e.Max)
}

// KeyConflictError reports a one-time key ID re-uploaded with different content.
type KeyConflictError struct{ KeyID string }

func (e *KeyConflictError) Error() string {
	return "one-time key " + e.KeyID + " already exists with different content"
}

// UploadKeys stores a device's keys in one transaction. It reports whether the
// device keys are new or changed (a device-list change was recorded at StreamPos).
func (db *DB) UploadKeys(ctx context.Context, up KeyUpload) (changed bool, err error) {
	err = db.Tx(ctx, func(tx Querier) error {
		var err error
		changed, err = uploadKeysTx(ctx, tx, up)
		return err
	})
	return changed, err
}

func uploadKeysTx(ctx context.Context, tx Querier, up KeyUpload) (changed bool, err error) {
	if dk := up.DeviceKeys; dk != nil {
		var oldEd, oldJSON string
		err := tx.QueryRow(ctx, `SELECT ed25519, key_json FROM device_keys WHERE user_id = $1 AND device_id = $2`,
			up.UserID, up.DeviceID).Scan(&oldEd, &oldJSON)
		switch {
		case errors.Is(err, ErrNotFound):
			changed = true
			if _, err := tx.Exec(ctx, `INSERT INTO device_keys (user_id, device_id, ed25519, key_json, dehydrated, updated_ts)
				VALUES ($1, $2, $3, $4, $5, $6)`, up.UserID, up.DeviceID, dk.Ed25519, string(dk.KeyJSON), dk.Dehydrated, up.Now); err != nil {
				return false, fmt.Errorf("inserting device keys: %w", err)
			}
		case err != nil:
			return false, fmt.Errorf("reading device keys: %w", err)
		case oldJSON != string(dk.KeyJSON):
			changed = true
			if _, err := tx.Exec(ctx, `UPDATE device_keys SET ed25519 = $3, key_json = $4, dehydrated = $5, updated_ts = $6
				WHERE user_id = $1 AND device_id = $2`, up.UserID, up.DeviceID, dk.Ed25519, string(dk.KeyJSON), dk.Dehydrated, up.Now); err != nil {
				return false, fmt.Errorf("updating device keys: %w", err)
			}
			if oldEd != dk.Ed25519 {
				// Signatures over the old identity key no longer apply.
				if _, err := tx.Exec(ctx, `DELETE FROM key_signatures WHERE target_user_id = $1 AND target_key_id = $2`,
					up.UserID, up.DeviceID); err != nil {
					return false, err
				}
			}
		}
		if changed {
			if err := markDeviceListChanged(ctx, tx, up.UserID, up.StreamPos); err != nil {
				return false, err
			}
			if err := addOutbox(ctx, tx, up.UserID, up.DeviceID); err != nil {
				return false, err
			}
		}
	}
	if err := storeOneTimeKeys(ctx, tx, up); err != nil {
		return false, err
	}
	if err := storeFallbackKeys(ctx, tx, up); err != nil {
		return false, err
	}
	return changed, nil
}

// storeOneTimeKeys adds an upload's one-time keys, numbered after the
// device's earlier uploads so that claims take the oldest first.
func storeOneTimeKeys(ctx context.Context, tx Querier, up KeyUpload) error {
	if len(up.OneTimeKeys) == 0 {
		return nil
	}
	var seq int64
	if err := tx.QueryRow(ctx, `SELECT COALESCE(MAX(seq), 0) + 1 FROM one_time_keys WHERE user_id = $1 AND device_id = $2`,
		up.UserID, up.DeviceID).Scan(&seq); err != nil {
		return fmt.Errorf("numbering one-time keys: %w", err)
	}
	for _, k := range up.OneTimeKeys {
		n, err := tx.Exec(ctx, `INSERT INTO one_time_keys (user_id, device_id, algorithm, key_id, key_json, seq)
			VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING`, up.UserID, up.DeviceID, k.Algorithm, k.KeyID, string(k.KeyJSON), seq)
		if err != nil {
			return fmt.Errorf("inserting one-time key: %w", err)
		}
		if n == 0 {
			var old string
			if err := tx.QueryRow(ctx, `SELECT key_json FROM one_time_keys WHERE user_id = $1 AND device_id = $2 AND algorithm = $3 AND key_id = $4`,
				up.UserID, up.DeviceID, k.Algorithm, k.KeyID).Scan(&old); err != nil {
				return fmt.Errorf("reading one-time key: %w", err)
			}
			if old != string(k.KeyJSON) {
				return &KeyConflictError{KeyID: k.Algorithm + ":" + k.KeyID}
			}
		}
	}
	return checkKeyCount(ctx, tx, up, "one_time_keys", "one-time keys", up.MaxOneTimeKeys)
}

// storeFallbackKeys stores an upload's fallback keys, one per algorithm.
func storeFallbackKeys(ctx context.Context, tx Querier, up KeyUpload) error {
	if len(up.FallbackKeys) == 0 {
		return nil
	}
	for _, k := range up.FallbackKeys {
		// Re-uploading the same key keeps its used flag; a new key starts unused.
		if _, err := tx.Exec(ctx, `INSERT INTO fallback_keys (user_id, device_id, algorithm, key_id, key_json, used)
			VALUES ($1, $2, $3, $4, $5, FALSE)
			ON CONFLICT (user_id, device_id, algorithm) DO UPDATE SET key_id = excluded.key_id, key_json = excluded.key_json,
				used = CASE WHEN fallback_keys.key_json = excluded.key_json THEN fallback_keys.used ELSE FALSE END`,
			up.UserID, up.DeviceID, k.Algorithm, k.KeyID, string(k.KeyJSON)); err != nil {
			return fmt.Errorf("storing fallback key: %w", err)
		}
	}
	return checkKeyCount(ctx, tx, up, "fallback_keys", "fallback keys", up.MaxFallbackKeys)
}

// checkKeyCount fails with a *KeyLimitError (rolling the upload back) when
// the device now holds more than limit rows of table; limit 0 is no bound.
// Counting after the insert counts re-uploaded keys once.
func checkKeyCount(ctx context.Context, tx Querier, up KeyUpload, table, what string, limit int) error {
	if limit <= 0 {
		return nil
	}
	var n int
	if err := tx.QueryRow(ctx, `SELECT COUNT(*) FROM `+table+` WHERE user_id = $1 AND device_id = $2`,
		up.UserID, up.DeviceID).Scan(&n); err != nil {
		return fmt.Errorf("counting %s: %w", what, err)
	}
	if n > limit {
		return &KeyLimitError{What: what, Held: n, Max: limit}
	}
	return nil
}

func markDeviceListChanged(ctx context.Context, tx Querier, userID string, pos int64) error {
	_, err := tx.Exec(ctx, `INSERT INTO device_list_changes (user_id, stream_pos) VALUES ($1, $2)
		ON CONFLICT (user_id) DO UPDATE SET stream_pos = excluded.stream_pos`, userID, pos)
	if err != nil {
		return fmt.Errorf("recording device-list change: %w", err)
	}
	return nil
}

// MarkDeviceListChanged records that userID's device list changed at pos.
func (db *DB) MarkDeviceListChanged(ctx context.Context, userID string, pos int64) error {
	return markDeviceListChanged(ctx, db.writer(), userID, pos)
}

// DeviceListChangedBetween lists users whose device list changed at a
// position in (from, to].
func (db *DB) DeviceListChangedBetween(ctx context.Context, from, to int64) ([]string, error) {
	users, err := collectStrings(db.Query(ctx, `SELECT user_id FROM device_list_changes WHERE stream_pos > $1 AND stream_pos <= $2`, from, to))
	if err != nil {
		return nil, fmt.Errorf("reading device-list changes: %w", err)
	}
	return users, nil
}

// DeviceListChangedFor lists the users whose keys changed for viewer alone
// (viewer signed them) at a position in (from, to].
func (db *DB) DeviceListChangedFor(ctx context.Context, viewer string, from, to int64) ([]string, error) {
	users, err := collectStrings(db.Query(ctx, `SELECT user_id FROM device_list_changes_for
		WHERE viewer_user_id = $1 AND stream_pos > $2 AND stream_pos <= $3`, viewer, from, to))
	if err != nil {
		return nil, fmt.Errorf("reading key changes seen by %s: %w", viewer, err)
	}
	return users, nil
}

// DeviceKeyEd25519 returns a device's ed25519 identity key; ErrNotFound if it has no keys.
func (db *DB) DeviceKeyEd25519(ctx context.Context, userID, deviceID string) (string, error) {
	var k string
	err := db.QueryRow(ctx, `SELECT ed25519 FROM device_keys WHERE user_id = $1 AND device_id = $2`, userID, deviceID).Scan(&k)
	return k, err
}

// OneTimeKeyCounts counts a device's unclaimed one-time keys per algorithm.
func (db *DB) OneTimeKeyCounts(ctx context.Context, userID, deviceID string) (map[string]int, error) {
	rows, err := db.Query(ctx, `SELECT algorithm, COUNT(*) FROM one_time_keys WHERE user_id = $1 AND device_id = $2 GROUP BY algorithm`,
		userID, deviceID)
	if err != nil {
		return nil, fmt.Errorf("counting one-time keys: %w", err)
	}
	defer rows.Close()
	counts := map[string]int{}
	for rows.Next() {
		var alg string
		var n int
		if err := rows.Scan(&alg, &n); err != nil {
			return nil, err
		}
		counts[alg] = n
	}
	return counts, rows.Err()
}

// UnusedFallbackKeyTypes lists the algorithms of a device's fallback keys not yet claimed.
func (db *DB) UnusedFallbackKeyTypes(ctx context.Context, userID, deviceID string) ([]string, error) {
	list, err := collectStrings(db.Query(ctx, `SELECT algorithm FROM fallback_keys WHERE user_id = $1 AND device_id = $2 AND NOT used ORDER BY algorithm`,
		userID, deviceID))
	if err != nil {
		return nil, fmt.Errorf("reading fallback keys: %w", err)
	}
	if list == nil {
		list = []string{}
	}
	return list, nil
}

// QueryDeviceKeys returns the stored device keys of users: user → device → canonical JSON.
func (db *DB) QueryDeviceKeys(ctx context.Context, userIDs []string) (map[string]map[string][]byte, error) {
	out := map[string]map[string][]byte{}
	err := inChunks(userIDs, func(chunk []string) error {
		rows, err := db.Query(ctx, `SELECT user_id, device_id, key_json FROM device_keys WHERE user_id IN (`+placeholders(1, len(chunk))+`)`,
			anyArgs(chunk)...)
		if err != nil {
			return fmt.Errorf("querying device keys: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var u, d, j string
			if err := rows.Scan(&u, &d, &j); err != nil {
				return err
			}
			if out[u] == nil {
				out[u] = map[string][]byte{}
			}
			out[u][d] = []byte(j)
		}
		return rows.Err()
	})
	return out, err
}

// DeviceDisplayNames returns the display names users set on their devices
// (and dehydrated devices): user → device → name, unnamed devices left out.
func (db *DB) DeviceDisplayNames(ctx context.Context, userIDs []string) (map[string]map[string]string, error) {
	out := map[string]map[string]string{}
	err := inChunks(userIDs, func(chunk []string) error {
		in := placeholders(1, len(chunk))
		rows, err := db.Query(ctx, `SELECT user_id, device_id, display_name FROM devices
			WHERE user_id IN (`+in+`) AND display_name IS NOT NULL AND display_name <> ''
			UNION ALL SELECT user_id, device_id, display_name FROM dehydrated_devices
			WHERE user_id IN (`+in+`) AND display_name <> ''`, anyArgs(chunk)...)
		if err != nil {
			return fmt.Errorf("reading device display names: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var u, d, name string
			if err := rows.Scan(&u, &d, &name); err != nil {
				return err
			}
			if out[u] == nil {
				out[u] = map[string]string{}
			}
			out[u][d] = name
		}
		return rows.Err()
	})
	return out, err
}

// KeySignature is a signature uploaded through /keys/signatures/upload.
type KeySignature struct {
	TargetUserID string
	TargetKeyID  string // device ID or cross-signing public key
	SignerUserID string
	SignerKeyID  string // "ed25519:<key>"
	Signature    string
}

// SignaturesOn returns the uploaded signatures on keys of the given users.
func (db *DB) SignaturesOn(ctx context.Context, userIDs []string) ([]KeySignature, error) {
	var out []KeySignature
	err := inChunks(userIDs, func(chunk []string) error {
		rows, err := db.Query(ctx, `SELECT target_user_id, target_key_id, signer_user_id, signer_key_id, signature
			FROM key_signatures WHERE target_user_id IN (`+placeholders(1, len(chunk))+`)`, anyArgs(chunk)...)
		if err != nil {
			return fmt.Errorf("querying signatures: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var s KeySignature
			if err := rows.Scan(&s.TargetUserID, &s.TargetKeyID, &s.SignerUserID, &s.SignerKeyID, &s.Signature); err != nil {
				return err
			}
			out = append(out, s)
		}
		return rows.Err()
	})
	return out, err
}

// AddSignatures stores verified signatures and records device-list changes for
// changedUsers at pos, in one transaction. A signature on another user's key
// is a change of that user's keys for the signer alone (DeviceListChangedFor).
func (db *DB) AddSignatures(ctx context.Context, sigs []KeySignature, changedUsers []string, pos int64) error {
	return db.Tx(ctx, func(tx Querier) error {
		for _, s := range sigs {
			if _, err := tx.Exec(ctx, `INSERT INTO key_signatures (target_user_id, target_key_id, signer_user_id, signer_key_id, signature)
				VALUES ($1, $2, $3, $4, $5) ON CONFLICT (target_user_id, target_key_id, signer_user_id, signer_key_id)
				DO UPDATE SET signature = excluded.signature`,
				s.TargetUserID, s.TargetKeyID, s.SignerUserID, s.SignerKeyID, s.Signature); err != nil {
				return fmt.Errorf("storing signature: %w", err)
			}
			if s.TargetUserID != s.SignerUserID {
				if _, err := tx.Exec(ctx, `INSERT INTO device_list_changes_for (viewer_user_id, user_id, stream_pos) VALUES ($1, $2, $3)
					ON CONFLICT (viewer_user_id, user_id) DO UPDATE SET stream_pos = excluded.stream_pos`,
					s.SignerUserID, s.TargetUserID, pos); err != nil {
					return fmt.Errorf("recording a signed user's key change: %w", err)
				}
			}
		}
		for _, u := range changedUsers {
			if err := markDeviceListChanged(ctx, tx, u, pos); err != nil {
				return err
			}
		}
		return signedOwnKeysOutbox(ctx, tx, sigs)
	})
}

// KeyClaim asks for one key of Algorithm for a device.
type KeyClaim struct {
	UserID, DeviceID, Algorithm string
}

// ClaimedKey is a claimed one-time (or fallback) key.
type ClaimedKey struct {
	KeyClaim
	KeyID   string
	KeyJSON []byte
}

// claimOneTimeKeyQuery removes and returns one key, the oldest (as Synapse
// does): clients that hold too many private keys forget the oldest first, so
// those should be the ones already handed out. On PostgreSQL, SKIP LOCKED
// makes concurrent claimers take different rows instead of both choosing the
// same row and one of them finding it gone; SQLite has a single writer.
var claimOneTimeKeyQuery = map[Dialect]string{
	SQLite: `DELETE FROM one_time_keys WHERE user_id = $1 AND device_id = $2 AND algorithm = $3 AND key_id =
		(SELECT key_id FROM one_time_keys WHERE user_id = $1 AND device_id = $2 AND algorithm = $3 ORDER BY seq, key_id LIMIT 1)
		RETURNING key_id, key_json`,
	Postgres: `DELETE FROM one_time_keys WHERE user_id = $1 AND device_id = $2 AND algorithm = $3 AND key_id =
		(SELECT key_id FROM one_time_keys WHERE user_id = $1 AND device_id = $2 AND algorithm = $3 ORDER BY seq, key_id LIMIT 1
		 FOR UPDATE SKIP LOCKED)
		RETURNING key_id, key_json`,
}

// claimBatch is how many claims one write transaction makes: a request may
// name any number of devices, and on SQLite a transaction holds the one
// writer, so other writers (room events, to-device) wait between batches at
// most, not for the whole request.
const claimBatch = 100

// ClaimKeys takes one one-time key per claim, or, when a device has none
// left, its fallback key (which is then marked used). Claims for devices with
// neither are left out of the result. Each claim is atomic (a key is never
// handed out twice); the request as a whole is not: claims are made in
// batches, and only for devices that hold keys (found by reads first), so a
// request naming many devices that do not exist costs reads, not writes.
func (db *DB) ClaimKeys(ctx context.Context, claims []KeyClaim) ([]ClaimedKey, error) {
	claims, err := db.claimable(ctx, claims)
	if err != nil {
		return nil, err
	}
	var out []ClaimedKey
	for len(claims) > 0 {
		n := min(claimBatch, len(claims))
		got, err := db.claimBatch(ctx, claims[:n])
		if err != nil {
			return out, err
		}
		out = append(out, got...)
		claims = claims[n:]
	}
	return out, nil
}

// claimable keeps the claims whose device holds a one-time or fallback key
// of any algorithm.
func (db *DB) claimable(ctx context.Context, claims []KeyClaim) ([]KeyClaim, error) {
	users := map[string]bool{}
	for _, c := range claims {
		users[c.UserID] = true
	}
	has := map[[2]string]bool{}
	err := inChunks(slices.Collect(maps.Keys(users)), func(chunk []string) error {
		in := placeholders(1, len(chunk))
		rows, err := db.Query(ctx, `SELECT DISTINCT user_id, device_id FROM one_time_keys WHERE user_id IN (`+in+`)
			UNION SELECT user_id, device_id FROM fallback_keys WHERE user_id IN (`+in+`)`, anyArgs(chunk)...)
		if err != nil {
			return fmt.Errorf("finding devices with keys to claim: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var u, d string
			if err := rows.Scan(&u, &d); err != nil {
				return err
			}
			has[[2]string{u, d}] = true
		}
		return rows.Err()
	})
	if err != nil {
		return nil, err
	}
	out := claims[:0:0]
	for _, c := range claims {
		if has[[2]string{c.UserID, c.DeviceID}] {
			out = append(out, c)
		}
	}
	return out, nil
}

// claimBatch makes claims in one transaction.
func (db *DB) claimBatch(ctx context.Context, claims []KeyClaim) ([]ClaimedKey, error) {
	var out []ClaimedKey
	err := db.Tx(ctx, func(tx Querier) error {
		out = out[:0]
		for _, c := range claims {
			var keyID, keyJSON string
			err := tx.QueryRow(ctx, claimOneTimeKeyQuery[db.dialect], c.UserID, c.DeviceID, c.Algorithm).Scan(&keyID, &keyJSON)
			if errors.Is(err, ErrNotFound) {
				err = tx.QueryRow(ctx, `UPDATE fallback_keys SET used = TRUE WHERE user_id = $1 AND device_id = $2 AND algorithm = $3
					RETURNING key_id, key_json`, c.UserID, c.DeviceID, c.Algorithm).Scan(&keyID, &keyJSON)
			}
			if errors.Is(err, ErrNotFound) {
				continue
			}
			if err != nil {
				return fmt.Errorf("claiming key: %w", err)
			}
			out = append(out, ClaimedKey{KeyClaim: c, KeyID: keyID, KeyJSON: []byte(keyJSON)})
		}
		return nil
	})
	return out, err
}

// CrossSigningKey is a stored cross-signing key.
type CrossSigningKey struct {
	PublicKey string
	KeyJSON   []byte
}

// CrossSigningKeys returns users' cross-signing keys: user → key type → key.
func (db *DB) CrossSigningKeys(ctx context.Context, userIDs []string) (map[string]map[string]CrossSigningKey, error) {
	out := map[string]map[string]CrossSigningKey{}
	err := inChunks(userIDs, func(chunk []string) error {
		rows, err := db.Query(ctx, `SELECT user_id, key_type, public_key, key_json FROM cross_signing_keys
			WHERE user_id IN (`+placeholders(1, len(chunk))+`)`, anyArgs(chunk)...)
		if err != nil {
			return fmt.Errorf("querying cross-signing keys: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var u, t, pk, j string
			if err := rows.Scan(&u, &t, &pk, &j); err != nil {
				return err
			}
			if out[u] == nil {
				out[u] = map[string]CrossSigningKey{}
			}
			out[u][t] = CrossSigningKey{PublicKey: pk, KeyJSON: []byte(j)}
		}
		return rows.Err()
	})
	return out, err
}

// SetCrossSigningKeys stores (replaces) some of a user's cross-signing keys
// and records a device-list change at pos.
func (db *DB) SetCrossSigningKeys(ctx context.Context, userID string, keys map[string]CrossSigningKey, pos, now int64) error {
	return db.Tx(ctx, func(tx Querier) error {
		for typ, k := range keys {
			if _, err := tx.Exec(ctx, `INSERT INTO cross_signing_keys (user_id, key_type, public_key, key_json, updated_ts)
				VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_id, key_type)
				DO UPDATE SET public_key = excluded.public_key, key_json = excluded.key_json, updated_ts = excluded.updated_ts`,
				userID, typ, k.PublicKey, string(k.KeyJSON), now); err != nil {
				return fmt.Errorf("storing %s key: %w", typ, err)
			}
		}
		if err := markDeviceListChanged(ctx, tx, userID, pos); err != nil {
			return err
		}
		return addOutbox(ctx, tx, userID, SigningKeysOutbox)
	})
}

// DeleteDeviceKeys removes everything the keyserver holds for devices: keys,
// signatures on them, pending to-device messages, the dehydrated device
// record. It records a device-list change at pos when anything was removed.
func (db *DB) DeleteDeviceKeys(ctx context.Context, userID string, deviceIDs []string, pos int64) (changed bool, err error) {
	err = db.Tx(ctx, func(tx Querier) error {
		changed, err = deleteDeviceKeysTx(ctx, tx, userID, deviceIDs, pos)
		return err
	})
	return changed, err
}

func deleteDeviceKeysTx(ctx context.Context, tx Querier, userID string, deviceIDs []string, pos int64) (changed bool, err error) {
	for _, d := range deviceIDs {
		n, err := tx.Exec(ctx, `DELETE FROM device_keys WHERE user_id = $1 AND device_id = $2`, userID, d)
		if err != nil {
			return false, fmt.Errorf("deleting device keys: %w", err)
		}
		changed = changed || n > 0
		for _, q := range []string{
			`DELETE FROM one_time_keys WHERE user_id = $1 AND device_id = $2`,
			`DELETE FROM fallback_keys WHERE user_id = $1 AND device_id = $2`,
			`DELETE FROM key_signatures WHERE target_user_id = $1 AND target_key_id = $2`,
			`DELETE FROM to_device_messages WHERE user_id = $1 AND device_id = $2`,
			`DELETE FROM to_device_txns WHERE user_id = $1 AND device_id = $2`,
			`DELETE FROM dehydrated_devices WHERE user_id = $1 AND device_id = $2`,
		} {
			if _, err := tx.Exec(ctx, q, userID, d); err != nil {
				return false, fmt.Errorf("deleting device data: %w", err)
			}
		}
	}
	if changed {
		if err := markDeviceListChanged(ctx, tx, userID, pos); err != nil {
			return false, err
		}
		if err := addOutbox(ctx, tx, userID, deviceIDs...); err != nil {
			return false, err
		}
	}
	return changed, nil
}
