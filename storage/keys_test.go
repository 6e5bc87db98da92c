package storage_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"

	"github.com/myelin-chat/myelin/storage"
)

func otk(id string) storage.OneTimeKey {
	return storage.OneTimeKey{Algorithm: "signed_curve25519", KeyID: id, KeyJSON: []byte(`{"key":"` + id + `"}`)}
}

func uploadOTKs(t *testing.T, db *storage.DB, user, device string, ids ...string) {
	t.Helper()
	up := storage.KeyUpload{UserID: user, DeviceID: device}
	for _, id := range ids {
		up.OneTimeKeys = append(up.OneTimeKeys, otk(id))
	}
	if _, err := db.UploadKeys(context.Background(), up); err != nil {
		t.Fatal(err)
	}
}

func claimOne(t *testing.T, db *storage.DB, user, device string) string {
	t.Helper()
	got, err := db.ClaimKeys(context.Background(), []storage.KeyClaim{{UserID: user, DeviceID: device, Algorithm: "signed_curve25519"}})
	if err != nil {
		t.Fatal(err)
	}
	switch len(got) {
	case 0:
		return ""
	case 1:
		return got[0].KeyID
	}
	t.Fatalf("one claim answered %d keys", len(got))
	return ""
}

func TestDeviceKeysUploadAndChanges(t *testing.T) {
	ctx := context.Background()
	forEachBackend(t, func(t *testing.T, db *storage.DB) {
		_, err := db.DeviceKeyEd25519(ctx, "@a:x", "D")
		wantNotFound(t, "device without keys", err)

		dk := func(ed, js string) *storage.DeviceKeys {
			return &storage.DeviceKeys{UserID: "@a:x", DeviceID: "D", Ed25519: ed, KeyJSON: []byte(js)}
		}
		up := func(keys *storage.DeviceKeys, pos int64) bool {
			t.Helper()
			changed, err := db.UploadKeys(ctx, storage.KeyUpload{UserID: "@a:x", DeviceID: "D", DeviceKeys: keys, StreamPos: pos})
			must(t, err)
			return changed
		}
		if !up(dk("ed1", `{"v":1}`), 10) {
			t.Fatal("first upload of device keys not reported as a change")
		}
		if up(dk("ed1", `{"v":1}`), 20) {
			t.Fatal("re-uploading identical device keys reported as a change")
		}
		changed := func(from, to int64) []string {
			t.Helper()
			users, err := db.DeviceListChangedBetween(ctx, from, to)
			must(t, err)
			return users
		}
		if got := changed(9, 10); !slices.Equal(got, []string{"@a:x"}) {
			t.Fatalf("changes in (9,10] = %v", got)
		}
		if got := changed(10, 30); len(got) != 0 {
			t.Fatalf("an unchanged upload recorded a change: %v", got)
		}

		// A signature on the keys is dropped when the identity key changes.
		must(t, db.AddSignatures(ctx, []storage.KeySignature{{TargetUserID: "@a:x", TargetKeyID: "D",
			SignerUserID: "@a:x", SignerKeyID: "ed25519:ssk", Signature: "sig"}}, []string{"@a:x"}, 15))
		if up(dk("ed1", `{"v":2}`), 16) != true {
			t.Fatal("changed device keys not reported")
		}
		if sigs, err := db.SignaturesOn(ctx, []string{"@a:x"}); err != nil || len(sigs) != 1 {
			t.Fatalf("signature lost on a change that kept the identity key: %v, %v", sigs, err)
		}
		up(dk("ed2", `{"v":3}`), 17)
		if sigs, err := db.SignaturesOn(ctx, []string{"@a:x"}); err != nil || len(sigs) != 0 {
			t.Fatalf("signature over the old identity key kept: %v, %v", sigs, err)
		}
		if k, err := db.DeviceKeyEd25519(ctx, "@a:x", "D"); err != nil || k != "ed2" {
			t.Fatalf("DeviceKeyEd25519 = %q, %v", k, err)
		}
		keys, err := db.QueryDeviceKeys(ctx, []string{"@a:x", "@nobody:x"})
		if err != nil || len(keys) != 1 || string(keys["@a:x"]["D"]) != `{"v":3}` {
			t.Fatalf("QueryDeviceKeys = %v, %v", keys, err)
		}
		if got := changed(16, 17); !slices.Equal(got, []string{"@a:x"}) {
			t.Fatalf("changes in (16,17] = %v", got)
		}
	})
}

func TestCrossSigningAndSignatures(t *testing.T) {
	ctx := context.Background()
	forEachBackend(t, func(t *testing.T, db *storage.DB) {
		must(t, db.SetCrossSigningKeys(ctx, "@a:x", map[string]storage.CrossSigningKey{
			"master": {PublicKey: "mk1", KeyJSON: []byte(`{"m":1}`)}, "self_signing": {PublicKey: "ssk", KeyJSON: []byte(`{"s":1}`)},
		}, 5, 1))
		must(t, db.SetCrossSigningKeys(ctx, "@a:x", map[string]storage.CrossSigningKey{"master": {PublicKey: "mk2", KeyJSON: []byte(`{"m":2}`)}}, 6, 2))
		keys, err := db.CrossSigningKeys(ctx, []string{"@a:x", "@b:x"})
		if err != nil || len(keys) != 1 || keys["@a:x"]["master"].PublicKey != "mk2" || keys["@a:x"]["self_signing"].PublicKey != "ssk" {
			t.Fatalf("CrossSigningKeys = %+v, %v", keys, err)
		}
		// @b signing @a's master key is a change of @a's keys for @b alone.
		sig := storage.KeySignature{TargetUserID: "@a:x", TargetKeyID: "mk2", SignerUserID: "@b:x", SignerKeyID: "ed25519:busk", Signature: "s1"}
		must(t, db.AddSignatures(ctx, []storage.KeySignature{sig}, nil, 7))
		sig.Signature = "s2"
		must(t, db.AddSignatures(ctx, []storage.KeySignature{sig}, nil, 8)) // replaces
		sigs, err := db.SignaturesOn(ctx, []string{"@a:x"})
		if err != nil || len(sigs) != 1 || sigs[0].Signature != "s2" {
			t.Fatalf("SignaturesOn = %+v, %v", sigs, err)
		}
		if got, err := db.DeviceListChangedFor(ctx, "@b:x", 7, 8); err != nil || !slices.Equal(got, []string{"@a:x"}) {
			t.Fatalf("DeviceListChangedFor(@b, 7, 8) = %v, %v", got, err)
		}
		if got, err := db.DeviceListChangedFor(ctx, "@c:x", 0, 100); err != nil || len(got) != 0 {
			t.Fatalf("another viewer saw the change: %v, %v", got, err)
		}
		if got, err := db.DeviceListChangedBetween(ctx, 6, 100); err != nil || len(got) != 0 {
			t.Fatalf("a signature by another user changed @a's device list for everyone: %v, %v", got, err)
		}
	})
}

// Claims take the oldest one-time key first (by upload, not by key ID), then
// the fallback key, which stays claimable.
func TestClaimKeysOldestFirstThenFallback(t *testing.T) {
	ctx := context.Background()
	forEachBackend(t, func(t *testing.T, db *storage.DB) {
		uploadOTKs(t, db, "@a:x", "D", "BBBB", "CCCC")
		uploadOTKs(t, db, "@a:x", "D", "AAAA") // sorts first, uploaded last
		if counts, err := db.OneTimeKeyCounts(ctx, "@a:x", "D"); err != nil || counts["signed_curve25519"] != 3 {
			t.Fatalf("OneTimeKeyCounts = %v, %v", counts, err)
		}
		if got := claimOne(t, db, "@a:x", "D"); got != "BBBB" {
			t.Fatalf("first claim took %q, want the oldest BBBB", got)
		}
		if got := claimOne(t, db, "@a:x", "D"); got != "CCCC" {
			t.Fatalf("second claim took %q, want CCCC", got)
		}
		_, err := db.UploadKeys(ctx, storage.KeyUpload{UserID: "@a:x", DeviceID: "D", FallbackKeys: []storage.OneTimeKey{otk("FB1")}})
		must(t, err)
		if types, err := db.UnusedFallbackKeyTypes(ctx, "@a:x", "D"); err != nil || !slices.Equal(types, []string{"signed_curve25519"}) {
			t.Fatalf("UnusedFallbackKeyTypes = %v, %v", types, err)
		}
		if got := claimOne(t, db, "@a:x", "D"); got != "AAAA" {
			t.Fatalf("third claim took %q, want the last one-time key before the fallback", got)
		}
		for range 2 { // the fallback key is handed out again and again
			if got := claimOne(t, db, "@a:x", "D"); got != "FB1" {
				t.Fatalf("claim with no one-time keys left took %q, want the fallback key", got)
			}
		}
		if types, err := db.UnusedFallbackKeyTypes(ctx, "@a:x", "D"); err != nil || types == nil || len(types) != 0 {
			t.Fatalf("UnusedFallbackKeyTypes after a claim = %#v, %v; want an empty list", types, err)
		}
		// Re-uploading the same fallback key keeps it used; a new one is unused.
		_, err = db.UploadKeys(ctx, storage.KeyUpload{UserID: "@a:x", DeviceID: "D", FallbackKeys: []storage.OneTimeKey{otk("FB1")}})
		must(t, err)
		if types, _ := db.UnusedFallbackKeyTypes(ctx, "@a:x", "D"); len(types) != 0 {
			t.Fatalf("re-uploaded fallback key became unused: %v", types)
		}
		_, err = db.UploadKeys(ctx, storage.KeyUpload{UserID: "@a:x", DeviceID: "D", FallbackKeys: []storage.OneTimeKey{otk("FB2")}})
		must(t, err)
		if types, _ := db.UnusedFallbackKeyTypes(ctx, "@a:x", "D"); len(types) != 1 {
			t.Fatalf("a new fallback key is not unused: %v", types)
		}
		if got := claimOne(t, db, "@a:x", "D"); got != "FB2" {
			t.Fatalf("claim took %q, want the new fallback key", got)
		}
		// Devices without keys, and other algorithms, are left out of the answer.
		got, err := db.ClaimKeys(ctx, []storage.KeyClaim{
			{UserID: "@a:x", DeviceID: "NOKEYS", Algorithm: "signed_curve25519"},
			{UserID: "@nobody:x", DeviceID: "D", Algorithm: "signed_curve25519"},
			{UserID: "@a:x", DeviceID: "D", Algorithm: "other_alg"},
		})
		if err != nil || len(got) != 0 {
			t.Fatalf("claims that can't be met answered %+v, %v", got, err)
		}
	})
}

// Concurrent claimers of one device's keys each take a different key.
func TestClaimKeysConcurrentClaimersTakeDifferentKeys(t *testing.T) {
	ctx := context.Background()
	forEachBackend(t, func(t *testing.T, db *storage.DB) {
		const claimers, each = 8, 5
		var ids []string
		for i := range claimers * each {
			ids = append(ids, fmt.Sprintf("K%03d", i))
		}
		uploadOTKs(t, db, "@a:x", "D", ids...)
		var mu sync.Mutex
		var wg sync.WaitGroup
		taken := map[string]int{}
		for range claimers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				claims := make([]storage.KeyClaim, each)
				for i := range claims {
					claims[i] = storage.KeyClaim{UserID: "@a:x", DeviceID: "D", Algorithm: "signed_curve25519"}
				}
				got, err := db.ClaimKeys(ctx, claims)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					t.Errorf("ClaimKeys: %v", err)
				}
				for _, k := range got {
					taken[k.KeyID]++
				}
			}()
		}
		wg.Wait()
		if len(taken) != claimers*each {
			t.Fatalf("%d distinct keys handed out, want %d", len(taken), claimers*each)
		}
		for k, n := range taken {
			if n != 1 {
				t.Fatalf("key %s handed out %d times", k, n)
			}
		}
		if counts, _ := db.OneTimeKeyCounts(ctx, "@a:x", "D"); counts["signed_curve25519"] != 0 {
			t.Fatalf("%d keys left after every key was claimed", counts["signed_curve25519"])
		}
	})
}

// An upload that breaks a rule (conflicting key, too many keys) changes
// nothing, device keys included.
func TestUploadKeysAllOrNothing(t *testing.T) {
	ctx := context.Background()
	forEachBackend(t, func(t *testing.T, db *storage.DB) {
		uploadOTKs(t, db, "@a:x", "D", "AAAA")
		uploadOTKs(t, db, "@a:x", "D", "AAAA") // same content: accepted, stored once
		dk := &storage.DeviceKeys{UserID: "@a:x", DeviceID: "D", Ed25519: "ed", KeyJSON: []byte(`{}`)}
		bad := otk("AAAA")
		bad.KeyJSON = []byte(`{"key":"different"}`)
		_, err := db.UploadKeys(ctx, storage.KeyUpload{UserID: "@a:x", DeviceID: "D", DeviceKeys: dk,
			OneTimeKeys: []storage.OneTimeKey{otk("BBBB"), bad}, StreamPos: 5})
		var conflict *storage.KeyConflictError
		if !errors.As(err, &conflict) || conflict.KeyID != "signed_curve25519:AAAA" {
			t.Fatalf("conflicting upload: %v", err)
		}
		if counts, _ := db.OneTimeKeyCounts(ctx, "@a:x", "D"); counts["signed_curve25519"] != 1 {
			t.Fatalf("a failed upload left %d one-time keys, want 1", counts["signed_curve25519"])
		}
		_, err = db.DeviceKeyEd25519(ctx, "@a:x", "D")
		wantNotFound(t, "device keys of a failed upload", err)
		if got, _ := db.DeviceListChangedBetween(ctx, 0, 100); len(got) != 0 {
			t.Fatalf("a failed upload recorded a device-list change: %v", got)
		}

		_, err = db.UploadKeys(ctx, storage.KeyUpload{UserID: "@a:x", DeviceID: "D", DeviceKeys: dk,
			OneTimeKeys: []storage.OneTimeKey{otk("BBBB"), otk("CCCC")}, MaxOneTimeKeys: 2, StreamPos: 6})
		var limit *storage.KeyLimitError
		if !errors.As(err, &limit) || limit.Held != 3 || limit.Max != 2 {
			t.Fatalf("upload past the limit: %v", err)
		}
		if counts, _ := db.OneTimeKeyCounts(ctx, "@a:x", "D"); counts["signed_curve25519"] != 1 {
			t.Fatalf("an upload past the limit left %d one-time keys", counts["signed_curve25519"])
		}
		// Re-uploaded keys count once toward the limit.
		_, err = db.UploadKeys(ctx, storage.KeyUpload{UserID: "@a:x", DeviceID: "D",
			OneTimeKeys: []storage.OneTimeKey{otk("AAAA"), otk("BBBB")}, MaxOneTimeKeys: 2})
		must(t, err)
	})
}

func TestDeleteDeviceKeys(t *testing.T) {
	ctx := context.Background()
	forEachBackend(t, func(t *testing.T, db *storage.DB) {
		for _, d := range []string{"D1", "D2"} {
			_, err := db.UploadKeys(ctx, storage.KeyUpload{UserID: "@a:x", DeviceID: d, StreamPos: 1,
				DeviceKeys:   &storage.DeviceKeys{UserID: "@a:x", DeviceID: d, Ed25519: "ed" + d, KeyJSON: []byte(`{"d":"` + d + `"}`)},
				OneTimeKeys:  []storage.OneTimeKey{otk("K" + d)},
				FallbackKeys: []storage.OneTimeKey{otk("F" + d)}})
			must(t, err)
		}
		if changed, err := db.DeleteDeviceKeys(ctx, "@a:x", []string{"NONE"}, 5); err != nil || changed {
			t.Fatalf("deleting keys of a device without any: %v, %v", changed, err)
		}
		if got, _ := db.DeviceListChangedBetween(ctx, 1, 100); len(got) != 0 {
			t.Fatalf("deleting nothing recorded a change: %v", got)
		}
		if changed, err := db.DeleteDeviceKeys(ctx, "@a:x", []string{"D1"}, 6); err != nil || !changed {
			t.Fatalf("DeleteDeviceKeys(D1) = %v, %v", changed, err)
		}
		if got, _ := db.DeviceListChangedBetween(ctx, 5, 6); !slices.Equal(got, []string{"@a:x"}) {
			t.Fatalf("deleting keys recorded changes %v", got)
		}
		keys, _ := db.QueryDeviceKeys(ctx, []string{"@a:x"})
		if !slices.Equal(slices.Sorted(maps.Keys(keys["@a:x"])), []string{"D2"}) {
			t.Fatalf("device keys left: %v", keys)
		}
		if got := claimOne(t, db, "@a:x", "D1"); got != "" {
			t.Fatalf("a deleted device's key %q was claimed", got)
		}
		if got := claimOne(t, db, "@a:x", "D2"); got != "KD2" {
			t.Fatalf("the other device's key: %q", got)
		}
	})
}

func TestDehydratedDevice(t *testing.T) {
	ctx := context.Background()
	forEachBackend(t, func(t *testing.T, db *storage.DB) {
		_, err := db.GetDehydratedDevice(ctx, "@a:x")
		wantNotFound(t, "no dehydrated device", err)
		put := func(device string, pos int64) {
			t.Helper()
			must(t, db.PutDehydratedDevice(ctx, "@a:x", storage.DehydratedDevice{DeviceID: device, DeviceData: []byte(`{"d":"` + device + `"}`), DisplayName: "Dehydrated"},
				storage.KeyUpload{UserID: "@a:x", DeviceID: device, StreamPos: pos, OneTimeKeys: []storage.OneTimeKey{otk("K" + device)},
					DeviceKeys: &storage.DeviceKeys{UserID: "@a:x", DeviceID: device, Ed25519: "e", KeyJSON: []byte(`{"d":"` + device + `"}`), Dehydrated: true}}))
		}
		put("DH1", 1)
		put("DH2", 2) // replaces DH1 and its keys
		d, err := db.GetDehydratedDevice(ctx, "@a:x")
		if err != nil || d.DeviceID != "DH2" || string(d.DeviceData) != `{"d":"DH2"}` {
			t.Fatalf("GetDehydratedDevice = %+v, %v", d, err)
		}
		keys, _ := db.QueryDeviceKeys(ctx, []string{"@a:x"})
		if !slices.Equal(slices.Sorted(maps.Keys(keys["@a:x"])), []string{"DH2"}) {
			t.Fatalf("device keys after replacing the dehydrated device: %v", keys)
		}
		if got := claimOne(t, db, "@a:x", "DH1"); got != "" {
			t.Fatalf("the replaced dehydrated device's key %q was claimed", got)
		}
		names, err := db.DeviceDisplayNames(ctx, []string{"@a:x"})
		if err != nil || names["@a:x"]["DH2"] != "Dehydrated" {
			t.Fatalf("DeviceDisplayNames = %v, %v", names, err)
		}
	})
}
