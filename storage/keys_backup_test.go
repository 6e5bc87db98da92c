package storage_test

import (
	"context"
	"errors"
	"testing"

	"github.com/myelin-chat/myelin/storage"
)

func TestBackupVersions(t *testing.T) {
	ctx := context.Background()
	forEachBackend(t, func(t *testing.T, db *storage.DB) {
		_, err := db.GetBackupVersion(ctx, "@a:x", 0)
		wantNotFound(t, "current version without any", err)
		_, _, err = db.PutBackupKeys(ctx, "@a:x", 1, []storage.BackupKey{{RoomID: "!r", SessionID: "s"}})
		wantNotFound(t, "keys into a version that does not exist", err)

		for want := int64(1); want <= 2; want++ {
			if v, err := db.CreateBackupVersion(ctx, "@a:x", "alg", []byte(`{"v":1}`)); err != nil || v != want {
				t.Fatalf("CreateBackupVersion = %d, %v; want %d", v, err, want)
			}
		}
		if v, err := db.CreateBackupVersion(ctx, "@b:x", "alg", []byte(`{}`)); err != nil || v != 1 {
			t.Fatalf("another user's first version = %d, %v", v, err)
		}
		cur, err := db.GetBackupVersion(ctx, "@a:x", 0)
		if err != nil || cur.Version != 2 || cur.Algorithm != "alg" || cur.Count != 0 {
			t.Fatalf("current version = %+v, %v", cur, err)
		}
		// Only the current version takes keys.
		_, _, err = db.PutBackupKeys(ctx, "@a:x", 1, []storage.BackupKey{{RoomID: "!r", SessionID: "s"}})
		var wrong *storage.WrongBackupVersionError
		if !errors.As(err, &wrong) || wrong.Current != 2 {
			t.Fatalf("keys into an old version: %v", err)
		}
		_, _, err = db.PutBackupKeys(ctx, "@a:x", 7, []storage.BackupKey{{RoomID: "!r", SessionID: "s"}})
		if !errors.As(err, &wrong) || wrong.Current != 2 {
			t.Fatalf("keys into an unknown version while one is current: %v", err)
		}

		must(t, db.UpdateBackupVersion(ctx, "@a:x", 1, []byte(`{"v":"updated"}`)))
		if v, err := db.GetBackupVersion(ctx, "@a:x", 1); err != nil || string(v.AuthData) != `{"v":"updated"}` {
			t.Fatalf("updated version = %+v, %v", v, err)
		}
		wantNotFound(t, "updating a missing version", db.UpdateBackupVersion(ctx, "@a:x", 9, []byte(`{}`)))

		// Deleting the current version makes the previous one current; a
		// deleted version is gone for every operation.
		_, _, err = db.PutBackupKeys(ctx, "@a:x", 2, []storage.BackupKey{{RoomID: "!r", SessionID: "s", SessionData: []byte(`{}`)}})
		must(t, err)
		must(t, db.DeleteBackupVersion(ctx, "@a:x", 2))
		wantNotFound(t, "deleting a version twice", db.DeleteBackupVersion(ctx, "@a:x", 2))
		_, err = db.GetBackupVersion(ctx, "@a:x", 2)
		wantNotFound(t, "a deleted version", err)
		_, err = db.GetBackupKeys(ctx, "@a:x", 2, "", "")
		wantNotFound(t, "keys of a deleted version", err)
		wantNotFound(t, "updating a deleted version", db.UpdateBackupVersion(ctx, "@a:x", 2, []byte(`{}`)))
		if n := countRows(t, db, `SELECT COUNT(*) FROM backup_keys WHERE user_id = '@a:x' AND version = 2`); n != 0 {
			t.Fatalf("%d keys of a deleted version left", n)
		}
		if cur, err := db.GetBackupVersion(ctx, "@a:x", 0); err != nil || cur.Version != 1 {
			t.Fatalf("current version after deleting 2: %+v, %v", cur, err)
		}
		// A new version never reuses a deleted version's number.
		if v, err := db.CreateBackupVersion(ctx, "@a:x", "alg", []byte(`{}`)); err != nil || v != 3 {
			t.Fatalf("version after a deletion = %d, %v; want 3", v, err)
		}
	})
}

// A stored key is replaced only by a better one (verified, then lower first
// index, then fewer forwards); the etag moves only when something changed.
func TestBackupKeys(t *testing.T) {
	ctx := context.Background()
	forEachBackend(t, func(t *testing.T, db *storage.DB) {
		v, err := db.CreateBackupVersion(ctx, "@a:x", "alg", []byte(`{}`))
		must(t, err)
		key := func(room, session string, verified bool, first, fwd int64, data string) storage.BackupKey {
			return storage.BackupKey{RoomID: room, SessionID: session, IsVerified: verified, FirstMessageIndex: first,
				ForwardedCount: fwd, SessionData: []byte(`"` + data + `"`)}
		}
		put := func(keys ...storage.BackupKey) (int64, int64) {
			t.Helper()
			etag, count, err := db.PutBackupKeys(ctx, "@a:x", v, keys)
			must(t, err)
			return etag, count
		}
		data := func(room, session string) string {
			t.Helper()
			keys, err := db.GetBackupKeys(ctx, "@a:x", v, room, session)
			if err != nil || len(keys) != 1 {
				t.Fatalf("GetBackupKeys(%s, %s) = %+v, %v", room, session, keys, err)
			}
			return string(keys[0].SessionData)
		}
		etag0, count := put(key("!r1", "s1", false, 5, 1, "first"), key("!r1", "s2", false, 0, 0, "other"), key("!r2", "s1", false, 0, 0, "r2"))
		if count != 3 {
			t.Fatalf("count %d, want 3", count)
		}
		for _, c := range []struct {
			k    storage.BackupKey
			want string
		}{
			{key("!r1", "s1", false, 6, 0, "worse index"), `"first"`},
			{key("!r1", "s1", false, 5, 2, "more forwards"), `"first"`},
			{key("!r1", "s1", false, 5, 0, "fewer forwards"), `"fewer forwards"`},
			{key("!r1", "s1", true, 9, 9, "verified"), `"verified"`},
			{key("!r1", "s1", false, 0, 0, "unverified"), `"verified"`},
		} {
			put(c.k)
			if got := data("!r1", "s1"); got != c.want {
				t.Fatalf("after %s: stored %s, want %s", c.k.SessionData, got, c.want)
			}
		}
		etag1, _ := put(key("!r1", "s1", false, 0, 0, "rejected"))
		etag2, _ := put(key("!r1", "s1", false, 0, 0, "rejected"))
		if etag1 == etag0 || etag2 != etag1 {
			t.Fatalf("etags %d, %d, %d: want a change after replacements and none after a rejected key", etag0, etag1, etag2)
		}
		if ver, _ := db.GetBackupVersion(ctx, "@a:x", v); ver.Etag != etag2 || ver.Count != 3 {
			t.Fatalf("version reports etag %d count %d", ver.Etag, ver.Count)
		}

		if keys, err := db.GetBackupKeys(ctx, "@a:x", v, "!r1", ""); err != nil || len(keys) != 2 {
			t.Fatalf("room keys: %+v, %v", keys, err)
		}
		if keys, err := db.GetBackupKeys(ctx, "@a:x", v, "", ""); err != nil || len(keys) != 3 {
			t.Fatalf("all keys: %+v, %v", keys, err)
		}
		_, _, err = db.DeleteBackupKeys(ctx, "@a:x", 99, "", "")
		wantNotFound(t, "deleting keys of a missing version", err)
		etag3, count, err := db.DeleteBackupKeys(ctx, "@a:x", v, "!r1", "s2")
		if err != nil || count != 2 || etag3 == etag2 {
			t.Fatalf("deleting one session: etag %d count %d, %v", etag3, count, err)
		}
		etag4, count, err := db.DeleteBackupKeys(ctx, "@a:x", v, "!nothing", "")
		if err != nil || count != 2 || etag4 != etag3 {
			t.Fatalf("deleting nothing: etag %d (was %d) count %d, %v", etag4, etag3, count, err)
		}
		if _, count, err := db.DeleteBackupKeys(ctx, "@a:x", v, "", ""); err != nil || count != 0 {
			t.Fatalf("deleting all: count %d, %v", count, err)
		}
	})
}
