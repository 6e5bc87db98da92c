package keyserver

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"

	"github.com/myelin-chat/myelin/internal/mxhttp"
	"github.com/myelin-chat/myelin/storage"
)

// BackupAlgorithm is the one backup algorithm the spec defines.
const BackupAlgorithm = "m.megolm_backup.v1.curve25519-aes-sha2"

// BackupVersionRequest is the body of POST /room_keys/version and PUT /room_keys/version/{version}.
type BackupVersionRequest struct {
	Algorithm string          `json:"algorithm"`
	AuthData  json.RawMessage `json:"auth_data"`
	Version   string          `json:"version,omitempty"`
}

// BackupVersionInfo describes a backup version.
type BackupVersionInfo struct {
	Algorithm string          `json:"algorithm"`
	AuthData  json.RawMessage `json:"auth_data"`
	Count     int64           `json:"count"`
	Etag      string          `json:"etag"`
	Version   string          `json:"version"`
}

// KeyBackupData is one session's backed-up key.
type KeyBackupData struct {
	FirstMessageIndex int64           `json:"first_message_index"`
	ForwardedCount    int64           `json:"forwarded_count"`
	IsVerified        bool            `json:"is_verified"`
	SessionData       json.RawMessage `json:"session_data"`
}

// RoomKeyBackup is a room's backed-up keys: session ID → key.
type RoomKeyBackup struct {
	Sessions map[string]KeyBackupData `json:"sessions"`
}

// BackupKeysResponse answers PUT and DELETE on /room_keys/keys.
type BackupKeysResponse struct {
	Count int64  `json:"count"`
	Etag  string `json:"etag"`
}

// MaxBackupDataBytes bounds a backup version's auth_data and each backed-up
// session's session_data: an encrypted room key is well under 1 KiB and
// auth_data holds a public key and signatures.
const MaxBackupDataBytes = 64 << 10

func checkAuthData(algorithm string, authData json.RawMessage) error {
	if algorithm == "" {
		return mxhttp.MissingParam("algorithm is required")
	}
	if len(authData) > MaxBackupDataBytes {
		return mxhttp.TooLarge("auth_data may be at most %d bytes", MaxBackupDataBytes)
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(authData, &obj); err != nil || obj == nil {
		return mxhttp.BadJSON("auth_data must be a JSON object")
	}
	return nil
}

// parseVersion parses a backup version string; unknown shapes cannot name a backup.
func parseVersion(v string) (int64, bool) {
	n, err := strconv.ParseInt(v, 10, 64)
	return n, err == nil && n > 0
}

// CreateBackup handles POST /room_keys/version.
func (s *Service) CreateBackup(ctx context.Context, userID string, req *BackupVersionRequest) (string, error) {
	if err := checkAuthData(req.Algorithm, req.AuthData); err != nil {
		return "", err
	}
	v, err := s.store.CreateBackupVersion(ctx, userID, req.Algorithm, req.AuthData)
	if err != nil {
		return "", err
	}
	return strconv.FormatInt(v, 10), nil
}

// GetBackup handles GET /room_keys/version[/{version}] (version "" = current).
func (s *Service) GetBackup(ctx context.Context, userID, version string) (*BackupVersionInfo, error) {
	var v int64
	if version != "" {
		var ok bool
		if v, ok = parseVersion(version); !ok {
			return nil, mxhttp.NotFound("Unknown backup version")
		}
	}
	b, err := s.store.GetBackupVersion(ctx, userID, v)
	if isNotFound(err) {
		if version == "" {
			return nil, mxhttp.NotFound("No current backup version")
		}
		return nil, mxhttp.NotFound("Unknown backup version")
	}
	if err != nil {
		return nil, err
	}
	return &BackupVersionInfo{Algorithm: b.Algorithm, AuthData: b.AuthData, Count: b.Count,
		Etag: strconv.FormatInt(b.Etag, 10), Version: strconv.FormatInt(b.Version, 10)}, nil
}

// UpdateBackup handles PUT /room_keys/version/{version}: only auth_data may change.
func (s *Service) UpdateBackup(ctx context.Context, userID, version string, req *BackupVersionRequest) error {
	if err := checkAuthData(req.Algorithm, req.AuthData); err != nil {
		return err
	}
	if req.Version != "" && req.Version != version {
		return mxhttp.InvalidParam("version in the body does not match the path")
	}
	v, ok := parseVersion(version)
	if !ok {
		return mxhttp.NotFound("Unknown backup version")
	}
	b, err := s.store.GetBackupVersion(ctx, userID, v)
	if isNotFound(err) {
		return mxhttp.NotFound("Unknown backup version")
	}
	if err != nil {
		return err
	}
	if b.Algorithm != req.Algorithm {
		return mxhttp.InvalidParam("Algorithm does not match")
	}
	err = s.store.UpdateBackupVersion(ctx, userID, v, req.AuthData)
	if isNotFound(err) {
		return mxhttp.NotFound("Unknown backup version")
	}
	return err
}

// DeleteBackup handles DELETE /room_keys/version/{version}.
func (s *Service) DeleteBackup(ctx context.Context, userID, version string) error {
	v, ok := parseVersion(version)
	if !ok {
		return mxhttp.NotFound("Unknown backup version")
	}
	err := s.store.DeleteBackupVersion(ctx, userID, v)
	if isNotFound(err) {
		return mxhttp.NotFound("Unknown backup version")
	}
	return err
}

// backupVersionFor resolves the version query parameter of /room_keys/keys.
func backupVersionFor(version string) (int64, error) {
	if version == "" {
		return 0, mxhttp.MissingParam("The version query parameter is required")
	}
	v, ok := parseVersion(version)
	if !ok {
		return 0, mxhttp.NotFound("Unknown backup version")
	}
	return v, nil
}

func (s *Service) backupError(ctx context.Context, userID string, err error) error {
	var wrong *storage.WrongBackupVersionError
	switch {
	case errors.As(err, &wrong):
		cur := ""
		if wrong.Current > 0 {
			cur = strconv.FormatInt(wrong.Current, 10)
		}
		return mxhttp.WrongRoomKeysVer("Backup version is not the current one").With("current_version", cur)
	case isNotFound(err):
		return mxhttp.NotFound("Unknown backup version")
	}
	return err
}

// PutBackupKeys handles PUT /room_keys/keys[/{roomId}[/{sessionId}]]: rooms
// maps room ID → sessions. Keys are only written to the current version, and
// an existing key is only replaced by a better one.
func (s *Service) PutBackupKeys(ctx context.Context, userID, version string, rooms map[string]RoomKeyBackup) (*BackupKeysResponse, error) {
	v, err := backupVersionFor(version)
	if err != nil {
		return nil, err
	}
	var keys []storage.BackupKey
	for room, rk := range rooms {
		for session, k := range rk.Sessions {
			if len(k.SessionData) > MaxBackupDataBytes {
				return nil, mxhttp.TooLarge("session_data for %s/%s exceeds %d bytes", room, session, MaxBackupDataBytes)
			}
			var obj map[string]json.RawMessage
			if err := json.Unmarshal(k.SessionData, &obj); err != nil || obj == nil {
				return nil, mxhttp.BadJSON("session_data for %s/%s must be a JSON object", room, session)
			}
			keys = append(keys, storage.BackupKey{RoomID: room, SessionID: session, FirstMessageIndex: k.FirstMessageIndex,
				ForwardedCount: k.ForwardedCount, IsVerified: k.IsVerified, SessionData: k.SessionData})
		}
	}
	etag, count, err := s.store.PutBackupKeys(ctx, userID, v, keys)
	if err != nil {
		return nil, s.backupError(ctx, userID, err)
	}
	return &BackupKeysResponse{Count: count, Etag: strconv.FormatInt(etag, 10)}, nil
}

// GetBackupKeys handles GET /room_keys/keys[/{roomId}[/{sessionId}]].
func (s *Service) GetBackupKeys(ctx context.Context, userID, version, roomID, sessionID string) (map[string]RoomKeyBackup, error) {
	v, err := backupVersionFor(version)
	if err != nil {
		return nil, err
	}
	keys, err := s.store.GetBackupKeys(ctx, userID, v, roomID, sessionID)
	if err != nil {
		return nil, s.backupError(ctx, userID, err)
	}
	out := map[string]RoomKeyBackup{}
	for _, k := range keys {
		rk, ok := out[k.RoomID]
		if !ok {
			rk = RoomKeyBackup{Sessions: map[string]KeyBackupData{}}
			out[k.RoomID] = rk
		}
		rk.Sessions[k.SessionID] = KeyBackupData{FirstMessageIndex: k.FirstMessageIndex, ForwardedCount: k.ForwardedCount,
			IsVerified: k.IsVerified, SessionData: k.SessionData}
	}
	return out, nil
}

// DeleteBackupKeys handles DELETE /room_keys/keys[/{roomId}[/{sessionId}]].
func (s *Service) DeleteBackupKeys(ctx context.Context, userID, version, roomID, sessionID string) (*BackupKeysResponse, error) {
	v, err := backupVersionFor(version)
	if err != nil {
		return nil, err
	}
	etag, count, err := s.store.DeleteBackupKeys(ctx, userID, v, roomID, sessionID)
	if err != nil {
		return nil, s.backupError(ctx, userID, err)
	}
	return &BackupKeysResponse{Count: count, Etag: strconv.FormatInt(etag, 10)}, nil
}
