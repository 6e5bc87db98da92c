package storage_test

import (
	"context"
	"maps"
	"slices"
	"sync"
	"testing"

	"github.com/myelin-chat/myelin/storage"
)

func TestAccountData(t *testing.T) {
	ctx := context.Background()
	forEachBackend(t, func(t *testing.T, db *storage.DB) {
		_, err := db.GetAccountData(ctx, "@a:x", "", "m.t")
		wantNotFound(t, "missing account data", err)

		must(t, db.PutAccountData(ctx, "@a:x", "", "m.one", []byte(`{"v":1}`), 10))
		must(t, db.PutAccountData(ctx, "@a:x", "!r:x", "m.one", []byte(`{"room":1}`), 11))
		must(t, db.PutAccountData(ctx, "@a:x", "", "m.two", []byte(`{"v":2}`), 12))
		must(t, db.PutAccountData(ctx, "@b:x", "", "m.one", []byte(`{"b":1}`), 13))
		// Replacing an entry moves it to its new position.
		must(t, db.PutAccountData(ctx, "@a:x", "", "m.one", []byte(`{"v":3}`), 14))

		if c, err := db.GetAccountData(ctx, "@a:x", "", "m.one"); err != nil || string(c) != `{"v":3}` {
			t.Fatalf("global m.one = %s, %v", c, err)
		}
		if c, err := db.GetAccountData(ctx, "@a:x", "!r:x", "m.one"); err != nil || string(c) != `{"room":1}` {
			t.Fatalf("room m.one = %s, %v", c, err)
		}
		since := func(from, to int64) []string {
			t.Helper()
			got, err := db.AccountDataSince(ctx, "@a:x", from, to)
			if err != nil {
				t.Fatal(err)
			}
			var out []string
			for _, a := range got {
				out = append(out, a.RoomID+"/"+a.Type+"@"+string(rune('0'+a.StreamPos-10)))
			}
			return out
		}
		if got, want := since(0, 100), []string{"!r:x/m.one@1", "/m.two@2", "/m.one@4"}; !slices.Equal(got, want) {
			t.Fatalf("AccountDataSince(0, 100) = %v, want %v", got, want)
		}
		// (from, to]: the lower bound excluded, the upper included.
		if got, want := since(11, 12), []string{"/m.two@2"}; !slices.Equal(got, want) {
			t.Fatalf("AccountDataSince(11, 12) = %v, want %v", got, want)
		}
		if got := since(14, 100); len(got) != 0 {
			t.Fatalf("AccountDataSince(14, 100) = %v, want none", got)
		}

		// The size leaves out the entry being replaced, and other users.
		n, err := db.AccountDataSize(ctx, "@a:x", "", "m.one")
		if err != nil || n != int64(len(`{"room":1}`)+len(`{"v":2}`)) {
			t.Fatalf("AccountDataSize = %d, %v", n, err)
		}
		if n, err := db.AccountDataSize(ctx, "@nobody:x", "", "m.one"); err != nil || n != 0 {
			t.Fatalf("AccountDataSize of a user without data = %d, %v", n, err)
		}
	})
}

func TestIgnoredUsers(t *testing.T) {
	ctx := context.Background()
	forEachBackend(t, func(t *testing.T, db *storage.DB) {
		if got, err := db.IgnoredUsers(ctx, "@a:x"); got != nil || err != nil {
			t.Fatalf("no list: %v, %v", got, err)
		}
		must(t, db.PutAccountData(ctx, "@a:x", "", "m.ignored_user_list", []byte(`{"ignored_users":"nonsense"}`), 1))
		if got, err := db.IgnoredUsers(ctx, "@a:x"); got != nil || err != nil {
			t.Fatalf("malformed list: %v, %v", got, err)
		}
		must(t, db.PutAccountData(ctx, "@a:x", "", "m.ignored_user_list", []byte(`{"ignored_users":{"@b:x":{},"@c:y":{}}}`), 2))
		got, err := db.IgnoredUsers(ctx, "@a:x")
		if want := map[string]bool{"@b:x": true, "@c:y": true}; err != nil || !maps.Equal(got, want) {
			t.Fatalf("IgnoredUsers = %v, %v; want %v", got, err, want)
		}
		// Only the global entry counts.
		must(t, db.PutAccountData(ctx, "@d:x", "!r:x", "m.ignored_user_list", []byte(`{"ignored_users":{"@b:x":{}}}`), 3))
		if got, err := db.IgnoredUsers(ctx, "@d:x"); got != nil || err != nil {
			t.Fatalf("room-level list counted: %v, %v", got, err)
		}
	})
}

func TestFilters(t *testing.T) {
	ctx := context.Background()
	forEachBackend(t, func(t *testing.T, db *storage.DB) {
		_, err := db.GetFilter(ctx, "@a:x", 0)
		wantNotFound(t, "missing filter", err)
		for want := int64(0); want < 2; want++ {
			if id, err := db.CreateFilter(ctx, "@a:x", []byte(`{"n":1}`)); err != nil || id != want {
				t.Fatalf("CreateFilter = %d, %v; want %d", id, err, want)
			}
		}
		if id, err := db.CreateFilter(ctx, "@b:x", []byte(`{"b":1}`)); err != nil || id != 0 {
			t.Fatalf("another user's first filter = %d, %v; want 0", id, err)
		}
		if f, err := db.GetFilter(ctx, "@b:x", 0); err != nil || string(f) != `{"b":1}` {
			t.Fatalf("GetFilter = %s, %v", f, err)
		}
		_, err = db.GetFilter(ctx, "@b:x", 1)
		wantNotFound(t, "another user's filter ID", err)

		// Concurrent creations get distinct IDs.
		var wg sync.WaitGroup
		ids := make([]int64, 4)
		errs := make([]error, 4)
		for i := range ids {
			wg.Add(1)
			go func() { defer wg.Done(); ids[i], errs[i] = db.CreateFilter(ctx, "@c:x", []byte(`{}`)) }()
		}
		wg.Wait()
		for _, err := range errs {
			must(t, err)
		}
		slices.Sort(ids)
		if !slices.Equal(ids, []int64{0, 1, 2, 3}) {
			t.Fatalf("concurrent filter IDs %v", ids)
		}
	})
}
