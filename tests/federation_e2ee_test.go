package tests

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix"
	mfed "maunium.net/go/mautrix/federation"

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
	return deviceListsSince(t, c, since, "changed", user, within)
}

// deviceListsSince polls c's /sync from since until device_lists[field]
// names user (true) or the deadline passes.
func deviceListsSince(t *testing.T, c *mautrix.Client, since, field, user string, within time.Duration) bool {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		r := clientCall(t, c, "GET", "/_matrix/client/v3/sync?timeout=1000&since="+url.QueryEscape(since), nil)
		if r.Status != http.StatusOK {
			t.Fatalf("sync: %d %s", r.Status, r.Raw)
		}
		changed, _ := obj(r.Body["device_lists"])[field].([]any)
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

			// bob leaves: alice's sync lists him in device_lists.left, and
			// b.test stops tracking alice (her cached list is dropped).
			if cached, err := b.DB.RemoteDeviceLists(ctx, []string{alice.UserID.String()}); err != nil || cached[alice.UserID.String()] == nil {
				t.Fatalf("b.test holds no list for alice: %v", err)
			}
			aliceSync, err := alice.SyncRequest(ctx, 0, "", "", false, "")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := bob.LeaveRoom(ctx, room); err != nil {
				t.Fatal(err)
			}
			if !deviceListsSince(t, alice, aliceSync.NextBatch, "left", bob.UserID.String(), 20*time.Second) {
				t.Fatal("alice's sync never listed bob in device_lists.left")
			}
			keysMustCall(t, bob, "POST", "/_matrix/client/v3/keys/query", map[string]any{
				"device_keys": map[string]any{alice.UserID.String(): []string{}}})
			if cached, err := b.DB.RemoteDeviceLists(ctx, []string{alice.UserID.String()}); err != nil || cached[alice.UserID.String()] != nil {
				t.Fatalf("b.test still tracks alice after bob left: %v", err)
			}
		})
	}
}

// TestFederationUserKeysEndpoints: another server reads our users' devices
// and keys (GET /user/devices, POST /user/keys/query) and claims their keys
// (POST /user/keys/claim: one-time, then the fallback). A user-signing key
// never leaves; users of other servers are 400 M_INVALID_PARAM (a server
// answers only for its own users); oversized requests are 413 M_TOO_LARGE;
// bad input is 400, never 500. stream_id grows as the user's devices change.
func TestFederationUserKeysEndpoints(t *testing.T) {
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) {
			n := newFedNet(t, "hs.test", "remote.test")
			srv := n.start(t, backend, "hs.test")
			ctx := ctxT(t)
			remote := newFakeRemote(t, n, srv, "remote.test")
			alice := srv.Register(t, "alice")
			aliceID := alice.UserID.String()
			dev := newTestDevice(aliceID, alice.DeviceID.String())
			keysMustCall(t, alice, "POST", "/_matrix/client/v3/keys/upload", map[string]any{
				"device_keys":   dev.deviceKeys(t),
				"one_time_keys": dev.oneTimeKeys(t, "k", 1),
				"fallback_keys": map[string]any{"signed_curve25519:fb": dev.signedKey(t, true)},
			})
			master, _, _ := crossSign(t, alice)
			room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
			remote.join(t, srv, room, "bob")

			path := func(parts ...any) mfed.URLPath { return mfed.URLPath(parts) }
			devices, err := remote.get(ctx, "GET", path("v1", "user", "devices", aliceID), nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			if devices.Get("user_id").Str != aliceID || devices.Get("devices.#").Int() != 1 ||
				devices.Get("devices.0.device_id").Str != alice.DeviceID.String() ||
				devices.Get("devices.0.keys.keys.ed25519:"+alice.DeviceID.String()).Str != dev.ed ||
				devices.Get("master_key.keys.ed25519:"+master).Str != master || !devices.Get("self_signing_key").Exists() ||
				devices.Get("user_signing_key").Exists() || !devices.Get("stream_id").Exists() {
				t.Fatalf("user/devices = %s", devices.Raw)
			}
			q, err := remote.get(ctx, "POST", path("v1", "user", "keys", "query"), nil,
				map[string]any{"device_keys": map[string]any{aliceID: []string{}}})
			if err != nil {
				t.Fatal(err)
			}
			if !q.Get("device_keys."+gjsonEscape(aliceID)+"."+alice.DeviceID.String()).Exists() ||
				!q.Get("master_keys."+gjsonEscape(aliceID)).Exists() || !q.Get("self_signing_keys."+gjsonEscape(aliceID)).Exists() ||
				q.Get("user_signing_keys").Exists() {
				t.Fatalf("user/keys/query = %s", q.Raw)
			}
			claim := func() string {
				c, err := remote.get(ctx, "POST", path("v1", "user", "keys", "claim"), nil, map[string]any{
					"one_time_keys": map[string]any{aliceID: map[string]string{alice.DeviceID.String(): "signed_curve25519"}}})
				if err != nil {
					t.Fatal(err)
				}
				var kid string
				c.Get("one_time_keys." + gjsonEscape(aliceID) + "." + alice.DeviceID.String()).ForEach(func(k, _ gjson.Result) bool {
					kid = k.Str
					return false
				})
				return kid
			}
			if k1, k2, k3 := claim(), claim(), claim(); k1 != "signed_curve25519:kAa" || k2 != "signed_curve25519:fb" || k3 != k2 {
				t.Fatalf("claims: %q %q %q", k1, k2, k3)
			}

			// A new device: stream_id grows.
			alice2 := srv.Client(t)
			login, err := alice2.Login(ctx, &mautrix.ReqLogin{Type: mautrix.AuthTypePassword,
				Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "alice"},
				Password:   "password-alice", StoreCredentials: true})
			if err != nil {
				t.Fatal(err)
			}
			keysMustCall(t, alice2, "POST", "/_matrix/client/v3/keys/upload", map[string]any{
				"device_keys": newTestDevice(aliceID, login.DeviceID.String()).deviceKeys(t)})
			after, err := remote.get(ctx, "GET", path("v1", "user", "devices", aliceID), nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			if after.Get("stream_id").Int() <= devices.Get("stream_id").Int() || after.Get("devices.#").Int() != 2 {
				t.Fatalf("after a new device: %s (before %s)", after.Raw, devices.Get("stream_id").Raw)
			}

			// Bad input.
			many := map[string]any{}
			for i := range 1001 {
				many[fmt.Sprintf("@u%d:hs.test", i)] = []string{}
			}
			for _, c := range []struct {
				name   string
				method string
				path   mfed.URLPath
				body   any
				status int
				code   string
			}{
				{"devices of another server's user", "GET", path("v1", "user", "devices", "@bob:remote.test"), nil, 400, "M_INVALID_PARAM"},
				{"devices of an invalid user ID", "GET", path("v1", "user", "devices", "not-a-user"), nil, 400, "M_INVALID_PARAM"},
				{"query for another server's user", "POST", path("v1", "user", "keys", "query"),
					map[string]any{"device_keys": map[string]any{"@bob:remote.test": []string{}}}, 400, "M_INVALID_PARAM"},
				{"query for an invalid user ID", "POST", path("v1", "user", "keys", "query"),
					map[string]any{"device_keys": map[string]any{"nope": []string{}}}, 400, "M_INVALID_PARAM"},
				{"query without device_keys", "POST", path("v1", "user", "keys", "query"), map[string]any{}, 400, "M_MISSING_PARAM"},
				{"query of the wrong shape", "POST", path("v1", "user", "keys", "query"), map[string]any{"device_keys": []int{1}}, 400, "M_BAD_JSON"},
				{"query for too many users", "POST", path("v1", "user", "keys", "query"), map[string]any{"device_keys": many}, 413, "M_TOO_LARGE"},
				{"oversized query", "POST", path("v1", "user", "keys", "query"),
					map[string]any{"device_keys": map[string]any{aliceID: []string{strings.Repeat("D", 2<<20)}}}, 413, "M_TOO_LARGE"},
				{"claim for another server's user", "POST", path("v1", "user", "keys", "claim"),
					map[string]any{"one_time_keys": map[string]any{"@bob:remote.test": map[string]string{"D": "signed_curve25519"}}}, 400, "M_INVALID_PARAM"},
				{"claim without an algorithm", "POST", path("v1", "user", "keys", "claim"),
					map[string]any{"one_time_keys": map[string]any{aliceID: map[string]string{"D": ""}}}, 400, "M_INVALID_PARAM"},
			} {
				t.Run(c.name, func(t *testing.T) {
					_, err := remote.get(ctx, c.method, c.path, nil, c.body)
					wantErr(t, err, c.status, c.code)
				})
			}
		})
	}
}

// gjsonEscape escapes a user ID for a gjson path.
func gjsonEscape(s string) string {
	return strings.NewReplacer(".", `\.`, ":", `\:`, "@", `\@`).Replace(s)
}
