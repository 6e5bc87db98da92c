package keyserver

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"testing"
)

// TestSignaturesOnRemoteMasterKey: alice (local) verifies bob of
// remote.example by signing his master key with her user-signing key. The
// signature is checked against bob's master key as his server gives it,
// stored, and shown in alice's /keys/query of bob, not in another local
// user's; a signature that does not verify, or on a key bob does not have,
// is a failure and stores nothing.
func TestSignaturesOnRemoteMasterKey(t *testing.T) {
	forBackends(t, func(t *testing.T, backend string) {
		e := newRemoteEnv(t, backend)
		ctx := context.Background()
		alice := "@alice:local.example"
		// alice's cross-signing keys: master, and user-signing signed by it.
		mpub, mpriv, _ := ed25519.GenerateKey(rand.Reader)
		upub, upriv, _ := ed25519.GenerateKey(rand.Reader)
		master := map[string]any{"user_id": alice, "usage": []string{"master"}, "keys": map[string]string{"ed25519:" + b64(mpub): b64(mpub)}}
		usk := map[string]any{"user_id": alice, "usage": []string{"user_signing"}, "keys": map[string]string{"ed25519:" + b64(upub): b64(upub)}}
		sign(t, usk, alice, b64(mpub), mpriv)
		if err := e.s.UploadDeviceSigningKeys(ctx, alice, &DeviceSigningRequest{MasterKey: marshal(t, master), UserSigningKey: marshal(t, usk)}); err != nil {
			t.Fatal(err)
		}

		bobMaster := map[string]any{}
		if err := json.Unmarshal(e.fed.lists[e.bob].MasterKey, &bobMaster); err != nil {
			t.Fatal(err)
		}
		var bobPub string
		for _, v := range bobMaster["keys"].(map[string]any) {
			bobPub = v.(string)
		}
		forged := map[string]any{}
		_ = json.Unmarshal(e.fed.lists[e.bob].MasterKey, &forged)
		_, otherPriv, _ := ed25519.GenerateKey(rand.Reader)
		sign(t, forged, alice, b64(upub), otherPriv)
		resp, err := e.s.UploadSignatures(ctx, alice, map[string]map[string]json.RawMessage{e.bob: {bobPub: marshal(t, forged)}})
		if err != nil {
			t.Fatal(err)
		}
		if f, _ := resp.Failures[e.bob][bobPub].(map[string]string); f["errcode"] != "M_INVALID_SIGNATURE" {
			t.Fatalf("a forged signature: failures %v", resp.Failures)
		}
		resp, err = e.s.UploadSignatures(ctx, alice, map[string]map[string]json.RawMessage{e.bob: {"notBobsKey": marshal(t, forged)}})
		if err != nil {
			t.Fatal(err)
		}
		if f, _ := resp.Failures[e.bob]["notBobsKey"].(map[string]string); f["errcode"] != "M_NOT_FOUND" {
			t.Fatalf("a key bob does not have: failures %v", resp.Failures)
		}

		sign(t, bobMaster, alice, b64(upub), upriv)
		resp, err = e.s.UploadSignatures(ctx, alice, map[string]map[string]json.RawMessage{e.bob: {bobPub: marshal(t, bobMaster)}})
		if err != nil || len(resp.Failures) != 0 {
			t.Fatalf("alice signing bob's master key: %v, failures %v", err, resp.Failures)
		}
		sigsOnBob := func(requester string) map[string]map[string]string {
			t.Helper()
			q, err := e.s.Query(ctx, requester, &QueryRequest{DeviceKeys: map[string][]string{e.bob: nil}})
			if err != nil {
				t.Fatal(err)
			}
			return signaturesOf(q.MasterKeys[e.bob])
		}
		mine := sigsOnBob(alice)
		if mine[alice]["ed25519:"+b64(upub)] == "" {
			t.Fatalf("alice's query of bob's master key: signatures %v", mine)
		}
		if theirs := sigsOnBob("@carol:local.example"); theirs[alice] != nil {
			t.Fatalf("carol sees alice's signature on bob's master key: %v", theirs)
		}
	})
}
