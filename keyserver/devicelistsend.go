package keyserver

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"sort"

	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/internal/mxhttp"
	"github.com/myelin-chat/myelin/storage"
)

// Our users' device lists as other servers see them: the m.device_list_update
// and m.signing_key_update EDUs we send when they change, and the
// federation endpoints' reads (GET /user/devices, POST /user/keys/query and
// /user/keys/claim, served by federationapi).

// otherServers lists the servers other than ours sharing a room with a
// local user: where their device-list changes go.
func (s *Service) otherServers(ctx context.Context, userID string) ([]string, error) {
	servers, err := s.store.ServersSharingRoomsWith(ctx, userID)
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(servers, func(sv string) bool { return sv == s.serverName }), nil
}

// OutboxStore is the keyserver's outbox of our users' device-list
// announcements (*storage.DB): the store methods that record a change of a
// local user's devices or signing keys also record, in the same
// transaction, what other servers must be told; announce queues it and
// clears it, and AnnouncePending does it on startup for what a crash left.
type OutboxStore interface {
	MarkDeviceRenamed(ctx context.Context, userID, deviceID string, pos int64) error
	NumberDeviceListAnnouncements(ctx context.Context, userID string) ([]storage.PendingAnnouncement, error)
	DeviceListAnnounced(ctx context.Context, userID string, p storage.PendingAnnouncement) error
	DropDeviceListAnnouncements(ctx context.Context, userID string) error
	UsersWithPendingAnnouncements(ctx context.Context, after string, limit int) ([]string, error)
}

// announce queues the pending device-list announcements of a local user
// (m.device_list_update per device: its current keys and display name, or
// deleted when it has none any more; m.signing_key_update for the signing
// keys) to the other servers sharing a room with them, clearing each from
// the outbox once queued. The queue persists each EDU before returning and
// only writes the store, so the client request never waits on another
// server. A failure is logged: the updates stay pending and go on the
// user's next change or the next startup.
func (s *Service) announce(ctx context.Context, userID string) {
	ctx = context.WithoutCancel(ctx)
	if err := s.sendPending(ctx, userID); err != nil {
		slog.WarnContext(ctx, "queueing device-list updates failed; they stay pending", "user", userID, "err", err)
	}
}

// sendPending announces userID's outbox. The updates of one user carry
// consecutive stream_ids, numbered in the store before they are queued and
// each naming the previous as prev_id; one user's are numbered and queued
// one batch at a time (the queue holds them in stream_id order: a receiver
// would resync otherwise). An update numbered before a crash is re-sent
// with the same stream_id (receivers ignore a repeated one), never
// renumbered, so no receiver sees a gap that is not one.
func (s *Service) sendPending(ctx context.Context, userID string) error {
	if s.edus == nil { // federation off: nobody to tell
		return s.store.DropDeviceListAnnouncements(ctx, userID)
	}
	unlock, err := s.userLocks.lock(ctx, userID)
	if err != nil {
		return err
	}
	defer unlock()
	servers, err := s.otherServers(ctx, userID)
	if err != nil {
		return err
	}
	if len(servers) == 0 { // a later join announces the devices there
		return s.store.DropDeviceListAnnouncements(ctx, userID)
	}
	pending, err := s.store.NumberDeviceListAnnouncements(ctx, userID)
	if err != nil || len(pending) == 0 {
		return err
	}
	resp := &QueryResponse{DeviceKeys: map[string]map[string]json.RawMessage{}, MasterKeys: map[string]json.RawMessage{},
		SelfSigningKeys: map[string]json.RawMessage{}, UserSigningKeys: map[string]json.RawMessage{}}
	devices := []string{"-"} // none: the signing keys alone
	for _, p := range pending {
		if p.DeviceID != storage.SigningKeysOutbox {
			devices = append(devices, p.DeviceID)
		}
	}
	if err := s.queryLocal(ctx, "", []string{userID}, map[string][]string{userID: devices}, resp); err != nil {
		return err
	}
	names, err := s.store.DeviceDisplayNames(ctx, []string{userID})
	if err != nil {
		return err
	}
	existing, err := s.deviceIDs(ctx, userID)
	if err != nil {
		return err
	}
	for _, p := range pending {
		eduType, content, err := updateContent(userID, p, resp, names[userID], existing)
		if err != nil {
			return err
		}
		if err := s.edus.QueueEDU(ctx, servers, eduType, content, false); err != nil {
			return fmt.Errorf("queueing %s: %w", eduType, err)
		}
		if err := s.store.DeviceListAnnounced(ctx, userID, p); err != nil {
			return err
		}
	}
	return nil
}

// updateContent is the EDU announcing one outbox row.
func updateContent(userID string, p storage.PendingAnnouncement, resp *QueryResponse, names map[string]string,
	existing map[string]bool) (string, json.RawMessage, error) {
	if p.DeviceID == storage.SigningKeysOutbox {
		content, err := json.Marshal(signingKeyUpdate{UserID: userID, MasterKey: resp.MasterKeys[userID],
			SelfSigningKey: resp.SelfSigningKeys[userID]})
		return "m.signing_key_update", content, err
	}
	u := deviceListUpdate{UserID: userID, DeviceID: p.DeviceID, StreamID: p.StreamID, PrevID: []int64{}}
	if p.StreamID > 1 {
		u.PrevID = []int64{p.StreamID - 1}
	}
	keys, hasKeys := resp.DeviceKeys[userID][p.DeviceID]
	name, named := names[p.DeviceID]
	if hasKeys || named || existing[p.DeviceID] {
		// A device without keys (yet) is still one of the user's.
		u.Keys, u.DisplayName = keys, name
	} else {
		u.Deleted = true
	}
	content, err := json.Marshal(u)
	return "m.device_list_update", content, err
}

// pendingPage is how many users AnnouncePending reads at a time.
const pendingPage = 100

// AnnouncePending announces every local user's pending device-list updates:
// those a crash or a failed queue left between storing a change and
// queueing its EDUs. homeserver.New calls it once on startup, before
// serving. A user whose updates fail to queue is logged and skipped (they
// go on the user's next change or the next startup).
func (s *Service) AnnouncePending(ctx context.Context) error {
	after, n := "", 0
	for {
		users, err := s.store.UsersWithPendingAnnouncements(ctx, after, pendingPage)
		if err != nil {
			return err
		}
		for _, u := range users {
			s.announce(ctx, u)
		}
		n += len(users)
		if len(users) < pendingPage {
			if n > 0 {
				slog.InfoContext(ctx, "announced pending device-list updates", "users", n)
			}
			return nil
		}
		after = users[len(users)-1]
	}
}

// Bounds on one federation request for our users' keys.
const (
	MaxFederationQueryUsers   = 1000 // users in one /user/keys/query or /user/keys/claim
	MaxFederationQueryDevices = 1000 // devices named per user
)

// checkLocalUsers refuses users that are not ours (a server answers for its
// own users only, as Synapse does: 400) and requests beyond the bounds.
func (s *Service) checkLocalUsers(users []string, devicesOf func(u string) int) error {
	if len(users) > MaxFederationQueryUsers {
		return mxhttp.TooLarge("At most %d users per request", MaxFederationQueryUsers)
	}
	for _, u := range users {
		if _, _, err := id.UserID(u).ParseAndValidateRelaxed(); err != nil || len(u) > 255 {
			return mxhttp.InvalidParam("%q is not a valid user ID", u)
		}
		if !s.isLocal(u) {
			return mxhttp.InvalidParam("User %s is not a user of this server", u)
		}
		if devicesOf(u) > MaxFederationQueryDevices {
			return mxhttp.TooLarge("At most %d devices per user", MaxFederationQueryDevices)
		}
	}
	return nil
}

// LocalUserDevices is GET /_matrix/federation/v1/user/devices/{userId} for
// one of our users: every device (with its keys and display name if any), the stream_id
// of the last update sent for them, their master and self-signing keys.
func (s *Service) LocalUserDevices(ctx context.Context, userID string) (*UserDevicesResponse, error) {
	if err := s.checkLocalUsers([]string{userID}, func(string) int { return 0 }); err != nil {
		return nil, err
	}
	resp := &QueryResponse{DeviceKeys: map[string]map[string]json.RawMessage{}, MasterKeys: map[string]json.RawMessage{},
		SelfSigningKeys: map[string]json.RawMessage{}, UserSigningKeys: map[string]json.RawMessage{}}
	if err := s.queryLocal(ctx, "", []string{userID}, nil, resp); err != nil {
		return nil, err
	}
	names, err := s.store.DeviceDisplayNames(ctx, []string{userID})
	if err != nil {
		return nil, err
	}
	sid, err := s.store.DeviceListStreamID(ctx, userID)
	if err != nil {
		return nil, err
	}
	out := &UserDevicesResponse{UserID: userID, StreamID: sid, Devices: []UserDevice{},
		MasterKey: resp.MasterKeys[userID], SelfSigningKey: resp.SelfSigningKeys[userID]}
	seen := map[string]bool{}
	for dev, keys := range resp.DeviceKeys[userID] {
		seen[dev] = true
		out.Devices = append(out.Devices, UserDevice{DeviceID: dev, DisplayName: names[userID][dev], Keys: keys})
	}
	for dev, name := range names[userID] {
		if !seen[dev] {
			seen[dev] = true
			out.Devices = append(out.Devices, UserDevice{DeviceID: dev, DisplayName: name})
		}
	}
	existing, err := s.deviceIDs(ctx, userID)
	if err != nil {
		return nil, err
	}
	for dev := range existing { // devices with neither keys nor a name yet
		if !seen[dev] {
			out.Devices = append(out.Devices, UserDevice{DeviceID: dev})
		}
	}
	sort.Slice(out.Devices, func(i, j int) bool { return out.Devices[i].DeviceID < out.Devices[j].DeviceID })
	return out, nil
}

// FederationQuery is POST /_matrix/federation/v1/user/keys/query: our users'
// device keys, master and self-signing keys (never user-signing keys), with
// the signatures their owners made.
func (s *Service) FederationQuery(ctx context.Context, deviceKeys map[string][]string) (*QueryResponse, error) {
	users := make([]string, 0, len(deviceKeys))
	for u := range deviceKeys {
		users = append(users, u)
	}
	sort.Strings(users)
	if err := s.checkLocalUsers(users, func(u string) int { return len(deviceKeys[u]) }); err != nil {
		return nil, err
	}
	resp := &QueryResponse{DeviceKeys: map[string]map[string]json.RawMessage{}, MasterKeys: map[string]json.RawMessage{},
		SelfSigningKeys: map[string]json.RawMessage{}, UserSigningKeys: map[string]json.RawMessage{}}
	if err := s.queryLocal(ctx, "", users, deviceKeys, resp); err != nil {
		return nil, err
	}
	return resp, nil
}

// FederationClaim is POST /_matrix/federation/v1/user/keys/claim: a key per
// device of our users, one-time first then fallback, each handed out once
// (the same atomic claim as /keys/claim).
func (s *Service) FederationClaim(ctx context.Context, oneTimeKeys map[string]map[string]string) (map[string]map[string]map[string]json.RawMessage, error) {
	users := make([]string, 0, len(oneTimeKeys))
	for u := range oneTimeKeys {
		users = append(users, u)
	}
	if err := s.checkLocalUsers(users, func(u string) int { return len(oneTimeKeys[u]) }); err != nil {
		return nil, err
	}
	resp, err := s.Claim(ctx, &ClaimRequest{OneTimeKeys: oneTimeKeys})
	if err != nil {
		return nil, err
	}
	return resp.OneTimeKeys, nil
}

// deviceIDs is the set of a local user's devices (with keys or not).
func (s *Service) deviceIDs(ctx context.Context, userID string) (map[string]bool, error) {
	devs, err := s.store.ListDevices(ctx, userID)
	if err != nil {
		return nil, fmt.Errorf("listing %s's devices: %w", userID, err)
	}
	out := make(map[string]bool, len(devs))
	for _, d := range devs {
		out[d.DeviceID] = true
	}
	return out, nil
}
