package tests

import (
	"crypto/ed25519"
	"slices"
	"testing"

	"maunium.net/go/mautrix"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

// crossSign uploads master, self-signing and user-signing keys for c and
// returns the master public key and the user-signing private key.
func crossSign(t *testing.T, c *mautrix.Client) (master string, usk ed25519.PrivateKey, uskPub string) {
	t.Helper()
	user := c.UserID.String()
	mPriv, m := newSigningKey()
	_, s := newSigningKey()
	uPriv, u := newSigningKey()
	keysMustCall(t, c, "POST", "/_matrix/client/v3/keys/device_signing/upload", map[string]any{
		"master_key":       map[string]any{"user_id": user, "usage": []string{"master"}, "keys": map[string]string{"ed25519:" + m: m}},
		"self_signing_key": sign(t, map[string]any{"user_id": user, "usage": []string{"self_signing"}, "keys": map[string]string{"ed25519:" + s: s}}, user, m, mPriv),
		"user_signing_key": sign(t, map[string]any{"user_id": user, "usage": []string{"user_signing"}, "keys": map[string]string{"ed25519:" + u: u}}, user, m, mPriv),
	})
	return m, uPriv, u
}

// TestSigningAnotherUserReportsThemToTheSigner: after alice verifies bob
// (her user-signing key signs bob's master key), alice's /sync
// device_lists.changed and /keys/changes name bob, so that her clients refetch
// his keys and show him verified (nheko kept him unverified until a manual
// refresh). Nobody else is told: carol, who shares a room with bob, does not
// see bob changed, and bob does not see the signature.
func TestSigningAnotherUserReportsThemToTheSigner(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		alice, bob, carol := srv.Register(t, "alice"), srv.Register(t, "bob"), srv.Register(t, "carol")
		shareRoom(t, alice, bob)
		shareRoom(t, carol, bob)
		uploadDevice(t, alice, 0)
		uploadDevice(t, bob, 0)
		_, aliceUSK, aliceUSKPub := crossSign(t, alice)
		bobMaster, _, _ := crossSign(t, bob)

		aliceSince := syncOnce(t, alice, "", "", 0).NextBatch
		carolSince := syncOnce(t, carol, "", "", 0).NextBatch
		b := bob.UserID.String()
		signed := sign(t, map[string]any{"user_id": b, "usage": []string{"master"}, "keys": map[string]string{"ed25519:" + bobMaster: bobMaster}},
			alice.UserID.String(), aliceUSKPub, aliceUSK)
		if out := keysMustCall(t, alice, "POST", "/_matrix/client/v3/keys/signatures/upload", map[string]any{b: map[string]any{bobMaster: signed}}); len(obj(out["failures"])) != 0 {
			t.Fatalf("signature upload failures: %v", out)
		}

		resp := syncUntil(t, alice, aliceSince, "", func(r *mautrix.RespSync) bool { return slices.Contains(r.DeviceLists.Changed, bob.UserID) })
		ch := clientCall(t, alice, "GET", "/_matrix/client/v3/keys/changes?from="+aliceSince+"&to="+resp.NextBatch, nil)
		if changed, _ := ch.Body["changed"].([]any); !slices.Contains(changed, any(b)) {
			t.Fatalf("alice's /keys/changes = %s, want bob in changed", ch.Raw)
		}
		carolNow := syncOnce(t, carol, carolSince, "", 0)
		if slices.Contains(carolNow.DeviceLists.Changed, bob.UserID) {
			t.Fatalf("carol told that bob's keys changed: %v", carolNow.DeviceLists.Changed)
		}
		q := keysMustCall(t, bob, "POST", "/_matrix/client/v3/keys/query", map[string]any{"device_keys": map[string]any{b: []string{}}})
		if obj(obj(obj(q["master_keys"])[b])["signatures"])[alice.UserID.String()] != nil {
			t.Fatalf("bob sees alice's signature on his master key: %v", q["master_keys"])
		}
	})
}
