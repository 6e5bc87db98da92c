package keyserver

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
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

// announceDevices queues an m.device_list_update per device of a local user
// (its current keys and display name, or deleted when it has none any more)
// to the other servers sharing a room with the user. The updates of one user
// carry consecutive stream_ids, each naming the previous one sent as
// prev_id, so a receiver can tell when it missed one. The queue persists
// each EDU before returning; a failure is logged (the receivers resync on
// the next update).
func (s *Service) announceDevices(ctx context.Context, userID string, deviceIDs []string) {
	if s.edus == nil || len(deviceIDs) == 0 {
		return
	}
	ctx = context.WithoutCancel(ctx)
	if err := s.sendDeviceUpdates(ctx, userID, deviceIDs); err != nil {
		slog.WarnContext(ctx, "queueing device-list updates failed", "user", userID, "err", err)
	}
}

func (s *Service) sendDeviceUpdates(ctx context.Context, userID string, deviceIDs []string) error {
	servers, err := s.otherServers(ctx, userID)
	if err != nil || len(servers) == 0 {
		return err
	}
	// One user's updates are reserved and queued one batch at a time, so the
	// queue holds them in stream_id order (a receiver would resync otherwise).
	unlock, err := s.userLocks.lock(ctx, userID)
	if err != nil {
		return err
	}
	defer unlock()
	deviceIDs = slices.Clone(deviceIDs)
	sort.Strings(deviceIDs)
	resp := &QueryResponse{DeviceKeys: map[string]map[string]json.RawMessage{}, MasterKeys: map[string]json.RawMessage{},
		SelfSigningKeys: map[string]json.RawMessage{}, UserSigningKeys: map[string]json.RawMessage{}}
	if err := s.queryLocal(ctx, "", []string{userID}, map[string][]string{userID: deviceIDs}, resp); err != nil {
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
	prev, err := s.store.NextDeviceListStreamIDs(ctx, userID, len(deviceIDs))
	if err != nil {
		return err
	}
	for i, dev := range deviceIDs {
		u := deviceListUpdate{UserID: userID, DeviceID: dev, StreamID: prev + int64(i) + 1, PrevID: []int64{}}
		if prev+int64(i) > 0 {
			u.PrevID = []int64{prev + int64(i)}
		}
		keys, hasKeys := resp.DeviceKeys[userID][dev]
		name, named := names[userID][dev]
		switch {
		case hasKeys || named || existing[dev]:
			// A device without keys (yet) is still one of the user's.
			u.Keys, u.DisplayName = keys, name
		default:
			u.Deleted = true
		}
		content, err := json.Marshal(u)
		if err != nil {
			return err
		}
		if err := s.edus.QueueEDU(ctx, servers, "m.device_list_update", content, false); err != nil {
			return fmt.Errorf("queueing m.device_list_update: %w", err)
		}
	}
	return nil
}

// announceSigningKeys queues an m.signing_key_update with a local user's
// master and self-signing keys (never the user-signing key) to the other
// servers sharing a room with them.
func (s *Service) announceSigningKeys(ctx context.Context, userID string) {
	if s.edus == nil {
		return
	}
	ctx = context.WithoutCancel(ctx)
	err := func() error {
		servers, err := s.otherServers(ctx, userID)
		if err != nil || len(servers) == 0 {
			return err
		}
		resp := &QueryResponse{DeviceKeys: map[string]map[string]json.RawMessage{}, MasterKeys: map[string]json.RawMessage{},
			SelfSigningKeys: map[string]json.RawMessage{}, UserSigningKeys: map[string]json.RawMessage{}}
		if err := s.queryLocal(ctx, "", []string{userID}, map[string][]string{userID: {"-"}}, resp); err != nil {
			return err
		}
		content, err := json.Marshal(signingKeyUpdate{UserID: userID, MasterKey: resp.MasterKeys[userID],
			SelfSigningKey: resp.SelfSigningKeys[userID]})
		if err != nil {
			return err
		}
		return s.edus.QueueEDU(ctx, servers, "m.signing_key_update", content, false)
	}()
	if err != nil {
		slog.WarnContext(ctx, "queueing m.signing_key_update failed", "user", userID, "err", err)
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

// announceSignatures tells other servers of the signatures a local user
// added to their own keys: the signed devices' updates, and the master key
// when it was signed (signatures on other users' keys stay private).
func (s *Service) announceSignatures(ctx context.Context, signer string, sigs []storage.KeySignature, masterPub string) {
	var devices []string
	master := false
	for _, sg := range sigs {
		if sg.TargetUserID != signer {
			continue
		}
		if masterPub != "" && sg.TargetKeyID == masterPub {
			master = true
		} else if !slices.Contains(devices, sg.TargetKeyID) {
			devices = append(devices, sg.TargetKeyID)
		}
	}
	s.announceDevices(ctx, signer, devices)
	if master {
		s.announceSigningKeys(ctx, signer)
	}
}

// JoinFollower names the stream cursor of AnnounceOnJoin's follower.
const JoinFollower = "keyserver_joins"

// AnnounceOnJoin is the handler of a stream follower (homeserver): when one
// of our users joins a room that brings servers sharing no other room with
// them, those servers are told the user's devices and signing keys at once
// (as Conduit does; Complement's TestDeviceListsUpdateOverFederationOnRoomJoin)
// instead of waiting for the user's next change. The updates go to every
// server sharing a room with the user, with fresh stream_ids, so no
// receiver's prev_id chain breaks. A join that brings no new server (a
// profile change, a room whose servers already share one) sends nothing.
func (s *Service) AnnounceOnJoin(ctx context.Context, events []*storage.Event) error {
	if s.edus == nil {
		return nil
	}
	for _, ev := range events {
		if ev.Outlier || ev.Type != "m.room.member" || ev.Membership != "join" || ev.StateKey == nil || !s.isLocal(*ev.StateKey) {
			continue
		}
		fresh, err := s.joinBringsServers(ctx, *ev.StateKey, ev.RoomID, ev.StreamPos)
		if err != nil {
			return fmt.Errorf("announcing %s's devices on joining %s: %w", *ev.StateKey, ev.RoomID, err)
		}
		if !fresh {
			continue
		}
		resp := &QueryResponse{DeviceKeys: map[string]map[string]json.RawMessage{}, MasterKeys: map[string]json.RawMessage{},
			SelfSigningKeys: map[string]json.RawMessage{}, UserSigningKeys: map[string]json.RawMessage{}}
		if err := s.queryLocal(ctx, "", []string{*ev.StateKey}, nil, resp); err != nil {
			return err
		}
		existing, err := s.deviceIDs(ctx, *ev.StateKey)
		if err != nil {
			return err
		}
		for dev := range resp.DeviceKeys[*ev.StateKey] {
			existing[dev] = true // a dehydrated device
		}
		s.announceDevices(ctx, *ev.StateKey, slices.Collect(maps.Keys(existing)))
		if len(resp.MasterKeys[*ev.StateKey]) > 0 {
			s.announceSigningKeys(ctx, *ev.StateKey)
		}
	}
	return nil
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

// joinBringsServers reports whether userID's join at pos made a server of
// roomID share a room with them for the first time since.
func (s *Service) joinBringsServers(ctx context.Context, userID, roomID string, pos int64) (bool, error) {
	servers, err := s.store.JoinedServers(ctx, roomID)
	if err != nil {
		return false, err
	}
	for _, server := range servers {
		if server == s.serverName {
			continue
		}
		since, sharing, err := s.store.SharingSince(ctx, userID, server)
		if err != nil {
			return false, err
		}
		if sharing && since >= pos {
			return true, nil
		}
	}
	return false, nil
}
