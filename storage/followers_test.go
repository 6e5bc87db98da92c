package storage_test

import (
	"context"
	"maps"
	"slices"
	"testing"

	"github.com/myelin-chat/myelin/internal/pgtest"
	"github.com/myelin-chat/myelin/storage"
)

// TestRoomServersBackfill: migration 0130 fills room_servers from the
// memberships already stored (a server name is what follows the user ID's
// first ':', port included).
func TestRoomServersBackfill(t *testing.T) {
	ctx := context.Background()
	for _, backend := range pgtest.Backends {
		t.Run(backend, func(t *testing.T) {
			url := pgtest.StoreURL(t, backend)
			db, err := storage.Open(ctx, url, 2)
			if err != nil {
				t.Fatal(err)
			}
			exec := func(db *storage.DB, q string, args ...any) {
				t.Helper()
				if _, err := db.Exec(ctx, q, args...); err != nil {
					t.Fatal(err)
				}
			}
			for i, m := range [][3]string{
				{"!a:x", "@u1:x", "join"}, {"!a:x", "@u2:x", "join"}, {"!a:x", "@u3:x", "leave"},
				{"!a:x", "@v:y.org:8448", "join"}, {"!a:x", "@w:y.org", "invite"},
				{"!b:x", "@u1:x", "ban"}, {"!b:x", "@z:z:1", "join"},
			} {
				exec(db, `INSERT INTO memberships (room_id, user_id, membership, event_id, stream_pos) VALUES ($1, $2, $3, $4, $5)`,
					m[0], m[1], m[2], "$e"+m[1]+m[0], i+1)
			}
			// Undo 0130 and open again: it runs over the stored memberships.
			exec(db, `DROP TABLE room_servers`)
			exec(db, `DROP TABLE stream_cursors`)
			exec(db, `DELETE FROM schema_migrations WHERE version = 130`)
			db.Close()
			if db, err = storage.Open(ctx, url, 2); err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			got := map[string]int64{}
			rows, err := db.Query(ctx, `SELECT room_id, server_name, joined FROM room_servers`)
			if err != nil {
				t.Fatal(err)
			}
			for rows.Next() {
				var room, server string
				var n int64
				if err := rows.Scan(&room, &server, &n); err != nil {
					t.Fatal(err)
				}
				got[room+" "+server] = n
			}
			rows.Close()
			want := map[string]int64{"!a:x x": 2, "!a:x y.org:8448": 1, "!b:x z:1": 1}
			if !maps.Equal(got, want) {
				t.Fatalf("backfilled room_servers %v, want %v", got, want)
			}
			if s, err := db.JoinedServers(ctx, "!a:x"); err != nil || !slices.Equal(s, []string{"x", "y.org:8448"}) {
				t.Fatalf("JoinedServers = %v, %v", s, err)
			}
			// @u1:x is banned from !b: its servers are not @u1's to tell.
			if s, err := db.ServersSharingRoomsWith(ctx, "@u1:x"); err != nil || !slices.Equal(s, []string{"x", "y.org:8448"}) {
				t.Fatalf("ServersSharingRoomsWith = %v, %v", s, err)
			}
			if s, err := db.ServersSharingRoomsWith(ctx, "@w:y.org"); err != nil || len(s) != 0 {
				t.Fatalf("ServersSharingRoomsWith(invitee) = %v, %v", s, err)
			}
			if s := storage.ServerOfUser("@z:z:1"); s != "z:1" {
				t.Fatalf("ServerOfUser splits at the first ':': got %q", s)
			}
		})
	}
}

// TestStreamCursorsAndEvents: cursors round-trip by name; StreamEvents reads
// every room's events in (after, upTo], ascending, limited, without
// soft-failed ones.
func TestStreamCursorsAndEvents(t *testing.T) {
	ctx := context.Background()
	for backend, db := range openBackends(t) {
		t.Run(backend, func(t *testing.T) {
			if _, found, err := db.StreamCursor(ctx, "f"); err != nil || found {
				t.Fatalf("an unsaved cursor: found %v, %v", found, err)
			}
			for _, pos := range []int64{7, 3} { // saved as given, even backwards
				if err := db.SaveStreamCursor(ctx, "f", pos); err != nil {
					t.Fatal(err)
				}
				if got, found, err := db.StreamCursor(ctx, "f"); err != nil || !found || got != pos {
					t.Fatalf("cursor = %d %v %v, want %d", got, found, err, pos)
				}
			}
			if _, found, _ := db.StreamCursor(ctx, "other"); found {
				t.Fatal("cursors are not per name")
			}
			for i, room := range []string{"!a:x", "!b:x", "!a:x", "!b:x", "!a:x"} {
				pos := int64(10 + 2*i) // 10, 12, 14, 16, 18
				if _, err := db.Exec(ctx, `INSERT INTO events (event_id, room_id, stream_pos, depth, type, sender,
					origin_server_ts, json, state_before, state_after, soft_failed) VALUES ($1, $2, $3, 1, 'm.room.message', '@u:x', 0, '{}', 0, 0, $4)`,
					"$"+string(rune('a'+i)), room, pos, pos == 14); err != nil {
					t.Fatal(err)
				}
			}
			positions := func(after, upTo int64, limit int) []int64 {
				evs, err := db.StreamEvents(ctx, after, upTo, limit)
				if err != nil {
					t.Fatal(err)
				}
				var out []int64
				for _, e := range evs {
					out = append(out, e.StreamPos)
				}
				return out
			}
			if got := positions(10, 18, 100); !slices.Equal(got, []int64{12, 16, 18}) {
				t.Fatalf("(10, 18] = %v", got)
			}
			if got := positions(0, 16, 2); !slices.Equal(got, []int64{10, 12}) {
				t.Fatalf("(0, 16] limit 2 = %v", got)
			}
			if got := positions(18, 100, 10); len(got) != 0 {
				t.Fatalf("(18, 100] = %v", got)
			}
		})
	}
}
