package keyserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/internal/mxhttp"
	"github.com/myelin-chat/myelin/storage"
)

// Remote users' device lists. The device keys, display names and
// cross-signing keys (master, self_signing) of remote users who share a room
// with one of our users (tracked users) are cached with the stream_id of the
// last m.device_list_update applied. Their server's EDUs keep the cache
// current; a gap, a loop or an unknown stream_id makes us resync the whole
// list (GET /user/devices). /keys/query answers tracked users from a fresh
// cache and asks their server otherwise (filling the cache).

// RemoteDeviceStore is the storage of remote device lists and of the
// stream_ids of the updates we send (*storage.DB).
type RemoteDeviceStore interface {
	RemoteDeviceLists(ctx context.Context, userIDs []string) (map[string]*storage.RemoteDeviceList, error)
	ReplaceRemoteDeviceList(ctx context.Context, l storage.RemoteDeviceList, now int64) error
	ReplaceRemoteDeviceLists(ctx context.Context, lists []storage.RemoteDeviceList, now int64) error
	ApplyRemoteDeviceUpdate(ctx context.Context, u storage.RemoteDeviceUpdate, now int64) error
	SetRemoteCrossSigningKeys(ctx context.Context, userID string, keys map[string][]byte) error
	MarkRemoteDeviceListStale(ctx context.Context, userID string, now int64) error
	DropRemoteDeviceList(ctx context.Context, userID string) error
	NextDeviceListStreamIDs(ctx context.Context, userID string, n int) (prev int64, err error)
	DeviceListStreamID(ctx context.Context, userID string) (int64, error)
	ServersSharingRoomsWith(ctx context.Context, userID string) ([]string, error)
	SharingSince(ctx context.Context, userID, server string) (since int64, sharing bool, err error)
	SharingSinceMany(ctx context.Context, userIDs []string, server string) (map[string]int64, error)
	JoinedServers(ctx context.Context, roomID string) ([]string, error)
	ListDevices(ctx context.Context, userID string) ([]storage.Device, error)
}

// UserDevicesResponse is the answer to GET /_matrix/federation/v1/user/devices/{userId}.
type UserDevicesResponse struct {
	UserID         string          `json:"user_id"`
	StreamID       int64           `json:"stream_id"`
	Devices        []UserDevice    `json:"devices"`
	MasterKey      json.RawMessage `json:"master_key,omitempty"`
	SelfSigningKey json.RawMessage `json:"self_signing_key,omitempty"`
}

// UserDevice is one device of a UserDevicesResponse.
type UserDevice struct {
	DeviceID    string          `json:"device_id"`
	DisplayName string          `json:"device_display_name,omitempty"`
	Keys        json.RawMessage `json:"keys,omitempty"`
}

// Bounds on what a remote server may tell us about one user.
const (
	// MaxRemoteDevices caps a remote user's device list (Synapse keeps at
	// most 1000 devices per user too); beyond it the list is refused.
	MaxRemoteDevices = 1000
	maxPrevIDs       = 100
	maxDisplayName   = 1000 // bytes of a device display name
	// resyncTimeout bounds one GET /user/devices.
	resyncTimeout = 10 * time.Second
	// maxResyncs bounds the resyncs running at once; beyond it a list stays
	// stale (resynced on a later update; queries ask the user's server).
	maxResyncs = 8
)

// resyncs are the resyncs running in the background: an inbound EDU never
// waits for one (EDUs are handled inside the sender's transaction).
type resyncs struct {
	mu      sync.Mutex
	running map[string]bool
	wg      sync.WaitGroup
}

// start runs f for userID in the background unless one is running for that
// user or maxResyncs are; it reports whether it started.
func (r *resyncs) start(userID string, f func()) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.running == nil {
		r.running = map[string]bool{}
	}
	if r.running[userID] || len(r.running) >= maxResyncs {
		return false
	}
	r.running[userID] = true
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer func() {
			r.mu.Lock()
			delete(r.running, userID)
			r.mu.Unlock()
		}()
		f()
	}()
	return true
}

// userLocks serializes the updates and resyncs of each remote user's list.
type userLocks struct {
	mu sync.Mutex
	m  map[string]*userLock
}

type userLock struct {
	ch   chan struct{}
	refs int
}

// lock takes userID's lock, waiting at most until ctx is done.
func (l *userLocks) lock(ctx context.Context, userID string) (unlock func(), err error) {
	l.mu.Lock()
	if l.m == nil {
		l.m = map[string]*userLock{}
	}
	e := l.m[userID]
	if e == nil {
		e = &userLock{ch: make(chan struct{}, 1)}
		l.m[userID] = e
	}
	e.refs++
	l.mu.Unlock()
	release := func() {
		l.mu.Lock()
		if e.refs--; e.refs == 0 {
			delete(l.m, userID)
		}
		l.mu.Unlock()
	}
	select {
	case e.ch <- struct{}{}:
		return func() { <-e.ch; release() }, nil
	case <-ctx.Done():
		release()
		return nil, ctx.Err()
	}
}

// tracking is whether a remote user shares a room with a local user (only
// their device lists are kept) and since when without interruption: a list
// fetched before then may have missed updates.
type tracking struct {
	tracked bool
	since   int64
}

func (s *Service) tracking(ctx context.Context, userID string) (tracking, error) {
	since, sharing, err := s.store.SharingSince(ctx, userID, s.serverName)
	return tracking{tracked: sharing, since: since}, err
}

// lockedList is what an inbound update of a remote user's list starts from:
// whether we track them (if not, their cached list is dropped and unlock is
// nil: nothing to apply), and their cached list read under their lock,
// which the caller releases with unlock.
func (s *Service) lockedList(ctx context.Context, userID string) (tr tracking, l *storage.RemoteDeviceList, unlock func(), err error) {
	if tr, err = s.tracking(ctx, userID); err != nil {
		return tr, nil, nil, err
	}
	if !tr.tracked {
		return tr, nil, nil, s.store.DropRemoteDeviceList(ctx, userID)
	}
	if unlock, err = s.userLocks.lock(ctx, userID); err != nil {
		return tr, nil, nil, err
	}
	lists, err := s.store.RemoteDeviceLists(ctx, []string{userID})
	if err != nil {
		unlock()
		return tr, nil, nil, err
	}
	return tr, lists[userID], unlock, nil
}

// trackingMany is tracking for many users in one store query.
func (s *Service) trackingMany(ctx context.Context, users []string) (map[string]tracking, error) {
	since, err := s.store.SharingSinceMany(ctx, users, s.serverName)
	if err != nil {
		return nil, err
	}
	out := make(map[string]tracking, len(users))
	for _, u := range users {
		pos, ok := since[u]
		out[u] = tracking{tracked: ok, since: pos}
	}
	return out, nil
}

// usable reports whether a cached list can be relied on: fresh, and fetched
// while the user shared a room with us.
func (tr tracking) usable(l *storage.RemoteDeviceList) bool {
	return l != nil && !l.Stale && l.FilledPos >= tr.since
}

// validRemoteDevice checks a remote device's keys (user, device, shape and
// self-signature) and returns them without their unsigned part.
func validRemoteDevice(raw json.RawMessage, userID, deviceID string) ([]byte, error) {
	dk, err := checkDeviceKeys(raw, userID, deviceID)
	if err != nil {
		return nil, err
	}
	return dk.KeyJSON, nil
}

// validRemoteCrossSigning checks a remote user's master and self-signing
// keys: owner, usage, and the self-signing key signed by the master key
// (master: the one given, else the cached one). It returns them canonical
// by type; a key that fails is an error.
func validRemoteCrossSigning(userID string, master, selfSigning json.RawMessage, cachedMaster []byte) (map[string][]byte, error) {
	out := map[string][]byte{}
	var masterPub string
	if present(master) {
		pub, err := parseCrossSigningKey(master, userID, "master")
		if err != nil {
			return nil, err
		}
		c, err := withoutUnsigned(master)
		if err != nil {
			return nil, err
		}
		masterPub, out["master"] = pub, c
	} else if cachedMaster != nil {
		pub, err := parseCrossSigningKey(cachedMaster, userID, "master")
		if err != nil {
			return nil, err
		}
		masterPub = pub
	}
	if present(selfSigning) {
		if _, err := parseCrossSigningKey(selfSigning, userID, "self_signing"); err != nil {
			return nil, err
		}
		if masterPub == "" {
			return nil, mxhttp.MissingParam("self_signing key without a master key")
		}
		if err := verifySignature(selfSigning, userID, masterPub, masterPub); err != nil {
			return nil, mxhttp.InvalidSignature("self_signing key is not signed by the master key: %v", err)
		}
		c, err := withoutUnsigned(selfSigning)
		if err != nil {
			return nil, err
		}
		out["self_signing"] = c
	}
	return out, nil
}

// deviceListUpdate is the content of an m.device_list_update EDU.
type deviceListUpdate struct {
	UserID      string          `json:"user_id"`
	DeviceID    string          `json:"device_id"`
	DisplayName string          `json:"device_display_name,omitempty"`
	StreamID    int64           `json:"stream_id"`
	PrevID      []int64         `json:"prev_id,omitempty"`
	Deleted     bool            `json:"deleted,omitempty"`
	Keys        json.RawMessage `json:"keys,omitempty"`
}

// senderUser checks a remote user ID named by an EDU from origin: valid and
// of origin's server (a server speaks for its own users only).
func senderUser(userID, origin string) error {
	_, server, err := id.UserID(userID).ParseAndValidateRelaxed()
	if err != nil || len(userID) > 255 {
		return fmt.Errorf("invalid user ID %q", userID)
	}
	if server != origin {
		return fmt.Errorf("%s may not speak for %s", origin, userID)
	}
	return nil
}

// ReceiveDeviceListUpdate handles an inbound m.device_list_update EDU
// (ingest.EDUHandler). Updates of users nobody here shares a room with are
// ignored (and their cache dropped), as are updates at or below the cached
// list's stream_id (replays). An update follows the cached list when
// every prev_id is an update we applied; it is then applied in order. A gap
// (a prev_id we never saw), a loop, or a list we do not know the stream_id
// of makes us resync the whole list from the user's server; a resync that
// fails leaves the list stale, resynced on the next update or answered by
// asking their server on the next query. Local users sharing a room with
// the user then see them in device_lists.changed.
func (s *Service) ReceiveDeviceListUpdate(ctx context.Context, origin string, content json.RawMessage) error {
	var u deviceListUpdate
	if err := json.Unmarshal(content, &u); err != nil {
		return fmt.Errorf("m.device_list_update: %w", err)
	}
	if err := senderUser(u.UserID, origin); err != nil {
		return fmt.Errorf("m.device_list_update: %w", err)
	}
	if u.DeviceID == "" || len(u.DeviceID) > 255 || len(u.PrevID) > maxPrevIDs || len(u.DisplayName) > maxDisplayName {
		return fmt.Errorf("m.device_list_update for %s: invalid device_id, prev_id or device_display_name", u.UserID)
	}
	if s.isLocal(u.UserID) {
		return fmt.Errorf("m.device_list_update for our own user %s", u.UserID)
	}
	tr, l, unlock, err := s.lockedList(ctx, u.UserID)
	if err != nil || unlock == nil {
		return err
	}
	defer unlock()
	switch {
	case !tr.usable(l) || l.StreamID < 0:
		return s.resyncAndReport(ctx, u.UserID, "no usable cached list")
	case l.Seen[u.StreamID]:
		return nil // already applied
	case u.StreamID <= l.StreamID:
		return nil // older than the list we hold, which reflects it: a replay must not undo later changes
	case slices.Contains(u.PrevID, u.StreamID):
		return s.resyncAndReport(ctx, u.UserID, "prev_id names the update itself")
	}
	for _, prev := range u.PrevID {
		if !l.Seen[prev] {
			return s.resyncAndReport(ctx, u.UserID, fmt.Sprintf("missed update %d", prev))
		}
	}
	up := storage.RemoteDeviceUpdate{UserID: u.UserID, DeviceID: u.DeviceID, StreamID: u.StreamID, Deleted: u.Deleted,
		Device: storage.RemoteDevice{DisplayName: u.DisplayName}}
	if !u.Deleted && present(u.Keys) {
		keys, err := validRemoteDevice(u.Keys, u.UserID, u.DeviceID)
		if err != nil {
			return s.resyncAndReport(ctx, u.UserID, fmt.Sprintf("invalid keys in update: %v", err))
		}
		up.Device.KeyJSON = keys
	}
	if !u.Deleted && len(l.Devices) >= MaxRemoteDevices {
		if _, known := l.Devices[u.DeviceID]; !known {
			return fmt.Errorf("m.device_list_update: %s has more than %d devices", u.UserID, MaxRemoteDevices)
		}
	}
	if err := s.store.ApplyRemoteDeviceUpdate(ctx, up, s.now().UnixMilli()); err != nil {
		return err
	}
	return s.RemoteDeviceListUpdated(ctx, u.UserID)
}

// resyncAndReport marks a user's list stale (the caller holds the user's
// lock) and resyncs it in the background, then reports the change; why is
// logged. Updates arriving meanwhile find the list stale and are folded
// into the resync (or cause another one).
func (s *Service) resyncAndReport(ctx context.Context, userID, why string) error {
	slog.DebugContext(ctx, "resyncing a remote device list", "user", userID, "why", why)
	if err := s.store.MarkRemoteDeviceListStale(ctx, userID, s.now().UnixMilli()); err != nil {
		return err
	}
	ctx = context.WithoutCancel(ctx)
	s.resyncs.start(userID, func() {
		err := s.resync(ctx, userID)
		if err == nil {
			err = s.RemoteDeviceListUpdated(ctx, userID)
		}
		if err != nil {
			slog.InfoContext(ctx, "remote device-list resync failed; the list stays stale", "user", userID, "err", err)
		}
	})
	return nil
}

// resync replaces a remote user's cached list with their server's
// (GET /user/devices), within resyncTimeout. On failure the list is stale.
// The user's lock is held only to store the answer: updates arriving during
// the request find the list stale and are left to the resync.
func (s *Service) resync(ctx context.Context, userID string) error {
	fail := func(err error) error {
		if mErr := s.store.MarkRemoteDeviceListStale(context.WithoutCancel(ctx), userID, s.now().UnixMilli()); mErr != nil {
			return errors.Join(err, mErr)
		}
		return fmt.Errorf("resyncing %s's device list: %w", userID, err)
	}
	if s.fed == nil {
		return fail(errors.New("federation is off"))
	}
	rctx, cancel := context.WithTimeout(ctx, resyncTimeout)
	defer cancel()
	server := id.UserID(userID).Homeserver()
	resp, err := s.fed.UserDevices(rctx, server, userID)
	if err != nil {
		return fail(err)
	}
	l, err := remoteListFrom(userID, resp)
	if err != nil {
		return fail(err)
	}
	unlock, err := s.userLocks.lock(rctx, userID)
	if err != nil {
		return fail(err)
	}
	defer unlock()
	if err := s.store.ReplaceRemoteDeviceList(ctx, *l, s.now().UnixMilli()); err != nil {
		return fail(err)
	}
	return nil
}

// remoteListFrom checks a GET /user/devices answer for userID: the user,
// a non-negative stream_id, at most MaxRemoteDevices devices, each device's
// keys (a device whose keys fail is left out), the cross-signing keys (left
// out when they fail).
func remoteListFrom(userID string, resp *UserDevicesResponse) (*storage.RemoteDeviceList, error) {
	if resp == nil || resp.UserID != userID {
		return nil, fmt.Errorf("the answer is not about %s", userID)
	}
	if resp.StreamID < 0 {
		return nil, fmt.Errorf("negative stream_id %d", resp.StreamID)
	}
	if len(resp.Devices) > MaxRemoteDevices {
		return nil, fmt.Errorf("%d devices, at most %d accepted", len(resp.Devices), MaxRemoteDevices)
	}
	l := &storage.RemoteDeviceList{UserID: userID, StreamID: resp.StreamID, Devices: map[string]storage.RemoteDevice{}}
	for _, d := range resp.Devices {
		if d.DeviceID == "" || len(d.DeviceID) > 255 || len(d.DisplayName) > maxDisplayName {
			continue
		}
		dev := storage.RemoteDevice{DisplayName: d.DisplayName}
		if present(d.Keys) {
			keys, err := validRemoteDevice(d.Keys, userID, d.DeviceID)
			if err != nil {
				continue
			}
			dev.KeyJSON = keys
		}
		l.Devices[d.DeviceID] = dev
	}
	cross, err := validRemoteCrossSigning(userID, resp.MasterKey, resp.SelfSigningKey, nil)
	if err != nil {
		cross = nil
	}
	l.CrossSigning = cross
	return l, nil
}

// signingKeyUpdate is the content of an m.signing_key_update EDU.
type signingKeyUpdate struct {
	UserID         string          `json:"user_id"`
	MasterKey      json.RawMessage `json:"master_key,omitempty"`
	SelfSigningKey json.RawMessage `json:"self_signing_key,omitempty"`
}

// ReceiveSigningKeyUpdate handles an inbound m.signing_key_update EDU
// (ingest.EDUHandler): the keys of a tracked user of origin's server are
// checked (usage, user_id, the self-signing key signed by the master key)
// and cached, and the change is reported to local users.
func (s *Service) ReceiveSigningKeyUpdate(ctx context.Context, origin string, content json.RawMessage) error {
	var u signingKeyUpdate
	if err := json.Unmarshal(content, &u); err != nil {
		return fmt.Errorf("m.signing_key_update: %w", err)
	}
	if err := senderUser(u.UserID, origin); err != nil {
		return fmt.Errorf("m.signing_key_update: %w", err)
	}
	if s.isLocal(u.UserID) {
		return fmt.Errorf("m.signing_key_update for our own user %s", u.UserID)
	}
	tr, l, unlock, err := s.lockedList(ctx, u.UserID)
	if err != nil || unlock == nil {
		return err
	}
	defer unlock()
	if !tr.usable(l) {
		return s.resyncAndReport(ctx, u.UserID, "signing key update for a list we do not hold")
	}
	keys, err := validRemoteCrossSigning(u.UserID, u.MasterKey, u.SelfSigningKey, l.CrossSigning["master"])
	if err != nil {
		return fmt.Errorf("m.signing_key_update for %s: %w", u.UserID, err)
	}
	if len(keys) == 0 {
		return nil
	}
	if err := s.store.SetRemoteCrossSigningKeys(ctx, u.UserID, keys); err != nil {
		return err
	}
	return s.RemoteDeviceListUpdated(ctx, u.UserID)
}

// queryCached answers the tracked users of remote from fresh cached lists,
// removing them from remote; it returns the tracked users still to ask.
func (s *Service) queryCached(ctx context.Context, remote map[string][]string, wanted map[string][]string, resp *QueryResponse) (map[string]bool, error) {
	var users []string
	for _, us := range remote {
		users = append(users, us...)
	}
	if len(users) == 0 || s.store == nil {
		return nil, nil
	}
	lists, err := s.store.RemoteDeviceLists(ctx, users)
	if err != nil {
		return nil, err
	}
	tracked, err := s.trackingMany(ctx, users)
	if err != nil {
		return nil, err
	}
	toFill := map[string]bool{}
	for server, us := range remote {
		var ask []string
		for _, u := range us {
			tr, l := tracked[u], lists[u]
			switch {
			case !tr.tracked:
				ask = append(ask, u)
				if l != nil { // no longer shares a room with us: stop tracking
					if err := s.store.DropRemoteDeviceList(ctx, u); err != nil {
						return nil, err
					}
				}
			case !tr.usable(l):
				ask = append(ask, u)
				if len(wanted[u]) == 0 { // the whole list: it fills the cache
					toFill[u] = true
				}
			default:
				if err := answerFromCache(l, wanted[u], resp); err != nil {
					return nil, err
				}
			}
		}
		if len(ask) == 0 {
			delete(remote, server)
		} else {
			remote[server] = ask
		}
	}
	return toFill, nil
}

func answerFromCache(l *storage.RemoteDeviceList, only []string, resp *QueryResponse) error {
	out := map[string]json.RawMessage{}
	for dev, d := range l.Devices {
		if d.KeyJSON == nil || (len(only) > 0 && !slices.Contains(only, dev)) {
			continue
		}
		var unsigned map[string]any
		if d.DisplayName != "" {
			unsigned = map[string]any{"device_display_name": d.DisplayName}
		}
		merged, err := mergeSignatures(d.KeyJSON, nil, unsigned)
		if err != nil {
			return fmt.Errorf("cached keys of %s/%s: %w", l.UserID, dev, err)
		}
		out[dev] = merged
	}
	resp.DeviceKeys[l.UserID] = out
	if k := l.CrossSigning["master"]; k != nil {
		resp.MasterKeys[l.UserID] = k
	}
	if k := l.CrossSigning["self_signing"]; k != nil {
		resp.SelfSigningKeys[l.UserID] = k
	}
	return nil
}

// checkRemoteAnswer keeps of a server's /user/keys/query answer what is
// about its own users, asked for (the users in asked, the devices wanted
// names when it names any) and valid: device keys of the user and device
// named, self-signed when signed; cross-signing keys of the right usage. A
// user with more than MaxRemoteDevices devices is left out before any
// signature is checked (as a resync's list is refused). It returns the
// lists to cache for the users in toFill (their stream_id unknown: the next
// update resyncs them).
func (s *Service) checkRemoteAnswer(server string, r *QueryResponse, asked []string, wanted map[string][]string,
	toFill map[string]bool, resp *QueryResponse) []storage.RemoteDeviceList {
	var fill []storage.RemoteDeviceList
	for _, u := range asked {
		devs, answered := r.DeviceKeys[u]
		if !answered || !onServer(u, server) || len(devs) > MaxRemoteDevices {
			continue
		}
		var only map[string]bool
		if len(wanted[u]) > 0 {
			only = make(map[string]bool, len(wanted[u]))
			for _, d := range wanted[u] {
				only[d] = true
			}
		}
		out := map[string]json.RawMessage{}
		var l *storage.RemoteDeviceList
		if toFill[u] && only == nil {
			l = &storage.RemoteDeviceList{UserID: u, StreamID: -1, Devices: map[string]storage.RemoteDevice{}}
		}
		for dev, raw := range devs {
			if only != nil && !only[dev] {
				continue
			}
			keys, err := validRemoteDevice(raw, u, dev)
			if err != nil {
				continue
			}
			out[dev] = raw
			if l != nil {
				var extra struct {
					Unsigned struct {
						Name string `json:"device_display_name"`
					} `json:"unsigned"`
				}
				_ = json.Unmarshal(raw, &extra)
				name := extra.Unsigned.Name
				if len(name) > maxDisplayName {
					name = ""
				}
				l.Devices[dev] = storage.RemoteDevice{KeyJSON: keys, DisplayName: name}
			}
		}
		resp.DeviceKeys[u] = out
		cross, err := validRemoteCrossSigning(u, r.MasterKeys[u], r.SelfSigningKeys[u], nil)
		if err != nil {
			cross = map[string][]byte{}
			if k, err := validRemoteCrossSigning(u, r.MasterKeys[u], nil, nil); err == nil {
				cross = k
			}
		}
		if k := cross["master"]; k != nil {
			resp.MasterKeys[u] = r.MasterKeys[u]
		}
		if k := cross["self_signing"]; k != nil {
			resp.SelfSigningKeys[u] = r.SelfSigningKeys[u]
		}
		if l != nil {
			l.CrossSigning = cross
			fill = append(fill, *l)
		}
	}
	return fill
}

// fillCache stores lists fetched by /user/keys/query, in one transaction,
// but those an update or a resync stored fresh meanwhile and those of users
// no longer tracked. It holds the users' locks (taken in order) meanwhile.
func (s *Service) fillCache(ctx context.Context, lists []storage.RemoteDeviceList) {
	if err := s.fill(ctx, lists); err != nil {
		slog.WarnContext(ctx, "caching remote device lists failed", "users", len(lists), "err", err)
	}
}

func (s *Service) fill(ctx context.Context, lists []storage.RemoteDeviceList) error {
	if len(lists) == 0 {
		return nil
	}
	slices.SortFunc(lists, func(a, b storage.RemoteDeviceList) int { return strings.Compare(a.UserID, b.UserID) })
	users := make([]string, len(lists))
	for i, l := range lists {
		unlock, err := s.userLocks.lock(ctx, l.UserID)
		if err != nil {
			return err
		}
		defer unlock()
		users[i] = l.UserID
	}
	cur, err := s.store.RemoteDeviceLists(ctx, users)
	if err != nil {
		return err
	}
	tracked, err := s.trackingMany(ctx, users)
	if err != nil {
		return err
	}
	var keep []storage.RemoteDeviceList
	for _, l := range lists {
		if tr := tracked[l.UserID]; tr.tracked && !tr.usable(cur[l.UserID]) {
			keep = append(keep, l)
		}
	}
	return s.store.ReplaceRemoteDeviceLists(ctx, keep, s.now().UnixMilli())
}
