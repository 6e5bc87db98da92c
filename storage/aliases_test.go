package storage_test

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/myelin-chat/myelin/storage"
)

func TestAliases(t *testing.T) {
	ctx := context.Background()
	forEachBackend(t, func(t *testing.T, db *storage.DB) {
		_, _, err := db.ResolveAlias(ctx, "#missing:x")
		wantNotFound(t, "unknown alias", err)
		if aliases, err := db.RoomAliases(ctx, "!r:x"); err != nil || aliases == nil || len(aliases) != 0 {
			t.Fatalf("RoomAliases of a room without any = %#v, %v; want an empty list", aliases, err)
		}
		must(t, db.CreateAlias(ctx, "#b:x", "!r:x", "@a:x"))
		must(t, db.CreateAlias(ctx, "#a:x", "!r:x", "@a:x"))
		if err := db.CreateAlias(ctx, "#a:x", "!other:x", "@b:x"); !errors.Is(err, storage.ErrAliasExists) {
			t.Fatalf("taking a taken alias: %v", err)
		}
		if room, creator, err := db.ResolveAlias(ctx, "#a:x"); err != nil || room != "!r:x" || creator != "@a:x" {
			t.Fatalf("ResolveAlias = %s %s %v", room, creator, err)
		}
		if aliases, err := db.RoomAliases(ctx, "!r:x"); err != nil || !slices.Equal(aliases, []string{"#a:x", "#b:x"}) {
			t.Fatalf("RoomAliases = %v, %v", aliases, err)
		}
		must(t, db.MoveAliases(ctx, "!r:x", "!new:x"))
		if aliases, _ := db.RoomAliases(ctx, "!new:x"); len(aliases) != 2 {
			t.Fatalf("aliases after an upgrade: %v", aliases)
		}
		must(t, db.DeleteAlias(ctx, "#a:x"))
		_, _, err = db.ResolveAlias(ctx, "#a:x")
		wantNotFound(t, "deleted alias", err)
		must(t, db.CreateAlias(ctx, "#a:x", "!other:x", "@b:x")) // free again
	})
}

func TestRoomDirectoryAndReports(t *testing.T) {
	ctx := context.Background()
	forEachBackend(t, func(t *testing.T, db *storage.DB) {
		for _, r := range []string{"!c:x", "!a:x", "!b:x"} {
			if _, err := db.Exec(ctx, `INSERT INTO rooms (room_id, room_version, creator, created_ts) VALUES ($1, '10', '@a:x', 1)`, r); err != nil {
				t.Fatal(err)
			}
		}
		if ids, err := db.PublicRoomIDs(ctx); err != nil || len(ids) != 0 {
			t.Fatalf("PublicRoomIDs before publishing = %v, %v", ids, err)
		}
		must(t, db.SetRoomPublic(ctx, "!c:x", true))
		must(t, db.SetRoomPublic(ctx, "!a:x", true))
		must(t, db.SetRoomPublic(ctx, "!unknown:x", true)) // no such room: nothing published
		if ids, err := db.PublicRoomIDs(ctx); err != nil || !slices.Equal(ids, []string{"!a:x", "!c:x"}) {
			t.Fatalf("PublicRoomIDs = %v, %v", ids, err)
		}
		must(t, db.SetRoomPublic(ctx, "!c:x", false))
		if ids, _ := db.PublicRoomIDs(ctx); !slices.Equal(ids, []string{"!a:x"}) {
			t.Fatalf("PublicRoomIDs after unpublishing = %v", ids)
		}

		score := int64(-100)
		must(t, db.AddReport(ctx, "!a:x", "$e", "@r:x", "spam", &score, 5))
		must(t, db.AddReport(ctx, "!a:x", "", "@r:x", "room", nil, 6))
		must(t, db.AddReport(ctx, "!a:x", "$e", "@r:x", "spam again", nil, 7)) // reports may repeat
		if n := countRows(t, db, `SELECT COUNT(*) FROM event_reports WHERE room_id = '!a:x'`); n != 3 {
			t.Fatalf("%d reports stored, want 3", n)
		}
		if n := countRows(t, db, `SELECT COUNT(*) FROM event_reports WHERE event_id = '$e' AND score = -100 AND reason = 'spam'`); n != 1 {
			t.Fatalf("the scored report was not stored as given (%d rows)", n)
		}
	})
}
