package storage_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/myelin-chat/myelin/internal/pgtest"
	"github.com/myelin-chat/myelin/storage"
)

// Stored server keys never move backwards: a stale response (e.g. a notary's
// old cache) does not shorten a key's validity nor un-expire an old key.
func TestServerKeysNeverRegress(t *testing.T) {
	ctx := context.Background()
	for backend, db := range openBackends(t) {
		t.Run(backend, func(t *testing.T) {
			key := func(validUntil, expired int64, pub string) storage.ServerKey {
				return storage.ServerKey{ServerName: "b.test", KeyID: "ed25519:k", VerifyKey: pub,
					ValidUntilTS: validUntil, ExpiredTS: expired, FetchedTS: validUntil + expired}
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
			if k := get(); k.ValidUntilTS != 2000 || k.VerifyKey != `{"v":2}` {
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

// A server's stored responses and keys are bounded however many distinct
// responses it serves: the latest responses (by validity) and the most
// recently fetched keys are kept; an identical response is stored once.
func TestServerKeyResponsesPruned(t *testing.T) {
	ctx := context.Background()
	for backend, db := range openBackends(t) {
		t.Run(backend, func(t *testing.T) {
			store := func(i int, json string, keys int) {
				t.Helper()
				resp := storage.ServerKeyResponse{ServerName: "evil.test", ValidUntilTS: int64(1000 + i), FetchedTS: int64(i), JSON: json}
				var ks []storage.ServerKey
				for j := range keys {
					ks = append(ks, storage.ServerKey{ServerName: "evil.test", KeyID: fmt.Sprintf("ed25519:r%d_%d", i, j),
						VerifyKey: "pub", ExpiredTS: 1, FetchedTS: int64(i)})
				}
				if err := db.StoreServerKeyResponse(ctx, resp, ks); err != nil {
					t.Fatal(err)
				}
			}
			for i := range 10 {
				store(i, fmt.Sprintf(`{"n":%d}`, i), 60)
			}
			store(10, `{"n":9}`, 0) // the same response again, fetched later
			resps, err := db.ServerKeyResponses(ctx, "evil.test")
			if err != nil {
				t.Fatal(err)
			}
			if len(resps) != storage.KeptServerKeyResponses || resps[0].JSON != `{"n":9}` || resps[0].FetchedTS != 10 ||
				resps[0].ValidUntilTS != 1010 || resps[1].JSON != `{"n":8}` {
				t.Fatalf("kept responses: %+v", resps)
			}
			var n int
			if err := db.QueryRow(ctx, `SELECT COUNT(*) FROM server_key_responses WHERE server_name = 'evil.test'`).Scan(&n); err != nil || n != 2 {
				t.Fatalf("%d response rows (%v)", n, err)
			}
			keys, err := db.ServerKeys(ctx, "evil.test")
			if err != nil || len(keys) != storage.KeptServerKeys {
				t.Fatalf("%d keys kept (%v)", len(keys), err)
			}
			if _, err := db.GetServerKey(ctx, "evil.test", "ed25519:r9_59"); err != nil {
				t.Fatalf("a key of the latest response was pruned: %v", err)
			}
			if _, err := db.GetServerKey(ctx, "evil.test", "ed25519:r0_0"); err != storage.ErrNotFound {
				t.Fatalf("the oldest key was kept: %v", err)
			}
			// Other servers are untouched by the pruning.
			if err := db.StoreServerKeys(ctx, []storage.ServerKey{{ServerName: "good.test", KeyID: "ed25519:a", VerifyKey: "p", ValidUntilTS: 5}}); err != nil {
				t.Fatal(err)
			}
			store(11, `{"n":11}`, 1)
			if _, err := db.GetServerKey(ctx, "good.test", "ed25519:a"); err != nil {
				t.Fatalf("another server's key was pruned: %v", err)
			}
		})
	}
}

// Migration 0090 on a store holding keys the old way (the whole response in
// every key row): each distinct response is kept once, the latest two per
// server, and each server keeps at most KeptServerKeys keys.
func TestServerKeysMigration(t *testing.T) {
	ctx := context.Background()
	for _, backend := range pgtest.Backends {
		t.Run(backend, func(t *testing.T) {
			url := pgtest.StoreURL(t, backend)
			db, err := storage.Open(ctx, url, 2)
			if err != nil {
				t.Fatal(err)
			}
			// Back to the schema before 0090, with old-style rows: a hostile
			// server with 300 keys over 5 responses, a good one with 2 keys in one.
			for _, q := range []string{
				`DROP TABLE server_key_responses`,
				`ALTER TABLE server_keys ADD COLUMN key_json TEXT NOT NULL DEFAULT ''`,
				`DELETE FROM schema_migrations WHERE version = 90`,
			} {
				if _, err := db.Exec(ctx, q); err != nil {
					t.Fatal(err)
				}
			}
			insert := func(server, keyID string, validUntil, fetched int64, json string) {
				if _, err := db.Exec(ctx, `INSERT INTO server_keys (server_name, key_id, verify_key, valid_until_ts, expired_ts, key_json, fetched_ts)
					VALUES ($1, $2, 'pub', $3, 0, $4, $5)`, server, keyID, validUntil, json, fetched); err != nil {
					t.Fatal(err)
				}
			}
			for i := range 300 {
				insert("evil.test", fmt.Sprintf("ed25519:k%d", i), int64(1000+i/60), int64(i), fmt.Sprintf(`{"r":%d}`, i/60))
			}
			insert("good.test", "ed25519:a", 5000, 1, `{"good":1}`)
			insert("good.test", "ed25519:b", 5000, 1, `{"good":1}`)
			db.Close()
			if db, err = storage.Open(ctx, url, 2); err != nil {
				t.Fatalf("migrating: %v", err)
			}
			defer db.Close()
			resps, err := db.ServerKeyResponses(ctx, "evil.test")
			if err != nil || len(resps) != 2 || resps[0].JSON != `{"r":4}` || resps[1].JSON != `{"r":3}` {
				t.Fatalf("evil.test responses: %+v %v", resps, err)
			}
			if keys, err := db.ServerKeys(ctx, "evil.test"); err != nil || len(keys) != storage.KeptServerKeys || keys[0].KeyID != "ed25519:k299" {
				t.Fatalf("evil.test keys: %d %v", len(keys), err)
			}
			resps, err = db.ServerKeyResponses(ctx, "good.test")
			if err != nil || len(resps) != 1 || resps[0].JSON != `{"good":1}` || resps[0].ValidUntilTS != 5000 {
				t.Fatalf("good.test responses: %+v %v", resps, err)
			}
			if keys, err := db.ServerKeys(ctx, "good.test"); err != nil || len(keys) != 2 {
				t.Fatalf("good.test keys: %d %v", len(keys), err)
			}
		})
	}
}
