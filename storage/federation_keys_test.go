package storage_test

import (
	"context"
	"testing"

	"github.com/myelin-chat/myelin/storage"
)

// Stored server keys never move backwards: a stale response (e.g. a notary's
// old cache) does not shorten a key's validity nor un-expire an old key.
func TestServerKeysNeverRegress(t *testing.T) {
	ctx := context.Background()
	for backend, db := range openBackends(t) {
		t.Run(backend, func(t *testing.T) {
			key := func(validUntil, expired int64, json string) storage.ServerKey {
				return storage.ServerKey{ServerName: "b.test", KeyID: "ed25519:k", VerifyKey: "pub",
					ValidUntilTS: validUntil, ExpiredTS: expired, KeyJSON: json, FetchedTS: validUntil + expired}
			}
			get := func() storage.ServerKey {
				t.Helper()
				k, err := db.GetServerKey(ctx, "b.test", "ed25519:k")
				if err != nil {
					t.Fatal(err)
				}
				return *k
			}
			if _, err := db.GetServerKey(ctx, "b.test", "ed25519:k"); err != storage.ErrNotFound {
				t.Fatalf("missing key: %v", err)
			}
			must := func(err error) {
				t.Helper()
				if err != nil {
					t.Fatal(err)
				}
			}
			must(db.StoreServerKeys(ctx, []storage.ServerKey{key(2000, 0, `{"v":2}`)}))
			must(db.StoreServerKeys(ctx, []storage.ServerKey{key(1000, 0, `{"v":1}`)})) // stale
			if k := get(); k.ValidUntilTS != 2000 || k.KeyJSON != `{"v":2}` {
				t.Fatalf("stale response won: %+v", k)
			}
			must(db.StoreServerKeys(ctx, []storage.ServerKey{key(3000, 0, `{"v":3}`)}))
			if k := get(); k.ValidUntilTS != 3000 {
				t.Fatalf("fresher response lost: %+v", k)
			}
			must(db.StoreServerKeys(ctx, []storage.ServerKey{key(0, 2500, `{"old":1}`)})) // retired
			must(db.StoreServerKeys(ctx, []storage.ServerKey{key(9000, 0, `{"v":9}`)}))   // stale "current"
			if k := get(); k.ExpiredTS != 2500 {
				t.Fatalf("an expired key came back to life: %+v", k)
			}
			all, err := db.ServerKeys(ctx, "b.test")
			if err != nil || len(all) != 1 {
				t.Fatalf("ServerKeys: %v %v", all, err)
			}
		})
	}
}
