package tests

import (
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

// serveFake serves handler on loopback and points name's relay at it.
func serveFake(t *testing.T, n *fedNet, name string, handler http.Handler) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hsrv := &http.Server{Handler: handler}
	go hsrv.Serve(ln)
	t.Cleanup(func() { hsrv.Close() })
	n.relays[name].point(ln.Addr().String())
}

// changedSince polls c's /sync from since until device_lists.changed names
// user (true) or the deadline passes.
func changedSince(t *testing.T, c *mautrix.Client, since, user string, within time.Duration) bool {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		r := clientCall(t, c, "GET", "/_matrix/client/v3/sync?timeout=1000&since="+url.QueryEscape(since), nil)
		if r.Status != http.StatusOK {
			t.Fatalf("sync: %d %s", r.Status, r.Raw)
		}
		changed, _ := obj(r.Body["device_lists"])["changed"].([]any)
		if slices.Contains(changed, any(user)) {
			return true
		}
		since, _ = r.Body["next_batch"].(string)
	}
	return false
}

// TestFederationE2EEKeys: alice@a.test and bob@b.test share a room. bob's
// /keys/query shows alice's device and her master and self-signing keys
// (never her user-signing key); when alice logs in a second device and
// uploads its keys, a.test sends m.device_list_update to b.test, whose /sync
// names alice in device_lists.changed and whose /keys/query shows the new
// device. alice's /keys/claim takes bob's one-time keys one at a time, then
// his fallback key. A server that answers slowly or with garbage is a
// `failures` entry, answered within the request's timeout.
func TestFederationE2EEKeys(t *testing.T) {
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) {
			n := newFedNet(t, "a.test", "b.test", "slow.test", "junk.test")
			a := n.start(t, backend, "a.test")
			b := n.start(t, backend, "b.test")
			slowDone := make(chan struct{})
			t.Cleanup(func() { close(slowDone) })
			serveFake(t, n, "slow.test", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				select {
				case <-slowDone:
				case <-r.Context().Done():
				}
			}))
			serveFake(t, n, "junk.test", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				_, _ = w.Write([]byte(`{"device_keys": "garbage", "one_time_keys": [1,2]`))
			}))
			ctx := ctxT(t)
			alice := a.Register(t, "alice")
			bob := b.Register(t, "bob")
			aliceDev := newTestDevice(alice.UserID.String(), alice.DeviceID.String())
			keysMustCall(t, alice, "POST", "/_matrix/client/v3/keys/upload", map[string]any{"device_keys": aliceDev.deviceKeys(t)})
			aliceMaster, _, _ := crossSign(t, alice)
			bobDev := newTestDevice(bob.UserID.String(), bob.DeviceID.String())
			keysMustCall(t, bob, "POST", "/_matrix/client/v3/keys/upload", map[string]any{
				"device_keys":   bobDev.deviceKeys(t),
				"one_time_keys": bobDev.oneTimeKeys(t, "k", 2),
				"fallback_keys": map[string]any{"signed_curve25519:fb": bobDev.signedKey(t, true)},
			})
			room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
			if _, err := bob.JoinRoom(ctx, string(room), &mautrix.ReqJoinRoom{Via: []string{"a.test"}}); err != nil {
				t.Fatal(err)
			}

			// bob sees alice's device and cross-signing keys.
			q := keysMustCall(t, bob, "POST", "/_matrix/client/v3/keys/query", map[string]any{
				"device_keys": map[string]any{alice.UserID.String(): []string{}}})
			if obj(obj(q["device_keys"])[alice.UserID.String()])[alice.DeviceID.String()] == nil {
				t.Fatalf("bob's query lacks alice's device: %v", q)
			}
			master := obj(obj(obj(q["master_keys"])[alice.UserID.String()])["keys"])
			if master["ed25519:"+aliceMaster] != aliceMaster || obj(q["self_signing_keys"])[alice.UserID.String()] == nil {
				t.Fatalf("bob's query lacks alice's cross-signing keys: %v", q)
			}
			if obj(q["user_signing_keys"])[alice.UserID.String()] != nil {
				t.Fatal("alice's user-signing key reached another server")
			}
			if len(obj(q["failures"])) != 0 {
				t.Fatalf("failures: %v", q["failures"])
			}

			// alice adds a device: bob is told, and sees it.
			first, err := bob.SyncRequest(ctx, 0, "", "", false, "")
			if err != nil {
				t.Fatal(err)
			}
			since := first.NextBatch
			alice2 := a.Client(t)
			login, err := alice2.Login(ctx, &mautrix.ReqLogin{Type: mautrix.AuthTypePassword,
				Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "alice"},
				Password:   "password-alice", StoreCredentials: true})
			if err != nil {
				t.Fatal(err)
			}
			newDev := newTestDevice(alice.UserID.String(), login.DeviceID.String())
			keysMustCall(t, alice2, "POST", "/_matrix/client/v3/keys/upload", map[string]any{"device_keys": newDev.deviceKeys(t)})
			if !changedSince(t, bob, since, alice.UserID.String(), 20*time.Second) {
				t.Fatal("bob's sync never named alice in device_lists.changed")
			}
			q = keysMustCall(t, bob, "POST", "/_matrix/client/v3/keys/query", map[string]any{
				"device_keys": map[string]any{alice.UserID.String(): []string{}}})
			if obj(obj(q["device_keys"])[alice.UserID.String()])[login.DeviceID.String()] == nil {
				t.Fatalf("bob's query lacks alice's new device: %v", q["device_keys"])
			}

			// alice claims bob's keys: two one-time keys, then the fallback.
			var got []string
			for range 3 {
				c := keysMustCall(t, alice, "POST", "/_matrix/client/v3/keys/claim", map[string]any{
					"one_time_keys": map[string]any{bob.UserID.String(): map[string]string{bob.DeviceID.String(): "signed_curve25519"}}})
				for kid := range obj(obj(obj(c["one_time_keys"])[bob.UserID.String()])[bob.DeviceID.String()]) {
					got = append(got, kid)
				}
			}
			if len(got) != 3 || got[0] == got[1] || got[2] != "signed_curve25519:fb" || !strings.HasPrefix(got[0], "signed_curve25519:k") {
				t.Fatalf("claims over federation: %v", got)
			}

			// A slow and a garbage server: failures, within the timeout.
			start := time.Now()
			q = keysMustCall(t, alice, "POST", "/_matrix/client/v3/keys/query", map[string]any{"timeout": 1500,
				"device_keys": map[string]any{"@x:slow.test": []string{}, "@y:junk.test": []string{}, bob.UserID.String(): []string{}}})
			if took := time.Since(start); took > 5*time.Second {
				t.Errorf("query with a slow server took %v", took)
			}
			fails := obj(q["failures"])
			if fails["slow.test"] == nil || fails["junk.test"] == nil || fails["b.test"] != nil {
				t.Fatalf("failures = %v", fails)
			}
			if obj(obj(q["device_keys"])[bob.UserID.String()])[bob.DeviceID.String()] == nil {
				t.Fatalf("bob's keys missing beside the failures: %v", q["device_keys"])
			}
			c := keysMustCall(t, alice, "POST", "/_matrix/client/v3/keys/claim", map[string]any{"timeout": 1500,
				"one_time_keys": map[string]any{"@y:junk.test": map[string]string{"D": "signed_curve25519"}}})
			if obj(c["failures"])["junk.test"] == nil {
				t.Fatalf("claim failures = %v", c["failures"])
			}
		})
	}
}
