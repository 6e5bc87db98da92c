// Package keyserver is the server side of end-to-end encryption: device keys,
// one-time and fallback keys, cross-signing keys and signatures, device-list
// tracking, to-device messages, server-side key backup and dehydrated devices
// (MSC3814). It checks what clients upload (signatures included) and stores it
// through Store; /sync reads device-list changes, one-time-key counts and
// to-device messages through the read methods here.
package keyserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/storage"
)

// Store is what the keyserver needs from storage (*storage.DB implements it).
type Store interface {
	UploadKeys(ctx context.Context, up storage.KeyUpload) (bool, error)
	DeviceKeyEd25519(ctx context.Context, userID, deviceID string) (string, error)
	OneTimeKeyCounts(ctx context.Context, userID, deviceID string) (map[string]int, error)
	UnusedFallbackKeyTypes(ctx context.Context, userID, deviceID string) ([]string, error)
	QueryDeviceKeys(ctx context.Context, userIDs []string) (map[string]map[string][]byte, error)
	DeviceDisplayNames(ctx context.Context, userIDs []string) (map[string]map[string]string, error)
	ClaimKeys(ctx context.Context, claims []storage.KeyClaim) ([]storage.ClaimedKey, error)
	DeleteDeviceKeys(ctx context.Context, userID string, deviceIDs []string, pos int64) (bool, error)

	CrossSigningKeys(ctx context.Context, userIDs []string) (map[string]map[string]storage.CrossSigningKey, error)
	SetCrossSigningKeys(ctx context.Context, userID string, keys map[string]storage.CrossSigningKey, pos, now int64) error
	SignaturesOn(ctx context.Context, userIDs []string) ([]storage.KeySignature, error)
	AddSignatures(ctx context.Context, sigs []storage.KeySignature, changedUsers []string, pos int64) error

	MarkDeviceListChanged(ctx context.Context, userID string, pos int64) error
	DeviceListChangedBetween(ctx context.Context, from, to int64) ([]string, error)
	DeviceListChangedFor(ctx context.Context, viewer string, from, to int64) ([]string, error)

	SendToDevice(ctx context.Context, senderUser, senderDevice, txnID string, msgs []storage.ToDeviceMessage,
		pos, now int64, maxPending int) ([]string, bool, error)
	ToDeviceSince(ctx context.Context, userID, deviceID string, after int64, limit int) ([]storage.ToDeviceMessage, error)
	DeleteToDeviceUpTo(ctx context.Context, userID, deviceID string, pos int64) error

	CreateBackupVersion(ctx context.Context, userID, algorithm string, authData []byte) (int64, error)
	GetBackupVersion(ctx context.Context, userID string, version int64) (*storage.BackupVersion, error)
	UpdateBackupVersion(ctx context.Context, userID string, version int64, authData []byte) error
	DeleteBackupVersion(ctx context.Context, userID string, version int64) error
	PutBackupKeys(ctx context.Context, userID string, version int64, keys []storage.BackupKey) (int64, int64, error)
	GetBackupKeys(ctx context.Context, userID string, version int64, roomID, sessionID string) ([]storage.BackupKey, error)
	DeleteBackupKeys(ctx context.Context, userID string, version int64, roomID, sessionID string) (int64, int64, error)

	PutDehydratedDevice(ctx context.Context, userID string, d storage.DehydratedDevice, up storage.KeyUpload) error
	GetDehydratedDevice(ctx context.Context, userID string) (*storage.DehydratedDevice, error)

	RemoteDeviceStore // remotedevices.go
	OutboxStore       // devicelistsend.go
}

// Stream hands out positions in the /sync stream (*storage.Stream).
type Stream interface {
	Allocate() (pos int64, finish func(), err error)
}

// Notifier wakes /sync long-polls (*notifier.Notifier).
type Notifier interface {
	Notify(pos int64, users ...string)
}

// RoomMembership answers which local users share a room with a user: they
// are the ones told about that user's device-list changes.
type RoomMembership interface {
	UsersSharingRoomsWith(ctx context.Context, userID string) ([]string, error)
}

// MembershipChanges is optionally implemented by a RoomMembership: the users
// with whom userID started or stopped sharing any room in (from, to]. /sync
// and /keys/changes report the former as changed and the latter as left.
type MembershipChanges interface {
	SharedUsersChangedBetween(ctx context.Context, userID string, from, to int64) (joined, left []string, err error)
}

// Federation is what the keyserver asks of the federation module for remote
// users. With none configured, remote key queries and claims are reported in
// `failures`. (To-device messages go through EDUs.)
type Federation interface {
	// QueryKeys asks server for device and cross-signing keys (POST /_matrix/federation/v1/user/keys/query).
	QueryKeys(ctx context.Context, server string, deviceKeys map[string][]string) (*QueryResponse, error)
	// ClaimKeys claims one-time keys on server (POST /_matrix/federation/v1/user/keys/claim).
	ClaimKeys(ctx context.Context, server string, oneTimeKeys map[string]map[string]string) (map[string]map[string]map[string]json.RawMessage, error)
	// UserDevices fetches a user's whole device list and cross-signing keys
	// from their server (GET /_matrix/federation/v1/user/devices/{userId}).
	UserDevices(ctx context.Context, server, userID string) (*UserDevicesResponse, error)
}

// EDUSender queues EDUs for other servers in the federation sender's durable
// per-destination queue (federationsender.Queue). Our own name and servers
// the policy refuses are skipped there; ephemeral EDUs may be dropped for a
// destination that is down, the others never are.
type EDUSender interface {
	QueueEDU(ctx context.Context, destinations []string, eduType string, content json.RawMessage, ephemeral bool) error
}

// Service implements the keyserver.
type Service struct {
	store      Store
	stream     Stream
	notifier   Notifier
	members    RoomMembership
	fed        Federation
	edus       EDUSender
	serverName string
	now        func() time.Time
	userLocks  userLocks // remote users' device lists, one update or resync at a time
	resyncs    resyncs   // remote device-list resyncs running in the background

	// MaxPendingToDevice bounds each device's queue of undelivered to-device
	// messages; beyond it the oldest are dropped.
	MaxPendingToDevice int
}

// Default limits.
const (
	DefaultMaxPendingToDevice = 10000
	// MaxToDeviceContentBytes caps one to-device message's content: it must
	// fit a federation EDU (65,536 bytes per transaction EDU).
	MaxToDeviceContentBytes = 64 * 1024
)

// Options are what the keyserver is built from.
type Options struct {
	Store    Store
	Stream   Stream
	Notifier Notifier
	// Members tells who shares rooms with whom (the store's memberships);
	// nil: only the user themself is told of their device-list changes.
	Members RoomMembership
	// Federation reaches remote users' keys and devices; nil: none.
	Federation Federation
	// EDUs sends to-device messages and device-list updates to other
	// servers; nil with federation off.
	EDUs       EDUSender
	ServerName string
}

// New returns a keyserver.
func New(o Options) *Service {
	return &Service{
		store: o.Store, stream: o.Stream, notifier: o.Notifier, members: o.Members, fed: o.Federation, edus: o.EDUs,
		serverName: o.ServerName, now: time.Now, MaxPendingToDevice: DefaultMaxPendingToDevice,
	}
}

func (s *Service) isLocal(userID string) bool {
	_, server, err := id.UserID(userID).Parse()
	return err == nil && server == s.serverName
}

// deviceListChanged tells every local user who shares a room with userID
// (and userID) that its device list changed at pos.
func (s *Service) deviceListChanged(ctx context.Context, userID string, pos int64) {
	users := []string{userID}
	if s.members != nil {
		shared, err := s.members.UsersSharingRoomsWith(ctx, userID)
		if err != nil {
			// The change is stored; clients also find it on their next sync.
			slog.WarnContext(ctx, "device-list fan-out failed", "user", userID, "err", err)
		}
		users = append(users, shared...)
	}
	s.notifier.Notify(pos, users...)
}

// DeviceListChanges is what /sync and /keys/changes report to userID for the
// stream range (from, to]: users sharing a room with userID (or userID
// itself) whose devices or cross-signing keys changed, users whose master key
// userID signed (their keys changed for userID alone, as Synapse reports
// them), and users userID no longer shares a room with (when the membership
// source can tell).
func (s *Service) DeviceListChanges(ctx context.Context, userID string, from, to int64) (changed, left []string, err error) {
	all, err := s.store.DeviceListChangedBetween(ctx, from, to)
	if err != nil {
		return nil, nil, err
	}
	signed, err := s.store.DeviceListChangedFor(ctx, userID, from, to)
	if err != nil {
		return nil, nil, err
	}
	var joined, gone []string
	if mc, ok := s.members.(MembershipChanges); ok {
		if joined, gone, err = mc.SharedUsersChangedBetween(ctx, userID, from, to); err != nil {
			return nil, nil, fmt.Errorf("reading membership changes: %w", err)
		}
	}
	changed, left = []string{}, []string{}
	// Who shares a room with userID now is needed only to filter changes;
	// most incremental syncs have none and skip the query (a hot path).
	shared := map[string]bool{userID: true}
	if s.members != nil && (len(all) > 0 || len(gone) > 0) {
		users, err := s.members.UsersSharingRoomsWith(ctx, userID)
		if err != nil {
			return nil, nil, fmt.Errorf("reading shared rooms: %w", err)
		}
		for _, u := range users {
			shared[u] = true
		}
	}
	seen := map[string]bool{}
	for _, u := range all {
		if shared[u] && !seen[u] {
			seen[u] = true
			changed = append(changed, u)
		}
	}
	for _, u := range slices.Concat(joined, signed) {
		if !seen[u] {
			seen[u] = true
			changed = append(changed, u)
		}
	}
	for _, u := range gone {
		if !shared[u] {
			left = append(left, u)
		}
	}
	return changed, left, nil
}

// OneTimeKeyCounts is a device's unclaimed one-time keys per algorithm, for
// /keys/upload and /sync. signed_curve25519 is always present.
func (s *Service) OneTimeKeyCounts(ctx context.Context, userID, deviceID string) (map[string]int, error) {
	counts, err := s.store.OneTimeKeyCounts(ctx, userID, deviceID)
	if err != nil {
		return nil, err
	}
	if _, ok := counts["signed_curve25519"]; !ok {
		counts["signed_curve25519"] = 0
	}
	return counts, nil
}

// UnusedFallbackKeyTypes is /sync's device_unused_fallback_key_types.
func (s *Service) UnusedFallbackKeyTypes(ctx context.Context, userID, deviceID string) ([]string, error) {
	return s.store.UnusedFallbackKeyTypes(ctx, userID, deviceID)
}

// DeleteDevices removes the keyserver's data for devices of a local user
// (keys, one-time and fallback keys, signatures on them, pending to-device
// messages) and announces the device-list change. The accounts service calls
// it when devices are deleted or the user logs out everywhere.
func (s *Service) DeleteDevices(ctx context.Context, userID string, deviceIDs []string) error {
	if len(deviceIDs) == 0 {
		return nil
	}
	pos, finish, err := s.stream.Allocate()
	if err != nil {
		return err
	}
	changed, err := s.store.DeleteDeviceKeys(ctx, userID, deviceIDs, pos)
	finish()
	if err != nil {
		return fmt.Errorf("deleting keys of %s's devices: %w", userID, err)
	}
	if changed {
		s.deviceListChanged(ctx, userID, pos)
		s.announce(ctx, userID)
	}
	return nil
}

// DeviceRenamed announces a local device's new display name, which is part
// of the device list: local users sharing a room see the user in
// device_lists.changed, other servers get an m.device_list_update.
func (s *Service) DeviceRenamed(ctx context.Context, userID, deviceID string) error {
	pos, finish, err := s.stream.Allocate()
	if err != nil {
		return err
	}
	err = s.store.MarkDeviceRenamed(ctx, userID, deviceID, pos)
	finish()
	if err != nil {
		return fmt.Errorf("recording %s's renamed device: %w", userID, err)
	}
	s.deviceListChanged(ctx, userID, pos)
	s.announce(ctx, userID)
	return nil
}

// RemoteDeviceListUpdated records that a remote user's device list changed
// (an inbound m.device_list_update or m.signing_key_update EDU) and tells the
// local users sharing rooms with them.
func (s *Service) RemoteDeviceListUpdated(ctx context.Context, userID string) error {
	pos, finish, err := s.stream.Allocate()
	if err != nil {
		return err
	}
	err = s.store.MarkDeviceListChanged(ctx, userID, pos)
	finish()
	if err != nil {
		return err
	}
	s.deviceListChanged(ctx, userID, pos)
	return nil
}

func isNotFound(err error) bool { return errors.Is(err, storage.ErrNotFound) }
