package tests

import (
	"fmt"
	"strings"
	"testing"

	"github.com/myelin-chat/myelin/homeserver/testserver"
	"github.com/myelin-chat/myelin/keyserver"
)

// TestOneTimeKeyLimits: a device holds at most keyserver.MaxOneTimeKeys
// one-time keys (700,000 were accepted for one device); an upload past the
// bound is refused whole with a message naming it, re-uploads are counted
// once, and fallback keys and key IDs are bounded too.
func TestOneTimeKeyLimits(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice")
		d := uploadDevice(t, alice, 0)
		const path = "/_matrix/client/v3/keys/upload"
		count := func() any {
			return obj(keysMustCall(t, alice, "POST", path, map[string]any{})["one_time_key_counts"])["signed_curve25519"]
		}
		refused := func(what string, body map[string]any) {
			t.Helper()
			r := clientCall(t, alice, "POST", path, body)
			if r.Status != 400 || r.errcode() != "M_INVALID_PARAM" {
				t.Fatalf("%s: upload = %d %s, want 400 M_INVALID_PARAM", what, r.Status, r.Raw)
			}
		}

		max := keyserver.MaxOneTimeKeys
		tooMany := d.oneTimeKeys(t, "a", max+1)
		r := clientCall(t, alice, "POST", path, map[string]any{"one_time_keys": tooMany})
		if r.Status != 400 || r.errcode() != "M_INVALID_PARAM" || !strings.Contains(r.Raw, fmt.Sprint(max)) {
			t.Fatalf("upload of %d keys = %d %s, want 400 M_INVALID_PARAM naming %d", max+1, r.Status, r.Raw, max)
		}

		first := d.oneTimeKeys(t, "b", max-100)
		keysMustCall(t, alice, "POST", path, map[string]any{"one_time_keys": first})
		refused("upload past the bound", map[string]any{"one_time_keys": d.oneTimeKeys(t, "c", 101)})
		if got := count(); got != float64(max-100) {
			t.Fatalf("count after the refused upload = %v, want %d (nothing stored)", got, max-100)
		}
		keysMustCall(t, alice, "POST", path, map[string]any{"one_time_keys": first}) // the same keys again: no more held
		keysMustCall(t, alice, "POST", path, map[string]any{"one_time_keys": d.oneTimeKeys(t, "c", 100)})
		if got := count(); got != float64(max) {
			t.Fatalf("count = %v, want %d", got, max)
		}
		refused("one key past a full device", map[string]any{"one_time_keys": d.oneTimeKeys(t, "d", 1)})

		// Claiming makes room again.
		bob := srv.Register(t, "bob")
		if kid, _ := claimOne(t, bob, alice.UserID.String(), alice.DeviceID.String()); kid == "" {
			t.Fatal("claim found no key")
		}
		keysMustCall(t, alice, "POST", path, map[string]any{"one_time_keys": d.oneTimeKeys(t, "d", 1)})

		refused("long key ID", map[string]any{"one_time_keys": map[string]any{
			"signed_curve25519:" + strings.Repeat("x", 300): d.signedKey(t, false)}})
		fallbacks := map[string]any{}
		for i := 0; i <= keyserver.MaxFallbackKeys; i++ {
			fallbacks[fmt.Sprintf("alg%d:fb", i)] = randomKey()
		}
		refused("fallback keys of too many algorithms", map[string]any{"fallback_keys": fallbacks})
		// Fallback keys of many algorithms over several uploads hit the same bound.
		for i := 1; i < keyserver.MaxFallbackKeys; i++ { // the device has a signed_curve25519 one
			keysMustCall(t, alice, "POST", path, map[string]any{"fallback_keys": map[string]any{fmt.Sprintf("alg%d:fb", i): randomKey()}})
		}
		refused("one fallback algorithm too many", map[string]any{"fallback_keys": map[string]any{"alg99:fb": randomKey()}})
	})
}

// TestKeyClaimOrdering: /keys/claim hands out a device's oldest one-time key
// first, whatever the key IDs (as Complement's TestKeyClaimOrdering checks).
func TestKeyClaimOrdering(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		d := uploadDevice(t, alice, 0)
		for _, kid := range []string{"zz", "mm", "aa"} { // one upload each, newest sorts first
			keysMustCall(t, alice, "POST", "/_matrix/client/v3/keys/upload", map[string]any{
				"one_time_keys": map[string]any{"signed_curve25519:" + kid: d.signedKey(t, false)}})
		}
		for _, want := range []string{"zz", "mm", "aa"} {
			if kid, _ := claimOne(t, bob, alice.UserID.String(), alice.DeviceID.String()); kid != "signed_curve25519:"+want {
				t.Fatalf("claimed %q, want signed_curve25519:%s (oldest first)", kid, want)
			}
		}
	})
}

// TestDehydratedDeviceLimits: a dehydrated device's ID and display name have
// the bounds of a login's device.
func TestDehydratedDeviceLimits(t *testing.T) {
	srv := testserver.Start(t, "sqlite")
	alice := srv.Register(t, "alice")
	const path = "/_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device"
	put := func(deviceID, name string) rawResp {
		d := newTestDevice(alice.UserID.String(), deviceID)
		return clientCall(t, alice, "PUT", path, map[string]any{"device_id": deviceID, "device_data": map[string]any{"algorithm": "m.dehydration.v1.olm"},
			"initial_device_display_name": name, "device_keys": d.deviceKeys(t)})
	}
	if r := put(strings.Repeat("D", 300), "x"); r.Status != 400 || r.errcode() != "M_INVALID_PARAM" {
		t.Fatalf("300-byte device_id = %d %s, want 400 M_INVALID_PARAM", r.Status, r.Raw)
	}
	if r := put("DEHYDRATED", strings.Repeat("n", 5000)); r.Status != 400 || r.errcode() != "M_INVALID_PARAM" {
		t.Fatalf("5000-byte display name = %d %.200s, want 400 M_INVALID_PARAM", r.Status, r.Raw)
	}
	if r := put("DEHYDRATED", "Backup device"); r.Status != 200 {
		t.Fatalf("dehydrated device = %d %s", r.Status, r.Raw)
	}
}
