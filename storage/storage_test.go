package storage_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/myelin-chat/myelin/internal/pgtest"
	"github.com/myelin-chat/myelin/storage"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// openBackends opens a fresh store on every backend.
func openBackends(t *testing.T) map[string]*storage.DB {
	t.Helper()
	ctx := context.Background()
	dbs := map[string]*storage.DB{}
	for _, backend := range pgtest.Backends {
		url := pgtest.StoreURL(t, backend)
		db, err := storage.Open(ctx, url, 4)
		if err != nil {
			t.Fatalf("%s: %v", backend, err)
		}
		t.Cleanup(db.Close)
		dbs[backend] = db
	}
	return dbs
}

func TestMigrationsAreIdempotent(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	url := "sqlite:" + filepath.Join(dir, "m.db")
	db, err := storage.Open(ctx, url, 1)
	if err != nil {
		t.Fatal(err)
	}
	v1, err := db.SchemaVersion(ctx)
	db.Close()
	if err != nil || v1 == 0 {
		t.Fatalf("schema version %d, %v", v1, err)
	}
	db, err = storage.Open(ctx, url, 1) // re-open: nothing re-applied, no error
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if v2, _ := db.SchemaVersion(ctx); v2 != v1 {
		t.Fatalf("schema version changed on reopen: %d → %d", v1, v2)
	}
}

func TestStoreBasics(t *testing.T) {
	ctx := context.Background()
	for backend, db := range openBackends(t) {
		t.Run(backend, func(t *testing.T) {
			u := storage.User{UserID: "@a:x", Localpart: "a", PasswordHash: "h", CreatedTS: 1, DisplayName: "A"}
			if err := db.CreateUser(ctx, u); err != nil {
				t.Fatal(err)
			}
			if err := db.CreateUser(ctx, u); !errors.Is(err, storage.ErrUserExists) {
				t.Fatalf("duplicate user: got %v, want ErrUserExists", err)
			}
			got, err := db.GetUser(ctx, "@a:x")
			if err != nil || got.DisplayName != "A" || got.IsAdmin || got.Deactivated {
				t.Fatalf("GetUser = %+v, %v", got, err)
			}
			if _, err := db.GetUser(ctx, "@nobody:x"); !errors.Is(err, storage.ErrNotFound) {
				t.Fatalf("missing user: got %v, want ErrNotFound", err)
			}
			// A failed transaction leaves nothing behind.
			boom := errors.New("boom")
			err = db.Tx(ctx, func(tx storage.Querier) error {
				if _, err := tx.Exec(ctx, `INSERT INTO users (user_id, localpart, created_ts) VALUES ($1, $2, $3)`, "@b:x", "b", 2); err != nil {
					return err
				}
				return boom
			})
			if !errors.Is(err, boom) {
				t.Fatalf("Tx error = %v", err)
			}
			if _, err := db.GetUser(ctx, "@b:x"); !errors.Is(err, storage.ErrNotFound) {
				t.Fatalf("rolled-back insert visible: %v", err)
			}
		})
	}
}

func TestStreamAdvancesOnlyOverFinishedPositions(t *testing.T) {
	db := openBackends(t)["sqlite"]
	s := db.Stream
	start := s.Current()
	p1, f1, err1 := s.Allocate()
	p2, f2, err2 := s.Allocate()
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	if p2 != p1+1 || p1 != start+1 {
		t.Fatalf("positions %d, %d after %d", p1, p2, start)
	}
	var seen []int64
	var mu sync.Mutex
	s.OnAdvance(func(pos int64) { mu.Lock(); seen = append(seen, pos); mu.Unlock() })
	f2() // finishes out of order: p1 still in flight
	if s.Current() != start {
		t.Fatalf("current advanced past an unfinished position: %d", s.Current())
	}
	f1()
	f1() // finishing twice is harmless
	if s.Current() != p2 {
		t.Fatalf("current = %d, want %d", s.Current(), p2)
	}
	if len(seen) != 1 || seen[0] != p2 {
		t.Fatalf("OnAdvance saw %v, want [%d]", seen, p2)
	}
	first, fin, err := s.AllocateN(3)
	if err != nil {
		t.Fatal(err)
	}
	fin()
	if first != p2+1 || s.Current() != p2+3 {
		t.Fatalf("AllocateN: first %d, current %d", first, s.Current())
	}
}

// TestReceiptsInRangeOnlyUsersRooms: an incremental /sync reads the receipts
// of the rooms the user is joined to (or whose membership changed in the
// range), not every receipt on the server.
func TestReceiptsInRangeOnlyUsersRooms(t *testing.T) {
	ctx := context.Background()
	for backend, db := range openBackends(t) {
		t.Run(backend, func(t *testing.T) {
			member := func(room, membership string, pos int64) {
				if _, err := db.Exec(ctx, `INSERT INTO memberships (room_id, user_id, membership, event_id, stream_pos)
					VALUES ($1, '@a:x', $2, $3, $4)`, room, membership, "$m"+room, pos); err != nil {
					t.Fatal(err)
				}
			}
			member("!joined:x", "join", 1)
			member("!left-long-ago:x", "leave", 2)
			member("!left-in-range:x", "leave", 15)
			for i, room := range []string{"!joined:x", "!left-long-ago:x", "!left-in-range:x", "!stranger:x"} {
				r := storage.Receipt{RoomID: room, UserID: "@b:x", Type: "m.read", EventID: "$e", TS: 1, Pos: int64(11 + i)}
				if err := db.UpsertReceipt(ctx, r); err != nil {
					t.Fatal(err)
				}
			}
			got, err := db.ReceiptsInRange(ctx, "@a:x", 10, 20)
			if err != nil {
				t.Fatal(err)
			}
			var rooms []string
			for _, r := range got {
				rooms = append(rooms, r.RoomID)
			}
			if want := []string{"!joined:x", "!left-in-range:x"}; !slices.Equal(rooms, want) {
				t.Fatalf("receipts from rooms %v, want %v", rooms, want)
			}
		})
	}
}

func TestLatestEventPositions(t *testing.T) {
	ctx := context.Background()
	for backend, db := range openBackends(t) {
		t.Run(backend, func(t *testing.T) {
			insert := func(id, room string, pos int64, softFailed bool) {
				t.Helper()
				if _, err := db.Exec(ctx, `INSERT INTO events (event_id, room_id, stream_pos, depth, type, sender,
					origin_server_ts, json, state_before, state_after, soft_failed)
					VALUES ($1, $2, $3, 1, 'm.room.message', '@a:x', 1, '{}', 0, 0, $4)`, id, room, pos, softFailed); err != nil {
					t.Fatal(err)
				}
			}
			insert("$a1", "!a:x", 10, false)
			insert("$a2", "!a:x", 20, false)
			insert("$a3", "!a:x", 30, true) // soft-failed: never counted
			insert("$b1", "!b:x", 15, false)
			insert("$b2", "!b:x", 25, false)
			bounds := map[string]int64{"!a:x": 100, "!b:x": 20, "!c:x": 100, "!d:x": 5}
			// More rooms than one statement holds, none of them with events.
			for i := range 1200 {
				bounds[fmt.Sprintf("!e%d:x", i)] = 100
			}
			bounds["!d:x"] = 5
			insert("$d1", "!d:x", 7, false) // above its bound
			got, err := db.LatestEventPositions(ctx, bounds)
			if err != nil {
				t.Fatal(err)
			}
			want := map[string]int64{"!a:x": 20, "!b:x": 15}
			if !maps.Equal(got, want) {
				t.Fatalf("LatestEventPositions = %v, want %v", got, want)
			}
			got, err = db.LatestEventPositions(ctx, map[string]int64{"!b:x": 100})
			if err != nil || got["!b:x"] != 25 {
				t.Fatalf("LatestEventPositions(!b) = %v, %v; want 25", got, err)
			}
		})
	}
}

// TestStreamNeverReusesPositionsAfterRestart: positions handed out leave no
// row behind (a to-device message deleted on acknowledgement, a failed
// commit), yet a client may hold a sync token naming them. After a restart the
// stream must resume above every position it handed out, however many there
// were (beyond one reserved block too), not after the largest surviving row.
func TestStreamNeverReusesPositionsAfterRestart(t *testing.T) {
	ctx := context.Background()
	for _, backend := range pgtest.Backends {
		t.Run(backend, func(t *testing.T) {
			url := pgtest.StoreURL(t, backend)
			var seen int64
			for round := 0; round < 3; round++ {
				db, err := storage.Open(ctx, url, 4)
				if err != nil {
					t.Fatal(err)
				}
				if cur := db.Stream.Current(); cur < seen {
					t.Fatalf("round %d: stream resumed at %d, below position %d already handed out", round, cur, seen)
				}
				// Round 1 crosses more than one reserved block in one go and in single steps.
				n := []int{5, 2500, 1}[round]
				first, finish, err := db.Stream.AllocateN(n)
				if err != nil {
					t.Fatal(err)
				}
				if first <= seen {
					t.Fatalf("round %d: allocated %d, not above %d", round, first, seen)
				}
				finish()
				for i := 0; i < n; i++ {
					pos, finish, err := db.Stream.Allocate()
					if err != nil {
						t.Fatal(err)
					}
					finish()
					seen = pos
				}
				if db.Stream.Current() != seen {
					t.Fatalf("round %d: current %d, want %d", round, db.Stream.Current(), seen)
				}
				db.Close()
			}
		})
	}
}
