package tests

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"maunium.net/go/mautrix"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

func uploadDevice(t *testing.T, c *mautrix.Client, otks int) *testDevice {
	t.Helper()
	d := newTestDevice(c.UserID.String(), c.DeviceID.String())
	out := keysMustCall(t, c, "POST", "/_matrix/client/v3/keys/upload", map[string]any{
		"device_keys":   d.deviceKeys(t),
		"one_time_keys": d.oneTimeKeys(t, "k", otks),
		"fallback_keys": map[string]any{"signed_curve25519:fb1": d.signedKey(t, true)},
	})
	if got := obj(out["one_time_key_counts"])["signed_curve25519"]; got != float64(otks) {
		t.Fatalf("one_time_key_counts = %v, want %d", out["one_time_key_counts"], otks)
	}
	return d
}

func claimOne(t *testing.T, c *mautrix.Client, user, device string) (string, map[string]any) {
	t.Helper()
	out := keysMustCall(t, c, "POST", "/_matrix/client/v3/keys/claim", map[string]any{
		"one_time_keys": map[string]any{user: map[string]string{device: "signed_curve25519"}},
	})
	for kid, k := range obj(obj(obj(out["one_time_keys"])[user])[device]) {
		return kid, obj(k)
	}
	return "", nil
}

func TestKeysUploadQueryClaim(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		a, dev := alice.UserID.String(), alice.DeviceID.String()
		shareRoom(t, alice, bob) // device-list changes go to users sharing a room
		uploadDevice(t, alice, 2)

		q := keysMustCall(t, bob, "POST", "/_matrix/client/v3/keys/query", map[string]any{"device_keys": map[string]any{a: []string{}}})
		dk := obj(obj(obj(q["device_keys"])[a])[dev])
		if dk["device_id"] != dev || obj(obj(dk["signatures"])[a])["ed25519:"+dev] == nil {
			t.Fatalf("queried device keys = %v", q)
		}
		if dk["unsigned"] != nil {
			t.Fatalf("unnamed device has unsigned data: %v", dk)
		}
		// The device's display name is public: others see it under unsigned,
		// outside what the device signed.
		keysMustCall(t, alice, "PUT", "/_matrix/client/v3/devices/"+dev, map[string]any{"display_name": "Alice's phone"})
		for _, c := range []*mautrix.Client{alice, bob} {
			q = keysMustCall(t, c, "POST", "/_matrix/client/v3/keys/query", map[string]any{"device_keys": map[string]any{a: []string{}}})
			dk = obj(obj(obj(q["device_keys"])[a])[dev])
			if obj(dk["unsigned"])["device_display_name"] != "Alice's phone" || obj(obj(dk["signatures"])[a])["ed25519:"+dev] == nil {
				t.Fatalf("queried device keys after naming = %v", dk)
			}
		}
		// A timeout only bounds remote servers: local answers never wait; a
		// negative one is refused.
		q = keysMustCall(t, bob, "POST", "/_matrix/client/v3/keys/query", map[string]any{"timeout": 1, "device_keys": map[string]any{a: []string{}}})
		if obj(obj(q["device_keys"])[a])[dev] == nil {
			t.Fatalf("query with a short timeout = %v", q)
		}
		if status, out := keysCall(t, bob, "POST", "/_matrix/client/v3/keys/query", map[string]any{"timeout": -1, "device_keys": map[string]any{a: []string{}}}); status != 400 || out["errcode"] != "M_INVALID_PARAM" {
			t.Fatalf("negative timeout = %d %v", status, out)
		}

		seen := map[string]bool{}
		for i := 0; i < 2; i++ {
			kid, k := claimOne(t, bob, a, dev)
			if !strings.HasPrefix(kid, "signed_curve25519:k") || k["fallback"] != nil || seen[kid] {
				t.Fatalf("claim %d = %s %v", i, kid, k)
			}
			seen[kid] = true
		}
		fallbacks, _ := srv.Keys.UnusedFallbackKeyTypes(ctx, a, dev)
		if len(fallbacks) != 1 {
			t.Fatalf("unused fallback types before use = %v", fallbacks)
		}
		// One-time keys are gone: the fallback key is handed out (and may be, again).
		for i := 0; i < 2; i++ {
			kid, k := claimOne(t, bob, a, dev)
			if kid != "signed_curve25519:fb1" || k["fallback"] != true {
				t.Fatalf("fallback claim = %s %v", kid, k)
			}
		}
		if fallbacks, _ := srv.Keys.UnusedFallbackKeyTypes(ctx, a, dev); len(fallbacks) != 0 {
			t.Fatalf("unused fallback types after use = %v", fallbacks)
		}
		counts, _ := srv.Keys.OneTimeKeyCounts(ctx, a, dev)
		if counts["signed_curve25519"] != 0 {
			t.Fatalf("counts = %v", counts)
		}
		// Unknown users and devices are simply absent.
		out := keysMustCall(t, bob, "POST", "/_matrix/client/v3/keys/claim", map[string]any{"one_time_keys": map[string]any{
			"@nobody:localhost": map[string]string{"X": "signed_curve25519"}, a: map[string]string{"NOPE": "signed_curve25519"}}})
		if len(obj(out["one_time_keys"])) != 0 {
			t.Fatalf("claim for unknown = %v", out)
		}
		// Remote servers are reported, not faked.
		out = keysMustCall(t, bob, "POST", "/_matrix/client/v3/keys/query", map[string]any{"device_keys": map[string]any{"@x:remote.example": []string{}}})
		if obj(out["failures"])["remote.example"] == nil {
			t.Fatalf("remote query = %v", out)
		}

		// /keys/changes reports alice's upload to bob.
		ch := keysMustCall(t, bob, "GET", fmt.Sprintf("/_matrix/client/v3/keys/changes?from=0&to=%d", srv.DB.Stream.Current()), nil)
		if !strings.Contains(fmt.Sprint(ch["changed"]), a) {
			t.Fatalf("changes = %v", ch)
		}
		ch = keysMustCall(t, bob, "GET", fmt.Sprintf("/_matrix/client/v3/keys/changes?from=%d&to=%d", srv.DB.Stream.Current(), srv.DB.Stream.Current()), nil)
		if len(ch["changed"].([]any)) != 0 {
			t.Fatalf("empty range changes = %v", ch)
		}
	})
}

// TestConcurrentClaims: many claimers at once never get the same one-time key.
func TestConcurrentClaims(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		const n = 40
		uploadDevice(t, alice, n)
		var mu sync.Mutex
		got := map[string]int{}
		var wg sync.WaitGroup
		for i := 0; i < n+5; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				kid, _ := claimOne(t, bob, alice.UserID.String(), alice.DeviceID.String())
				mu.Lock()
				got[kid]++
				mu.Unlock()
			}()
		}
		wg.Wait()
		for kid, c := range got {
			if kid != "signed_curve25519:fb1" && c != 1 {
				t.Errorf("key %s claimed %d times", kid, c)
			}
		}
		if len(got) != n+1 || got["signed_curve25519:fb1"] != 5 {
			t.Fatalf("claims = %v", got)
		}
	})
}

func TestKeysBadInput(t *testing.T) {
	srv := testserver.Start(t, "sqlite")
	alice := srv.Register(t, "alice")
	a, dev := alice.UserID.String(), alice.DeviceID.String()
	d := newTestDevice(a, dev)
	other := newTestDevice(a, dev)
	good := d.deviceKeys(t)
	unsigned := d.deviceKeys(t)
	delete(unsigned, "signatures")
	badSig := d.deviceKeys(t)
	badSig["signatures"] = other.deviceKeys(t)["signatures"]
	wrongUser := sign(t, map[string]any{"user_id": "@bob:localhost", "device_id": dev, "algorithms": []string{"x"},
		"keys": map[string]any{"ed25519:" + dev: d.ed, "curve25519:" + dev: d.curve}}, a, dev, d.priv)
	noCurve := sign(t, map[string]any{"user_id": a, "device_id": dev, "algorithms": []string{"x"},
		"keys": map[string]any{"ed25519:" + dev: d.ed}}, a, dev, d.priv)
	tampered := d.deviceKeys(t)
	tampered["algorithms"] = []string{"other"}
	big := strings.Repeat("x", 70*1024)

	cases := []struct {
		name, method, path string
		body               any
		status             int
		errcode            string
	}{
		{"not json", "POST", "/keys/upload", "{nope", 400, "M_NOT_JSON"},
		{"device keys not an object", "POST", "/keys/upload", map[string]any{"device_keys": "x"}, 400, "M_BAD_JSON"},
		{"device keys without signatures", "POST", "/keys/upload", map[string]any{"device_keys": unsigned}, 400, "M_BAD_JSON"},
		{"signature by another key", "POST", "/keys/upload", map[string]any{"device_keys": badSig}, 400, "M_INVALID_SIGNATURE"},
		{"tampered after signing", "POST", "/keys/upload", map[string]any{"device_keys": tampered}, 400, "M_INVALID_SIGNATURE"},
		{"wrong user", "POST", "/keys/upload", map[string]any{"device_keys": wrongUser}, 400, "M_INVALID_PARAM"},
		{"missing curve25519", "POST", "/keys/upload", map[string]any{"device_keys": noCurve}, 400, "M_BAD_JSON"},
		{"one-time key signed by another device", "POST", "/keys/upload", map[string]any{"device_keys": good,
			"one_time_keys": map[string]any{"signed_curve25519:A": other.signedKey(t, false)}}, 400, "M_INVALID_SIGNATURE"},
		{"one-time key id without algorithm", "POST", "/keys/upload", map[string]any{"device_keys": good,
			"one_time_keys": map[string]any{"A": d.signedKey(t, false)}}, 400, "M_INVALID_PARAM"},
		{"signed key not an object", "POST", "/keys/upload", map[string]any{"device_keys": good,
			"one_time_keys": map[string]any{"signed_curve25519:A": "abc"}}, 400, "M_BAD_JSON"},
		{"query invalid user", "POST", "/keys/query", map[string]any{"device_keys": map[string]any{"not-a-user": []string{}}}, 400, "M_INVALID_PARAM"},
		{"claim invalid user", "POST", "/keys/claim", map[string]any{"one_time_keys": map[string]any{"bob": map[string]string{"D": "signed_curve25519"}}}, 400, "M_INVALID_PARAM"},
		{"claim wrong shape", "POST", "/keys/claim", map[string]any{"one_time_keys": []int{1}}, 400, "M_BAD_JSON"},
		{"changes without tokens", "GET", "/keys/changes", nil, 400, "M_MISSING_PARAM"},
		{"changes with junk tokens", "GET", "/keys/changes?from=x&to=y", nil, 400, "M_INVALID_PARAM"},
		{"to-device too large", "PUT", "/sendToDevice/m.test/t1", map[string]any{"messages": map[string]any{a: map[string]any{dev: map[string]string{"x": big}}}}, 413, "M_TOO_LARGE"},
		{"to-device content not object", "PUT", "/sendToDevice/m.test/t2", map[string]any{"messages": map[string]any{a: map[string]any{dev: 5}}}, 400, "M_BAD_JSON"},
		{"to-device to remote without federation", "PUT", "/sendToDevice/m.test/t3", map[string]any{"messages": map[string]any{"@x:remote.example": map[string]any{"D": map[string]any{}}}}, 403, "M_FORBIDDEN"},
		{"backup keys without backup", "PUT", "/room_keys/keys?version=1", map[string]any{"rooms": map[string]any{}}, 404, "M_NOT_FOUND"},
		{"backup keys without version", "GET", "/room_keys/keys", nil, 400, "M_MISSING_PARAM"},
		{"no current backup", "GET", "/room_keys/version", nil, 404, "M_NOT_FOUND"},
		{"unknown backup version", "GET", "/room_keys/version/77", nil, 404, "M_NOT_FOUND"},
		{"backup without auth_data", "POST", "/room_keys/version", map[string]any{"algorithm": "m.megolm_backup.v1.curve25519-aes-sha2"}, 400, "M_BAD_JSON"},
		{"self-signing key without master", "POST", "/keys/device_signing/upload", map[string]any{"self_signing_key": map[string]any{
			"user_id": a, "usage": []string{"self_signing"}, "keys": map[string]string{"ed25519:" + d.ed: d.ed}}}, 400, "M_MISSING_PARAM"},
		{"dehydrated device without keys", "PUT", "/_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device",
			map[string]any{"device_id": "DEHY", "device_data": map[string]any{"algorithm": "x"}}, 400, "M_MISSING_PARAM"},
		{"no dehydrated device", "GET", "/_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device", nil, 404, "M_NOT_FOUND"},
		{"events of a device that is not dehydrated", "POST", "/_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device/" + dev + "/events", map[string]any{}, 403, "M_FORBIDDEN"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := c.path
			if !strings.HasPrefix(path, "/_matrix") {
				path = "/_matrix/client/v3" + path
			}
			status, out := keysCall(t, alice, c.method, path, c.body)
			if status != c.status || out["errcode"] != c.errcode {
				t.Fatalf("%s %s = %d %v, want %d %s", c.method, c.path, status, out, c.status, c.errcode)
			}
		})
	}
	// Nothing was stored by the rejected uploads.
	q := keysMustCall(t, alice, "POST", "/_matrix/client/v3/keys/query", map[string]any{"device_keys": map[string]any{a: []string{}}})
	if len(obj(obj(q["device_keys"])[a])) != 0 {
		t.Fatalf("rejected uploads stored keys: %v", q)
	}
	if msgs, _ := srv.Keys.ToDeviceSince(context.Background(), a, dev, 0, 10); len(msgs) != 0 {
		t.Fatalf("rejected to-device stored: %v", msgs)
	}
}

func TestCrossSigningAndSignatures(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		a, b := alice.UserID.String(), bob.UserID.String()
		ad := uploadDevice(t, alice, 0)
		uploadDevice(t, bob, 0)

		type csKeys struct {
			mPriv, sPriv, uPriv ed25519Key
			m, s, u             string
		}
		makeKeys := func(t *testing.T, user string) (csKeys, map[string]any) {
			var k csKeys
			k.mPriv.priv, k.m = newSigningKey()
			k.sPriv.priv, k.s = newSigningKey()
			k.uPriv.priv, k.u = newSigningKey()
			master := map[string]any{"user_id": user, "usage": []string{"master"}, "keys": map[string]string{"ed25519:" + k.m: k.m}}
			ssk := sign(t, map[string]any{"user_id": user, "usage": []string{"self_signing"}, "keys": map[string]string{"ed25519:" + k.s: k.s}}, user, k.m, k.mPriv.priv)
			usk := sign(t, map[string]any{"user_id": user, "usage": []string{"user_signing"}, "keys": map[string]string{"ed25519:" + k.u: k.u}}, user, k.m, k.mPriv.priv)
			return k, map[string]any{"master_key": master, "self_signing_key": ssk, "user_signing_key": usk}
		}
		ak, aUpload := makeKeys(t, a)
		keysMustCall(t, alice, "POST", "/_matrix/client/v3/keys/device_signing/upload", aUpload)
		// The same keys again (a retry) need no auth.
		keysMustCall(t, alice, "POST", "/_matrix/client/v3/keys/device_signing/upload", aUpload)
		bk, bUpload := makeKeys(t, b)
		keysMustCall(t, bob, "POST", "/_matrix/client/v3/keys/device_signing/upload", bUpload)

		// A self-signing key not signed by the master key is refused.
		_, bad := makeKeys(t, a)
		bad["master_key"] = nil
		if status, out := keysCall(t, alice, "POST", "/_matrix/client/v3/keys/device_signing/upload", bad); status != 400 || out["errcode"] != "M_INVALID_SIGNATURE" {
			t.Fatalf("foreign self-signing key = %d %v", status, out)
		}
		// Replacing the master key needs the password.
		_, repl := makeKeys(t, a)
		status, out := keysCall(t, alice, "POST", "/_matrix/client/v3/keys/device_signing/upload", repl)
		if status != 401 || out["session"] == nil || out["flows"] == nil {
			t.Fatalf("replacement without auth = %d %v", status, out)
		}
		repl["auth"] = map[string]any{"type": "m.login.password", "session": out["session"], "password": "wrong",
			"identifier": map[string]string{"type": "m.id.user", "user": "alice"}}
		if status, out := keysCall(t, alice, "POST", "/_matrix/client/v3/keys/device_signing/upload", repl); status != 401 || out["errcode"] != "M_FORBIDDEN" {
			t.Fatalf("replacement with a wrong password = %d %v", status, out)
		}

		// Signatures: alice's SSK signs her device; bob's USK signs alice's master key; one forged.
		q := keysMustCall(t, alice, "POST", "/_matrix/client/v3/keys/query", map[string]any{"device_keys": map[string]any{a: []string{}}})
		devKeys := obj(obj(obj(q["device_keys"])[a])[ad.device])
		signedDev := sign(t, devKeys, a, ak.s, ak.sPriv.priv)
		forged := sign(t, map[string]any{"user_id": a, "usage": []string{"master"}, "keys": map[string]string{"ed25519:" + ak.m: ak.m}}, b, bk.u, ak.uPriv.priv)
		out = keysMustCall(t, alice, "POST", "/_matrix/client/v3/keys/signatures/upload", map[string]any{a: map[string]any{ad.device: signedDev}})
		if len(obj(out["failures"])) != 0 {
			t.Fatalf("device signature failures = %v", out)
		}
		out = keysMustCall(t, bob, "POST", "/_matrix/client/v3/keys/signatures/upload", map[string]any{a: map[string]any{ak.m: forged, "NOSUCHKEY": forged}})
		f := obj(obj(out["failures"])[a])
		if obj(f[ak.m])["errcode"] != "M_INVALID_SIGNATURE" || obj(f["NOSUCHKEY"])["errcode"] != "M_NOT_FOUND" {
			t.Fatalf("forged signature failures = %v", out)
		}
		good := sign(t, map[string]any{"user_id": a, "usage": []string{"master"}, "keys": map[string]string{"ed25519:" + ak.m: ak.m}}, b, bk.u, bk.uPriv.priv)
		out = keysMustCall(t, bob, "POST", "/_matrix/client/v3/keys/signatures/upload", map[string]any{a: map[string]any{ak.m: good}})
		if len(obj(out["failures"])) != 0 {
			t.Fatalf("good signature failures = %v", out)
		}

		// Bob sees alice's device signed by her SSK and his own signature on her master key; alice does not see bob's.
		q = keysMustCall(t, bob, "POST", "/_matrix/client/v3/keys/query", map[string]any{"device_keys": map[string]any{a: []string{}, b: []string{}}})
		if obj(obj(obj(obj(obj(q["device_keys"])[a])[ad.device])["signatures"])[a])["ed25519:"+ak.s] == nil {
			t.Fatalf("device signature missing: %v", q)
		}
		if obj(obj(obj(q["master_keys"])[a])["signatures"])[b] == nil {
			t.Fatalf("bob's signature missing for bob: %v", q["master_keys"])
		}
		if obj(q["user_signing_keys"])[a] != nil || obj(q["user_signing_keys"])[b] == nil || obj(q["self_signing_keys"])[a] == nil {
			t.Fatalf("user-signing keys leak or are missing: %v", q)
		}
		q = keysMustCall(t, alice, "POST", "/_matrix/client/v3/keys/query", map[string]any{"device_keys": map[string]any{a: []string{}}})
		if obj(obj(obj(q["master_keys"])[a])["signatures"])[b] != nil {
			t.Fatalf("alice sees bob's signature: %v", q["master_keys"])
		}
	})
}

type ed25519Key struct{ priv []byte }

func TestKeyBackup(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice")
		auth := map[string]any{"public_key": randomKey()}
		const alg = "m.megolm_backup.v1.curve25519-aes-sha2"
		v1 := keysMustCall(t, alice, "POST", "/_matrix/client/v3/room_keys/version", map[string]any{"algorithm": alg, "auth_data": auth})["version"].(string)
		v2 := keysMustCall(t, alice, "POST", "/_matrix/client/v3/room_keys/version", map[string]any{"algorithm": alg, "auth_data": auth})["version"].(string)
		cur := keysMustCall(t, alice, "GET", "/_matrix/client/v3/room_keys/version", nil)
		if cur["version"] != v2 || cur["count"] != float64(0) || cur["etag"] == nil {
			t.Fatalf("current = %v", cur)
		}
		key := func(fmi, fwd int, verified bool, tag string) map[string]any {
			return map[string]any{"first_message_index": fmi, "forwarded_count": fwd, "is_verified": verified, "session_data": map[string]any{"tag": tag}}
		}
		room, sess := "!room:localhost", "sess/1+x"
		path := "/_matrix/client/v3/room_keys/keys/" + strings.ReplaceAll(room, "!", "%21") + "/" + strings.ReplaceAll(strings.ReplaceAll(sess, "/", "%2F"), "+", "%2B")
		// Only the current version takes keys.
		status, out := keysCall(t, alice, "PUT", path+"?version="+v1, key(0, 0, false, "a"))
		if status != 403 || out["errcode"] != "M_WRONG_ROOM_KEYS_VERSION" || out["current_version"] != v2 {
			t.Fatalf("write to old version = %d %v", status, out)
		}
		r1 := keysMustCall(t, alice, "PUT", path+"?version="+v2, key(5, 0, false, "first"))
		if r1["count"] != float64(1) {
			t.Fatalf("put = %v", r1)
		}
		steps := []struct {
			k       map[string]any
			keepTag string
		}{
			{key(3, 0, false, "lower index"), "lower index"},
			{key(1, 0, false, "unverified-1"), "unverified-1"},
			{key(9, 0, true, "verified"), "verified"},
			{key(0, 0, false, "unverified lower"), "verified"},
			{key(9, 2, true, "more forwarded"), "verified"},
			{key(8, 3, true, "verified lower index"), "verified lower index"},
		}
		etag := r1["etag"]
		for _, s := range steps {
			r := keysMustCall(t, alice, "PUT", path+"?version="+v2, s.k)
			got := keysMustCall(t, alice, "GET", path+"?version="+v2, nil)
			if obj(got["session_data"])["tag"] != s.keepTag {
				t.Fatalf("after uploading %v kept %v, want %s", s.k, got, s.keepTag)
			}
			changed := s.keepTag == obj(s.k["session_data"])["tag"]
			if (r["etag"] != etag) != changed {
				t.Fatalf("etag %v → %v, changed=%v", etag, r["etag"], changed)
			}
			etag = r["etag"]
		}
		all := keysMustCall(t, alice, "GET", "/_matrix/client/v3/room_keys/keys?version="+v2, nil)
		if obj(obj(obj(all["rooms"])[room])["sessions"])[sess] == nil {
			t.Fatalf("all keys = %v", all)
		}
		if empty := keysMustCall(t, alice, "GET", "/_matrix/client/v3/room_keys/keys/%21other:localhost?version="+v2, nil); len(obj(empty["sessions"])) != 0 {
			t.Fatalf("unknown room = %v", empty)
		}
		if status, _ := keysCall(t, alice, "GET", "/_matrix/client/v3/room_keys/keys/%21other:localhost/s?version="+v2, nil); status != 404 {
			t.Fatalf("unknown session = %d", status)
		}
		del := keysMustCall(t, alice, "DELETE", "/_matrix/client/v3/room_keys/keys?version="+v2, nil)
		if del["count"] != float64(0) || del["etag"] == etag {
			t.Fatalf("delete = %v", del)
		}
		// Updating auth_data; algorithm must match.
		if status, out := keysCall(t, alice, "PUT", "/_matrix/client/v3/room_keys/version/"+v2, map[string]any{"algorithm": "other", "auth_data": auth}); status != 400 || out["errcode"] != "M_INVALID_PARAM" {
			t.Fatalf("algorithm change = %d %v", status, out)
		}
		keysMustCall(t, alice, "PUT", "/_matrix/client/v3/room_keys/version/"+v2, map[string]any{"algorithm": alg, "auth_data": map[string]any{"public_key": "new"}})
		if got := keysMustCall(t, alice, "GET", "/_matrix/client/v3/room_keys/version/"+v2, nil); obj(got["auth_data"])["public_key"] != "new" {
			t.Fatalf("updated = %v", got)
		}
		keysMustCall(t, alice, "DELETE", "/_matrix/client/v3/room_keys/version/"+v2, nil)
		if cur := keysMustCall(t, alice, "GET", "/_matrix/client/v3/room_keys/version", nil); cur["version"] != v1 {
			t.Fatalf("current after delete = %v", cur)
		}
		if status, _ := keysCall(t, alice, "DELETE", "/_matrix/client/v3/room_keys/version/"+v2, nil); status != 404 {
			t.Fatalf("deleting twice = %d", status)
		}
	})
}

func TestToDeviceAndDeviceDeletion(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		shareRoom(t, alice, bob)
		bob2 := srv.Client(t)
		if _, err := bob2.Login(ctx, &mautrix.ReqLogin{Type: mautrix.AuthTypePassword, Password: "password-bob", StoreCredentials: true,
			Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "bob"}}); err != nil {
			t.Fatal(err)
		}
		b := bob.UserID.String()
		send := func(txn string, target string, n int) {
			keysMustCall(t, alice, "PUT", "/_matrix/client/v3/sendToDevice/m.test/"+txn, map[string]any{
				"messages": map[string]any{b: map[string]any{target: map[string]int{"n": n}}}})
		}
		send("t1", "*", 1)
		send("t1", "*", 1) // retry: stored once
		send("t2", bob.DeviceID.String(), 2)
		send("t3", "UNKNOWN", 3)
		m1, _ := srv.Keys.ToDeviceSince(ctx, b, bob.DeviceID.String(), 0, 10)
		m2, _ := srv.Keys.ToDeviceSince(ctx, b, bob2.DeviceID.String(), 0, 10)
		if len(m1) != 2 || len(m2) != 1 || m1[0].Sender != alice.UserID.String() || m1[0].Type != "m.test" {
			t.Fatalf("device 1 got %v, device 2 got %v", m1, m2)
		}
		// Acknowledge up to the first; the second stays.
		_ = srv.Keys.DeleteToDeviceUpTo(ctx, b, bob.DeviceID.String(), m1[0].StreamPos)
		if left, _ := srv.Keys.ToDeviceSince(ctx, b, bob.DeviceID.String(), 0, 10); len(left) != 1 || left[0].StreamPos != m1[1].StreamPos {
			t.Fatalf("after ack: %v", left)
		}
		// The per-device queue is bounded: the oldest are dropped.
		srv.Keys.MaxPendingToDevice = 3
		for i := 0; i < 5; i++ {
			send(fmt.Sprintf("cap%d", i), bob2.DeviceID.String(), 10+i)
		}
		if q, _ := srv.Keys.ToDeviceSince(ctx, b, bob2.DeviceID.String(), 0, 10); len(q) != 3 || !strings.Contains(string(q[0].Content), "12") {
			t.Fatalf("bounded queue = %d messages, first %s", len(q), q[0].Content)
		}

		// Logging out deletes the device: the accounts hook drops its pending messages.
		if _, err := bob2.Logout(ctx); err != nil {
			t.Fatal(err)
		}
		if q, _ := srv.Keys.ToDeviceSince(ctx, b, bob2.DeviceID.String(), 0, 10); len(q) != 0 {
			t.Fatalf("logged-out device's messages remain: %d", len(q))
		}

		// Deleting a device removes its keys and pending messages.
		uploadDevice(t, bob, 3)
		before := srv.DB.Stream.Current()
		if err := srv.Keys.DeleteDevices(ctx, b, []string{bob.DeviceID.String()}); err != nil {
			t.Fatal(err)
		}
		q := keysMustCall(t, alice, "POST", "/_matrix/client/v3/keys/query", map[string]any{"device_keys": map[string]any{b: []string{}}})
		if len(obj(obj(q["device_keys"])[b])) != 0 {
			t.Fatalf("deleted device still queried: %v", q)
		}
		if kid, _ := claimOne(t, alice, b, bob.DeviceID.String()); kid != "" {
			t.Fatalf("deleted device's key claimed: %s", kid)
		}
		if left, _ := srv.Keys.ToDeviceSince(ctx, b, bob.DeviceID.String(), 0, 10); len(left) != 0 {
			t.Fatalf("deleted device's messages remain: %v", left)
		}
		if changed, _, _ := srv.Keys.DeviceListChanges(ctx, alice.UserID.String(), before, srv.DB.Stream.Current()); len(changed) != 1 || changed[0] != b {
			t.Fatalf("device-list changes after deletion = %v", changed)
		}
	})
}

func TestDehydratedDevice(t *testing.T) {
	srv := testserver.Start(t, "sqlite")
	alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
	a := alice.UserID.String()
	const base = "/_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device"
	d := newTestDevice(a, "DEHYDRATED1")
	out := keysMustCall(t, alice, "PUT", base, map[string]any{
		"device_id": d.device, "device_data": map[string]any{"algorithm": "org.matrix.msc3814.v2", "x": 1},
		"device_keys": d.deviceKeys(t), "one_time_keys": d.oneTimeKeys(t, "d", 2),
		"fallback_keys": map[string]any{"signed_curve25519:f": d.signedKey(t, true)},
	})
	if out["device_id"] != d.device {
		t.Fatalf("put = %v", out)
	}
	if got := keysMustCall(t, alice, "GET", base, nil); got["device_id"] != d.device || obj(got["device_data"])["x"] != float64(1) {
		t.Fatalf("get = %v", got)
	}
	if kid, _ := claimOne(t, bob, a, d.device); !strings.HasPrefix(kid, "signed_curve25519:d") {
		t.Fatalf("claim from dehydrated device = %q", kid)
	}
	for i := 0; i < 3; i++ {
		keysMustCall(t, bob, "PUT", fmt.Sprintf("/_matrix/client/v3/sendToDevice/m.test/d%d", i), map[string]any{
			"messages": map[string]any{a: map[string]any{d.device: map[string]int{"i": i}}}})
	}
	ev := keysMustCall(t, alice, "POST", base+"/"+d.device+"/events", map[string]any{})
	if len(ev["events"].([]any)) != 3 || ev["next_batch"] == nil {
		t.Fatalf("events = %v", ev)
	}
	if ev2 := keysMustCall(t, alice, "POST", base+"/"+d.device+"/events", map[string]any{"next_batch": ev["next_batch"]}); len(ev2["events"].([]any)) != 0 || ev2["next_batch"] != nil {
		t.Fatalf("second batch = %v", ev2)
	}
	// Events are not deleted by reading them.
	if again := keysMustCall(t, alice, "GET", base+"/"+d.device+"/events", nil); len(again["events"].([]any)) != 3 {
		t.Fatalf("re-read = %v", again)
	}
	if got := keysMustCall(t, alice, "DELETE", base, nil); got["device_id"] != d.device {
		t.Fatalf("delete = %v", got)
	}
	if status, _ := keysCall(t, alice, "GET", base, nil); status != http.StatusNotFound {
		t.Fatalf("after delete = %d", status)
	}
	q := keysMustCall(t, bob, "POST", "/_matrix/client/v3/keys/query", map[string]any{"device_keys": map[string]any{a: []string{}}})
	if obj(obj(q["device_keys"])[a])[d.device] != nil {
		t.Fatalf("deleted dehydrated device still queried")
	}
}
