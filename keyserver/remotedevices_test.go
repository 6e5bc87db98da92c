package keyserver

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix/crypto/canonicaljson"

	"github.com/myelin-chat/myelin/internal/pgtest"
	"github.com/myelin-chat/myelin/storage"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func b64(b []byte) string { return base64.RawStdEncoding.EncodeToString(b) }

// sign adds userID's signature by keyName (priv) to obj.
func sign(t testing.TB, obj map[string]any, userID, keyName string, priv ed25519.PrivateKey) {
	t.Helper()
	body := map[string]any{}
	for k, v := range obj {
		if k != "signatures" && k != "unsigned" {
			body[k] = v
		}
	}
	canon, err := canonicaljson.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	sigs, _ := obj["signatures"].(map[string]any)
	if sigs == nil {
		sigs = map[string]any{}
	}
	mine, _ := sigs[userID].(map[string]any)
	if mine == nil {
		mine = map[string]any{}
	}
	mine["ed25519:"+keyName] = b64(ed25519.Sign(priv, canon))
	sigs[userID] = mine
	obj["signatures"] = sigs
}

func marshal(t testing.TB, v any) json.RawMessage {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// deviceKeys is a self-signed device_keys object for userID's deviceID.
func deviceKeys(t testing.TB, userID, deviceID string) json.RawMessage {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	curve := make([]byte, 32)
	_, _ = rand.Read(curve)
	obj := map[string]any{"user_id": userID, "device_id": deviceID,
		"algorithms": []string{"m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"},
		"keys":       map[string]string{"ed25519:" + deviceID: b64(pub), "curve25519:" + deviceID: b64(curve)}}
	sign(t, obj, userID, deviceID, priv)
	return marshal(t, obj)
}

// crossSigning returns a master key and a self-signing key signed by it.
func crossSigning(t testing.TB, userID string) (master, selfSigning json.RawMessage, masterPriv ed25519.PrivateKey) {
	mpub, mpriv, _ := ed25519.GenerateKey(rand.Reader)
	spub, _, _ := ed25519.GenerateKey(rand.Reader)
	m := map[string]any{"user_id": userID, "usage": []string{"master"}, "keys": map[string]string{"ed25519:" + b64(mpub): b64(mpub)}}
	s := map[string]any{"user_id": userID, "usage": []string{"self_signing"}, "keys": map[string]string{"ed25519:" + b64(spub): b64(spub)}}
	sign(t, s, userID, b64(mpub), mpriv)
	return marshal(t, m), marshal(t, s), mpriv
}

// devicesFed answers GET /user/devices from lists it holds per user, and
// counts the calls; a user in fail gets an error.
type devicesFed struct {
	Federation
	mu    sync.Mutex
	lists map[string]*UserDevicesResponse
	fail  map[string]bool
	calls map[string]int
	block chan struct{} // non-nil: UserDevices waits for it to close
}

func (f *devicesFed) UserDevices(_ context.Context, server, userID string) (*UserDevicesResponse, error) {
	if f.block != nil {
		<-f.block
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[userID]++
	if f.fail[userID] {
		return nil, errors.New("server down")
	}
	if !onServer(userID, server) {
		return nil, fmt.Errorf("asked %s about %s", server, userID)
	}
	l := f.lists[userID]
	if l == nil {
		return nil, errors.New("unknown user")
	}
	return l, nil
}

func (f *devicesFed) QueryKeys(_ context.Context, server string, q map[string][]string) (*QueryResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls["query:"+server]++
	r := &QueryResponse{DeviceKeys: map[string]map[string]json.RawMessage{}, MasterKeys: map[string]json.RawMessage{},
		SelfSigningKeys: map[string]json.RawMessage{}}
	for u := range q {
		l := f.lists[u]
		if l == nil {
			continue
		}
		r.DeviceKeys[u] = map[string]json.RawMessage{}
		for _, d := range l.Devices {
			keys := d.Keys
			if d.DisplayName != "" {
				keys, _ = mergeSignatures(d.Keys, nil, map[string]any{"device_display_name": d.DisplayName})
			}
			r.DeviceKeys[u][d.DeviceID] = keys
		}
		if l.MasterKey != nil {
			r.MasterKeys[u] = l.MasterKey
		}
		if l.SelfSigningKey != nil {
			r.SelfSigningKeys[u] = l.SelfSigningKey
		}
	}
	return r, nil
}

// sharedRooms says which users share a room with whom.
type sharedRooms map[string][]string

func (m sharedRooms) UsersSharingRoomsWith(_ context.Context, u string) ([]string, error) {
	return m[u], nil
}

type recordingNotifier struct {
	mu    sync.Mutex
	users []string
}

func (n *recordingNotifier) Notify(_ int64, users ...string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.users = append(n.users, users...)
}

// sharingStore is the store with who shares rooms with us faked: the
// users in shared since the position given.
type sharingStore struct {
	*storage.DB
	shared map[string]int64
}

func (s sharingStore) SharingSince(_ context.Context, userID, _ string) (int64, bool, error) {
	pos, ok := s.shared[userID]
	return pos, ok, nil
}

func (s sharingStore) SharingSinceMany(_ context.Context, userIDs []string, _ string) (map[string]int64, error) {
	out := map[string]int64{}
	for _, u := range userIDs {
		if pos, ok := s.shared[u]; ok {
			out[u] = pos
		}
	}
	return out, nil
}

type remoteEnv struct {
	s     *Service
	db    *storage.DB
	fed   *devicesFed
	notes *recordingNotifier
	store sharingStore
	bob   string // a remote user sharing a room with @alice:local.example
}

func newRemoteEnv(t *testing.T, backend string) *remoteEnv {
	t.Helper()
	ctx := context.Background()
	db, err := storage.Open(ctx, pgtest.StoreURL(t, backend), 4)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	e := &remoteEnv{db: db, notes: &recordingNotifier{}, bob: "@bob:remote.example",
		fed: &devicesFed{lists: map[string]*UserDevicesResponse{}, fail: map[string]bool{}, calls: map[string]int{}}}
	members := sharedRooms{e.bob: {"@alice:local.example", "@carol:remote.example"}}
	e.store = sharingStore{DB: db, shared: map[string]int64{e.bob: 0}}
	e.s = New(Options{Store: e.store, Stream: db.Stream, Notifier: e.notes, Members: members, Federation: e.fed, ServerName: "local.example"})
	master, ssk, _ := crossSigning(t, e.bob)
	e.fed.lists[e.bob] = &UserDevicesResponse{UserID: e.bob, StreamID: 5, MasterKey: master, SelfSigningKey: ssk,
		Devices: []UserDevice{{DeviceID: "B1", DisplayName: "phone", Keys: deviceKeys(t, e.bob, "B1")}}}
	return e
}

func (e *remoteEnv) list(t *testing.T) *storage.RemoteDeviceList {
	t.Helper()
	ls, err := e.db.RemoteDeviceLists(context.Background(), []string{e.bob})
	if err != nil {
		t.Fatal(err)
	}
	return ls[e.bob]
}

func (e *remoteEnv) update(t *testing.T, origin string, streamID int64, prev []int64, device string, deleted bool) error {
	t.Helper()
	u := map[string]any{"user_id": e.bob, "device_id": device, "stream_id": streamID, "prev_id": prev, "deleted": deleted}
	if !deleted {
		u["keys"] = deviceKeys(t, e.bob, device)
		u["device_display_name"] = "dev " + device
	}
	err := e.s.ReceiveDeviceListUpdate(context.Background(), origin, marshal(t, u))
	e.s.resyncs.wg.Wait() // resyncs run in the background
	return err
}

func (e *remoteEnv) resyncs() int {
	e.fed.mu.Lock()
	defer e.fed.mu.Unlock()
	return e.fed.calls[e.bob]
}

func forBackends(t *testing.T, f func(t *testing.T, backend string)) {
	for _, b := range pgtest.Backends {
		t.Run(b, func(t *testing.T) { f(t, b) })
	}
}

func TestDeviceListUpdatesInOrderAndGaps(t *testing.T) {
	forBackends(t, func(t *testing.T, backend string) {
		e := newRemoteEnv(t, backend)
		// No cached list: the first update resyncs (stream_id 5, device B1).
		if err := e.update(t, "remote.example", 6, []int64{5}, "B2", false); err != nil {
			t.Fatal(err)
		}
		l := e.list(t)
		if e.resyncs() != 1 || l == nil || l.StreamID != 5 || l.Devices["B1"].KeyJSON == nil || l.CrossSigning["self_signing"] == nil {
			t.Fatalf("first update did not resync: %d calls, list %+v", e.resyncs(), l)
		}
		if !slices.Contains(e.notes.users, "@alice:local.example") {
			t.Errorf("local user not told of the change: %v", e.notes.users)
		}
		// In order: applied without a resync.
		if err := e.update(t, "remote.example", 6, []int64{5}, "B2", false); err != nil {
			t.Fatal(err)
		}
		if err := e.update(t, "remote.example", 7, []int64{6}, "B1", true); err != nil {
			t.Fatal(err)
		}
		l = e.list(t)
		if e.resyncs() != 1 || l.StreamID != 7 || l.Devices["B2"].DisplayName != "dev B2" || l.Devices["B1"].KeyJSON != nil {
			t.Fatalf("in-order updates: %d resyncs, list %+v", e.resyncs(), l)
		}
		if _, ok := l.Devices["B1"]; ok {
			t.Error("deleted device still cached")
		}
		// A replayed update changes nothing.
		if err := e.update(t, "remote.example", 6, []int64{5}, "B2", false); err != nil {
			t.Fatal(err)
		}
		if e.resyncs() != 1 || e.list(t).StreamID != 7 {
			t.Fatalf("replayed update: %d resyncs", e.resyncs())
		}
		// A gap (8 never arrived): resync.
		if err := e.update(t, "remote.example", 9, []int64{8}, "B3", false); err != nil {
			t.Fatal(err)
		}
		if e.resyncs() != 2 || e.list(t).StreamID != 5 {
			t.Fatalf("gap: %d resyncs, stream %d", e.resyncs(), e.list(t).StreamID)
		}
		// Looping prev_id: resync.
		e.fed.lists[e.bob].StreamID = 20
		if err := e.update(t, "remote.example", 21, []int64{21}, "B4", false); err != nil {
			t.Fatal(err)
		}
		if e.resyncs() != 3 || e.list(t).StreamID != 20 {
			t.Fatalf("loop: %d resyncs, stream %d", e.resyncs(), e.list(t).StreamID)
		}
		// A failed resync leaves the list stale; the next update retries.
		e.fed.fail[e.bob] = true
		if err := e.update(t, "remote.example", 30, []int64{29}, "B5", false); err != nil {
			t.Fatal(err)
		}
		if l := e.list(t); !l.Stale {
			t.Fatalf("failed resync left the list fresh: %+v", l)
		}
		e.fed.fail[e.bob] = false
		if err := e.update(t, "remote.example", 31, []int64{30}, "B5", false); err != nil {
			t.Fatal(err)
		}
		if l := e.list(t); l.Stale || e.resyncs() != 5 {
			t.Fatalf("stale list not resynced: %d resyncs, %+v", e.resyncs(), l)
		}
	})
}

func TestDeviceListUpdateRefused(t *testing.T) {
	e := newRemoteEnv(t, "sqlite")
	ctx := context.Background()
	// Wrong origin: nothing asked, nothing stored.
	if err := e.update(t, "evil.example", 6, []int64{5}, "B2", false); err == nil {
		t.Error("update from another server accepted")
	}
	// Not tracked (shares no room with a local user): ignored.
	dave := "@dave:remote.example"
	u := marshal(t, map[string]any{"user_id": dave, "device_id": "D", "stream_id": 1})
	if err := e.s.ReceiveDeviceListUpdate(ctx, "remote.example", u); err != nil {
		t.Fatal(err)
	}
	if e.fed.calls[dave] != 0 || e.resyncs() != 0 || e.list(t) != nil {
		t.Errorf("untracked or wrong-origin update acted on: %v", e.fed.calls)
	}
	for _, bad := range []string{`{"user_id":"@bob:remote.example","stream_id":1}`, `[]`, `{"user_id":"nope","device_id":"D"}`,
		`{"user_id":"@bob:remote.example","device_id":"D","stream_id":"x"}`} {
		if err := e.s.ReceiveDeviceListUpdate(ctx, "remote.example", json.RawMessage(bad)); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
	if e.resyncs() != 0 {
		t.Error("bad updates caused a resync")
	}
}

func TestSigningKeyUpdateChecks(t *testing.T) {
	e := newRemoteEnv(t, "sqlite")
	ctx := context.Background()
	if err := e.update(t, "remote.example", 6, []int64{5}, "B2", false); err != nil { // fills the cache
		t.Fatal(err)
	}
	master, ssk, _ := crossSigning(t, e.bob)
	_, otherSSK, _ := crossSigning(t, e.bob) // signed by another master key
	up := func(origin string, m, s json.RawMessage) error {
		c := map[string]any{"user_id": e.bob}
		if m != nil {
			c["master_key"] = m
		}
		if s != nil {
			c["self_signing_key"] = s
		}
		err := e.s.ReceiveSigningKeyUpdate(ctx, origin, marshal(t, c))
		e.s.resyncs.wg.Wait()
		return err
	}
	before := string(e.list(t).CrossSigning["master"])
	for name, err := range map[string]error{
		"wrong origin":                 up("evil.example", master, ssk),
		"self-signing by other master": up("remote.example", master, otherSSK),
		"master as self-signing":       up("remote.example", nil, master),
		"self-signing not by cached":   up("remote.example", nil, ssk),
		"wrong usage":                  up("remote.example", ssk, nil),
	} {
		if err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if string(e.list(t).CrossSigning["master"]) != before {
		t.Fatal("a refused update changed the cached keys")
	}
	if err := up("remote.example", master, ssk); err != nil {
		t.Fatal(err)
	}
	l := e.list(t)
	c, _ := canonical(master)
	if string(l.CrossSigning["master"]) != string(c) {
		t.Fatalf("master key not updated: %s", l.CrossSigning["master"])
	}
}

func TestQueryUsesFreshCache(t *testing.T) {
	e := newRemoteEnv(t, "sqlite")
	ctx := context.Background()
	q := &QueryRequest{DeviceKeys: map[string][]string{e.bob: nil}}
	resp, err := e.s.Query(ctx, "@alice:local.example", q)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := resp.DeviceKeys[e.bob]["B1"]; !ok || resp.MasterKeys[e.bob] == nil || resp.SelfSigningKeys[e.bob] == nil {
		t.Fatalf("cold query: %+v", resp)
	}
	if e.fed.calls["query:remote.example"] != 1 {
		t.Fatalf("cold query asked %d times", e.fed.calls["query:remote.example"])
	}
	// Now cached (stream_id unknown): answered locally.
	resp, err = e.s.Query(ctx, "@alice:local.example", q)
	if err != nil {
		t.Fatal(err)
	}
	var dk struct {
		Unsigned struct {
			Name string `json:"device_display_name"`
		} `json:"unsigned"`
	}
	_ = json.Unmarshal(resp.DeviceKeys[e.bob]["B1"], &dk)
	if e.fed.calls["query:remote.example"] != 1 || dk.Unsigned.Name != "phone" || resp.MasterKeys[e.bob] == nil {
		t.Fatalf("warm query: %d asks, %s", e.fed.calls["query:remote.example"], resp.DeviceKeys[e.bob]["B1"])
	}
	// Unknown stream_id: the next update resyncs rather than applying blindly.
	if err := e.update(t, "remote.example", 6, []int64{5}, "B2", false); err != nil {
		t.Fatal(err)
	}
	if e.resyncs() != 1 {
		t.Fatalf("update over a query-filled cache: %d resyncs", e.resyncs())
	}
	// A stale list is asked again.
	if err := e.db.MarkRemoteDeviceListStale(ctx, e.bob, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := e.s.Query(ctx, "@alice:local.example", q); err != nil {
		t.Fatal(err)
	}
	if e.fed.calls["query:remote.example"] != 2 {
		t.Fatalf("stale list not asked again: %d", e.fed.calls["query:remote.example"])
	}
}

func TestQueryDropsInvalidRemoteKeys(t *testing.T) {
	e := newRemoteEnv(t, "sqlite")
	carol := "@carol:remote.example"
	good := deviceKeys(t, carol, "C1")
	e.fed.lists[carol] = &UserDevicesResponse{UserID: carol, Devices: []UserDevice{
		{DeviceID: "C1", Keys: good},
		{DeviceID: "C2", Keys: deviceKeys(t, carol, "OTHER")},         // names another device
		{DeviceID: "C3", Keys: json.RawMessage(`{"device_id":"C3"}`)}, // not keys at all
	}}
	resp, err := e.s.Query(context.Background(), "@alice:local.example", &QueryRequest{DeviceKeys: map[string][]string{carol: nil}})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.DeviceKeys[carol]) != 1 || resp.DeviceKeys[carol]["C1"] == nil {
		t.Fatalf("invalid remote keys kept: %v", resp.DeviceKeys[carol])
	}
}

// TestRemoteListTrackingLapses: a list fetched before the user last started
// sharing a room with us is not used (their server sent us no updates
// meanwhile); a user who shares no room any more is not tracked and their
// list is dropped.
func TestRemoteListTrackingLapses(t *testing.T) {
	e := newRemoteEnv(t, "sqlite")
	ctx := context.Background()
	q := &QueryRequest{DeviceKeys: map[string][]string{e.bob: nil}}
	for range 2 {
		if _, err := e.s.Query(ctx, "@alice:local.example", q); err != nil {
			t.Fatal(err)
		}
	}
	if e.fed.calls["query:remote.example"] != 1 {
		t.Fatalf("warm cache not used: %d asks", e.fed.calls["query:remote.example"])
	}
	// bob stops sharing rooms with us: not tracked, cache dropped.
	delete(e.store.shared, e.bob)
	if _, err := e.s.Query(ctx, "@alice:local.example", q); err != nil {
		t.Fatal(err)
	}
	if e.list(t) != nil || e.fed.calls["query:remote.example"] != 2 {
		t.Fatalf("untracked user: list %+v, %d asks", e.list(t), e.fed.calls["query:remote.example"])
	}
	// Shares a room again, since after a list we would hold: asked again.
	e.store.shared[e.bob] = 1 << 40
	if _, err := e.s.Query(ctx, "@alice:local.example", q); err != nil {
		t.Fatal(err)
	}
	if _, err := e.s.Query(ctx, "@alice:local.example", q); err != nil {
		t.Fatal(err)
	}
	if e.fed.calls["query:remote.example"] != 4 {
		t.Fatalf("a list older than the sharing was used: %d asks", e.fed.calls["query:remote.example"])
	}
}

// TestDeviceListUpdateDoesNotWaitForResync: EDUs are handled inside the
// sender's transaction, so a resync runs in the background, one per user.
func TestDeviceListUpdateDoesNotWaitForResync(t *testing.T) {
	e := newRemoteEnv(t, "sqlite")
	e.fed.block = make(chan struct{})
	start := time.Now()
	for i := range 3 {
		u := marshal(t, map[string]any{"user_id": e.bob, "device_id": "B9", "stream_id": 10 + i, "prev_id": []int{9 + i}})
		if err := e.s.ReceiveDeviceListUpdate(context.Background(), "remote.example", u); err != nil {
			t.Fatal(err)
		}
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("updates waited %v for the resync", took)
	}
	close(e.fed.block)
	e.s.resyncs.wg.Wait()
	if n := e.resyncs(); n != 1 {
		t.Fatalf("%d resyncs of one user at once, want 1", n)
	}
	if l := e.list(t); l == nil || l.Stale || l.StreamID != 5 {
		t.Fatalf("list after the resync: %+v", l)
	}
}
