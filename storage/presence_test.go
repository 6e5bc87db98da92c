package storage_test

import (
	"context"
	"slices"
	"testing"

	"github.com/myelin-chat/myelin/storage"
)

func TestPresence(t *testing.T) {
	ctx := context.Background()
	forEachBackend(t, func(t *testing.T, db *storage.DB) {
		_, err := db.GetPresence(ctx, "@a:x")
		wantNotFound(t, "presence never set", err)
		msg := "busy"
		set := func(user, state string, pos int64) {
			t.Helper()
			must(t, db.SetPresence(ctx, storage.Presence{UserID: user, State: state, StatusMsg: &msg, LastActiveTS: pos * 100, CurrentlyActive: state == "online", Pos: pos}))
		}
		set("@a:x", "online", 1)
		set("@b:x", "unavailable", 2)
		set("@c:x", "online", 3)
		set("@a:x", "offline", 4) // replaces
		p, err := db.GetPresence(ctx, "@a:x")
		if err != nil || p.State != "offline" || p.Pos != 4 || p.LastActiveTS != 400 || p.CurrentlyActive || p.StatusMsg == nil || *p.StatusMsg != "busy" {
			t.Fatalf("GetPresence = %+v, %v", p, err)
		}
		must(t, db.SetPresence(ctx, storage.Presence{UserID: "@c:x", State: "online", Pos: 5}))
		if p, _ := db.GetPresence(ctx, "@c:x"); p.StatusMsg != nil {
			t.Fatalf("status message not cleared: %q", *p.StatusMsg)
		}

		since := func(users []string, from, to int64) []string {
			t.Helper()
			ps, err := db.PresenceSince(ctx, users, from, to)
			must(t, err)
			var out []string
			for _, p := range ps {
				out = append(out, p.UserID)
			}
			return out
		}
		if got := since([]string{"@a:x", "@b:x", "@c:x"}, 0, 100); !slices.Equal(got, []string{"@b:x", "@a:x", "@c:x"}) {
			t.Fatalf("PresenceSince = %v, want by position", got)
		}
		if got := since([]string{"@a:x", "@b:x", "@c:x"}, 2, 4); !slices.Equal(got, []string{"@a:x"}) {
			t.Fatalf("PresenceSince(2, 4] = %v", got)
		}
		if got := since([]string{"@b:x"}, 0, 100); !slices.Equal(got, []string{"@b:x"}) {
			t.Fatalf("PresenceSince for @b only = %v", got)
		}
		if got := since(nil, 0, 100); len(got) != 0 {
			t.Fatalf("PresenceSince of no users = %v", got)
		}
		users, err := db.UsersNotOffline(ctx)
		slices.Sort(users)
		if err != nil || !slices.Equal(users, []string{"@b:x", "@c:x"}) {
			t.Fatalf("UsersNotOffline = %v, %v", users, err)
		}
	})
}
