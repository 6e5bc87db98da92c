package storage_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"

	"github.com/myelin-chat/myelin/storage"
)

// userDirRooms writes the rows the user directory reads (events,
// memberships, current state) directly: the search is a read over them.
type userDirRooms struct {
	t   *testing.T
	db  *storage.DB
	pos int64
}

func (r *userDirRooms) event(room, typ, stateKey string, content map[string]any) string {
	r.t.Helper()
	r.pos++
	id := fmt.Sprintf("$e%d", r.pos)
	body, _ := json.Marshal(map[string]any{"type": typ, "state_key": stateKey, "content": content})
	ctx := context.Background()
	if _, err := r.db.Exec(ctx, `INSERT INTO events (event_id, room_id, stream_pos, depth, type, state_key, sender, origin_server_ts, json, state_before, state_after)
		VALUES ($1, $2, $3, 1, $4, $5, '@creator:x', 1, $6, 0, 0)`, id, room, r.pos, typ, stateKey, string(body)); err != nil {
		r.t.Fatal(err)
	}
	if _, err := r.db.Exec(ctx, `INSERT INTO current_state (room_id, type, state_key, event_id) VALUES ($1, $2, $3, $4)
		ON CONFLICT (room_id, type, state_key) DO UPDATE SET event_id = excluded.event_id`, room, typ, stateKey, id); err != nil {
		r.t.Fatal(err)
	}
	return id
}

func (r *userDirRooms) member(room, user, membership, name string) {
	r.t.Helper()
	content := map[string]any{"membership": membership}
	if name != "" {
		content["displayname"] = name
	}
	id := r.event(room, "m.room.member", user, content)
	if _, err := r.db.Exec(context.Background(), `INSERT INTO memberships (room_id, user_id, membership, event_id, stream_pos) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (room_id, user_id) DO UPDATE SET membership = excluded.membership, event_id = excluded.event_id, stream_pos = excluded.stream_pos`,
		room, user, membership, id, r.pos); err != nil {
		r.t.Fatal(err)
	}
}

func TestSearchUserDirectory(t *testing.T) {
	ctx := context.Background()
	forEachBackend(t, func(t *testing.T, db *storage.DB) {
		r := &userDirRooms{t: t, db: db}
		// A private room the searcher shares with alice, bob (left) and a deactivated local user.
		r.member("!shared:x", "@me:x", "join", "")
		r.member("!shared:x", "@alice:x", "join", "")
		r.member("!shared:x", "@bob:x", "leave", "Bob")
		r.member("!shared:x", "@gone:x", "join", "Gone")
		r.member("!shared:x", "@émile:y", "join", "ÉMILE Zola")
		r.member("!shared:x", "@a_c:y", "join", "")
		r.member("!shared:x", "@abc:y", "join", "")
		// A public room (carol) and a world-readable one (dave) the searcher is not in.
		r.event("!public:x", "m.room.join_rules", "", map[string]any{"join_rule": "public"})
		r.member("!public:x", "@carol:y", "join", "Carol")
		r.event("!readable:x", "m.room.history_visibility", "", map[string]any{"history_visibility": "world_readable"})
		r.member("!readable:x", "@dave:y", "join", "Dave")
		// A private room of strangers.
		r.member("!private:x", "@eve:y", "join", "Eve")
		// Local users: alice's profile name wins over her member event; @gone is deactivated.
		createUser(t, db, "@alice:x")
		must(t, db.SetDisplayName(ctx, "@alice:x", "Alice Liddell"))
		must(t, db.SetAvatarURL(ctx, "@alice:x", "mxc://x/alice"))
		createUser(t, db, "@gone:x")
		if _, err := db.DeactivateUser(ctx, "@gone:x", false); err != nil {
			t.Fatal(err)
		}

		search := func(term string, limit int) ([]string, bool) {
			t.Helper()
			users, limited, err := db.SearchUserDirectory(ctx, "@me:x", term, limit)
			must(t, err)
			var ids []string
			for _, u := range users {
				ids = append(ids, u.UserID)
			}
			return ids, limited
		}
		for _, c := range []struct {
			term string
			want []string
		}{
			{"liddell", []string{"@alice:x"}}, // by the local profile name
			{"carol", []string{"@carol:y"}},   // public room
			{"dave", []string{"@dave:y"}},     // world-readable room
			{"eve", nil},                      // shares no visible room
			{"bob", nil},                      // left the shared room
			{"gone", nil},                     // deactivated
			{"me:x", nil},                     // the searcher is never a result
			{"émile", []string{"@émile:y"}},   // Unicode case folding
			{"a_c", []string{"@a_c:y"}},       // "_" is no wildcard
			{"%", nil},                        // nor is "%"
		} {
			if got, _ := search(c.term, 10); !slices.Equal(got, c.want) {
				t.Errorf("search %q = %v, want %v", c.term, got, c.want)
			}
		}
		users, _, err := db.SearchUserDirectory(ctx, "@me:x", "alice", 10)
		if err != nil || len(users) != 1 || users[0].DisplayName != "Alice Liddell" || users[0].AvatarURL != "mxc://x/alice" {
			t.Fatalf("alice's result: %+v, %v", users, err)
		}
		// Prefix matches of the name or ID first, then those with a name, then by ID.
		all, limited := search("", 100)
		if want := []string{"@alice:x", "@carol:y", "@dave:y", "@émile:y", "@a_c:y", "@abc:y"}; limited || !slices.Equal(all, want) {
			t.Fatalf("search \"\" = %v (limited %v), want %v", all, limited, want)
		}
		if got, _ := search("a", 100); !slices.Equal(got, []string{"@alice:x", "@a_c:y", "@abc:y", "@carol:y", "@dave:y", "@émile:y"}) {
			t.Fatalf("search \"a\" = %v: prefix matches with a name first", got)
		}
		if got, limited := search("", 2); !limited || len(got) != 2 {
			t.Fatalf("search with limit 2 = %v (limited %v)", got, limited)
		}
	})
}
