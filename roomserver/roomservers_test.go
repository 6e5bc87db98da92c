package roomserver_test

import (
	"context"
	"fmt"
	"maps"
	"sync"
	"testing"
	"time"

	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/internal/config"
	"github.com/myelin-chat/myelin/internal/notifier"
	"github.com/myelin-chat/myelin/internal/pgtest"
	"github.com/myelin-chat/myelin/roomserver"
	"github.com/myelin-chat/myelin/storage"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

type keyOf map[string]*mfed.SigningKey

func (k keyOf) GetKey(server string, keyID id.KeyID, _ time.Time) (id.SigningKey, time.Time, error) {
	if key, ok := k[server]; ok && key.ID == keyID {
		return key.Pub, time.Now().Add(time.Hour), nil
	}
	return "", time.Time{}, fmt.Errorf("unknown key %s %s", server, keyID)
}

// TestRoomServersFollowMemberships: the writer keeps room_servers (joined
// members per server) equal to a recount from memberships through joins,
// leaves, kicks, bans, invites, remote members, batches of concurrent
// changes and a restart (the writer's cached state reloaded from the store).
func TestRoomServersFollowMemberships(t *testing.T) {
	for _, backend := range pgtest.Backends {
		t.Run(backend, func(t *testing.T) {
			ctx := context.Background()
			url := pgtest.StoreURL(t, backend)
			remoteKey := mfed.GenerateSigningKey()
			open := func() (*storage.DB, *roomserver.Server) {
				db, err := storage.Open(ctx, url, 4)
				if err != nil {
					t.Fatal(err)
				}
				cfg := config.Default()
				cfg.ServerName = "test.local"
				s, err := roomserver.New(ctx, roomserver.Options{Store: db, Stream: db.Stream, Config: cfg, SigningKey: mfed.GenerateSigningKey(),
					Notifier: notifier.New(db.Stream.Current()), Keys: keyOf{"remote.test": remoteKey}})
				if err != nil {
					t.Fatal(err)
				}
				return db, s
			}
			db, s := open()
			local := func(name string) id.UserID { return id.UserID("@" + name + ":test.local") }
			owner := local("owner")
			room, err := s.CreateRoom(ctx, owner, &roomserver.CreateRoomRequest{Preset: "public_chat"})
			if err != nil {
				t.Fatal(err)
			}
			must := func(err error) {
				t.Helper()
				if err != nil {
					t.Fatal(err)
				}
			}
			join := func(u id.UserID) { _, err := s.Join(ctx, u, string(room), ""); must(err) }
			act := func(action string, target id.UserID) {
				t.Helper()
				must(s.ChangeMembership(ctx, roomserver.MembershipAction{Sender: owner, RoomID: room, Target: target, Action: action}))
			}
			leave := func(u id.UserID) {
				t.Helper()
				must(s.ChangeMembership(ctx, roomserver.MembershipAction{Sender: u, RoomID: room, Target: u, Action: "leave"}))
			}
			remote := func(u id.UserID, membership string) {
				t.Helper()
				_, err := s.Input(ctx, room, roomserver.RemoteMembership(t, s, remoteKey, room, u, membership), "remote.test")
				must(err)
			}
			check := func(when string, want map[string]int64) {
				t.Helper()
				recount := map[string]int64{}
				members, err := db.RoomMembers(ctx, string(room), "join")
				must(err)
				for _, m := range members {
					recount[storage.ServerOfUser(m.UserID)]++
				}
				got := map[string]int64{}
				rows, err := db.Query(ctx, `SELECT server_name, joined FROM room_servers WHERE room_id = $1`, string(room))
				must(err)
				for rows.Next() {
					var s string
					var n int64
					must(rows.Scan(&s, &n))
					got[s] = n
				}
				rows.Close()
				if !maps.Equal(got, recount) || !maps.Equal(got, want) {
					t.Fatalf("%s: room_servers %v, recount from memberships %v, want %v", when, got, recount, want)
				}
				servers, err := db.JoinedServers(ctx, string(room))
				must(err)
				if len(servers) != len(want) {
					t.Fatalf("%s: JoinedServers = %v, want the servers of %v", when, servers, want)
				}
			}
			check("created", map[string]int64{"test.local": 1})

			a, b, c, d := local("a"), local("b"), local("c"), local("d")
			join(a)
			join(b)
			join(c)
			act("invite", d) // an invite is not a join
			check("joins", map[string]int64{"test.local": 4})
			leave(a)
			act("kick", b)
			act("ban", c)
			check("leave, kick, ban", map[string]int64{"test.local": 1})
			r1, r2 := id.UserID("@r1:remote.test"), id.UserID("@r2:remote.test")
			remote(r1, "join")
			remote(r2, "join")
			check("remote joins", map[string]int64{"test.local": 1, "remote.test": 2})
			remote(r1, "leave")
			check("remote leave", map[string]int64{"test.local": 1, "remote.test": 1})

			// Concurrent changes commit in batches, a user's join and leave
			// possibly in the same one.
			var wg sync.WaitGroup
			for i := range 12 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					u := local(fmt.Sprintf("c%d", i))
					if _, err := s.Join(ctx, u, string(room), ""); err != nil {
						t.Error(err)
						return
					}
					if i%2 == 0 {
						if err := s.ChangeMembership(ctx, roomserver.MembershipAction{Sender: u, RoomID: room, Target: u, Action: "leave"}); err != nil {
							t.Error(err)
						}
					}
				}()
			}
			wg.Wait()
			check("concurrent joins and leaves", map[string]int64{"test.local": 7, "remote.test": 1})

			// Restart: the writer starts from the stored state.
			db.Close()
			db, s = open()
			defer db.Close()
			join(a)
			join(d)
			act("ban", r2)
			remote(r1, "join")
			check("after a restart", map[string]int64{"test.local": 9, "remote.test": 1})
			act("unban", c)
			check("unban", map[string]int64{"test.local": 9, "remote.test": 1})
			act("kick", r1)
			leave(owner)
			check("remote kicked, owner left", map[string]int64{"test.local": 8})
		})
	}
}
