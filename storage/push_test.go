package storage_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"

	"github.com/myelin-chat/myelin/storage"
)

func TestPushRulesUpdate(t *testing.T) {
	ctx := context.Background()
	forEachBackend(t, func(t *testing.T, db *storage.DB) {
		_, _, err := db.PushRules(ctx, "@a:x")
		wantNotFound(t, "rules never changed", err)

		// A failed update stores nothing, not even an empty row.
		boom := errors.New("boom")
		if err := db.UpdatePushRules(ctx, "@a:x", 5, func(cur string) (string, error) { return `{"x":1}`, boom }); !errors.Is(err, boom) {
			t.Fatalf("UpdatePushRules error = %v", err)
		}
		_, _, err = db.PushRules(ctx, "@a:x")
		wantNotFound(t, "rules after a failed update", err)

		var seen string
		must(t, db.UpdatePushRules(ctx, "@a:x", 6, func(cur string) (string, error) { seen = cur; return `{"v":1}`, nil }))
		if seen != "" {
			t.Fatalf("first update saw %q, want \"\"", seen)
		}
		must(t, db.UpdatePushRules(ctx, "@a:x", 7, func(cur string) (string, error) { seen = cur; return `{"v":2,"room":"!abc:x"}`, nil }))
		if seen != `{"v":1}` {
			t.Fatalf("second update saw %q", seen)
		}
		if rules, pos, err := db.PushRules(ctx, "@a:x"); err != nil || rules != `{"v":2,"room":"!abc:x"}` || pos != 7 {
			t.Fatalf("PushRules = %q @%d, %v", rules, pos, err)
		}
		must(t, db.UpdatePushRules(ctx, "@b:x", 8, func(string) (string, error) { return `{"room":"!other:x"}`, nil }))
		if users, err := db.UsersWithPushRulesMentioning(ctx, "!abc:x"); err != nil || !slices.Equal(users, []string{"@a:x"}) {
			t.Fatalf("UsersWithPushRulesMentioning = %v, %v", users, err)
		}
		// "%" is not a wildcard in the text searched for.
		if users, err := db.UsersWithPushRulesMentioning(ctx, "%"); err != nil || len(users) != 2 {
			t.Fatalf("UsersWithPushRulesMentioning(%%) = %v, %v", users, err)
		}
	})
}

// Concurrent read-modify-writes of one user's rules are serialized: none is lost.
func TestPushRulesConcurrentUpdates(t *testing.T) {
	ctx := context.Background()
	forEachBackend(t, func(t *testing.T, db *storage.DB) {
		const n = 8
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := db.UpdatePushRules(ctx, "@a:x", int64(10+i), func(cur string) (string, error) { return cur + "x", nil }); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		if rules, _, err := db.PushRules(ctx, "@a:x"); err != nil || len(rules) != n {
			t.Fatalf("after %d concurrent appends the rules are %q (%v)", n, rules, err)
		}
	})
}

func TestPushers(t *testing.T) {
	ctx := context.Background()
	forEachBackend(t, func(t *testing.T, db *storage.DB) {
		set := func(user, key, json string, appendPusher bool) {
			t.Helper()
			must(t, db.SetPusher(ctx, storage.Pusher{UserID: user, AppID: "app", PushKey: key, DeviceID: "D", JSON: json}, appendPusher))
		}
		keys := func(user string) []string {
			t.Helper()
			ps, err := db.Pushers(ctx, user)
			must(t, err)
			var out []string
			for _, p := range ps {
				out = append(out, p.PushKey+"="+p.JSON)
			}
			return out
		}
		set("@a:x", "k1", "1", false)
		set("@b:x", "k1", "b", true) // append: @a keeps the pushkey too
		if got := keys("@a:x"); !slices.Equal(got, []string{"k1=1"}) {
			t.Fatalf("@a pushers %v", got)
		}
		set("@a:x", "k1", "2", false) // replaces @a's own, and removes @b's with the same key
		if got := keys("@a:x"); !slices.Equal(got, []string{"k1=2"}) {
			t.Fatalf("@a pushers after replacing %v", got)
		}
		if got := keys("@b:x"); len(got) != 0 {
			t.Fatalf("another user's pusher with the same app ID and pushkey survived: %v", got)
		}
		set("@a:x", "k2", "3", false)
		if got := keys("@a:x"); len(got) != 2 {
			t.Fatalf("@a pushers %v", got)
		}
		must(t, db.DeletePusher(ctx, "@a:x", "app", "k1"))
		must(t, db.DeletePusher(ctx, "@a:x", "app", "missing"))
		if got := keys("@a:x"); !slices.Equal(got, []string{"k2=3"}) {
			t.Fatalf("@a pushers after deleting %v", got)
		}
	})
}
