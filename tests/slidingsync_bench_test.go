package tests

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

// BenchmarkSlidingSyncInitial100 is Element X's first request (top 20 of 100
// rooms, timeline_limit 1) on a new connection; ...Incremental is a
// continuing connection with one new message.
func BenchmarkSlidingSyncInitial100(b *testing.B) {
	for _, backend := range testserver.Backends {
		b.Run(backend, func(b *testing.B) {
			srv := testserver.Start(b, backend)
			c := srv.Register(b, "bench")
			var last string
			for range 100 {
				last = string(createRoom(b, c, &mautrix.ReqCreateRoom{Preset: "private_chat"}))
			}
			body := map[string]any{"lists": map[string]any{"all": map[string]any{"ranges": [][]int{{0, 19}}, "timeline_limit": 1,
				"required_state": [][]string{{"m.room.name", ""}, {"m.room.avatar", ""}, {"m.room.encryption", ""}, {"m.room.member", "$LAZY"}}}}}
			b.Run("initial", func(b *testing.B) {
				for b.Loop() {
					if r := slidingSync(b, c, "", 0, body); len(ssRooms(r)) != 20 {
						b.Fatalf("%d rooms", len(ssRooms(r)))
					}
				}
			})
			b.Run("incremental", func(b *testing.B) {
				pos := slidingSync(b, c, "", 0, body)["pos"].(string)
				for b.Loop() {
					b.StopTimer()
					sendText(b, c, id.RoomID(last), "x")
					b.StartTimer()
					r := slidingSync(b, c, pos, 0, body)
					if len(ssRooms(r)) != 1 {
						b.Fatalf("%d rooms", len(ssRooms(r)))
					}
					pos = r["pos"].(string)
				}
			})
		})
	}
}

// BenchmarkSlidingSync1000Rooms: a user in 1,000 rooms (each with a name and
// a message) syncs with Element X's room-list request (elementXRoomList).
// first20: a new connection's first answer for the top 20 (what the app
// shows first); firstAll: a new connection whose range covers all 1,000
// (where Element X's growing range ends); firstAllCold: the same with no
// unread counts cached (as after a restart); incremental: a continuing
// connection over all 1,000 rooms answering one new message. heap-B/conn:
// the heap a connection holds once it was sent every room (measured over 8
// connections, with the server in this process).
func BenchmarkSlidingSync1000Rooms(b *testing.B) {
	const n = 1000
	for _, backend := range testserver.Backends {
		b.Run(backend, func(b *testing.B) {
			srv := testserver.Start(b, backend)
			c := srv.Register(b, "bench")
			rooms := make([]id.RoomID, n)
			var wg sync.WaitGroup
			work := make(chan int)
			for range 4 {
				wg.Go(func() {
					for i := range work {
						rooms[i] = createRoom(b, c, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: fmt.Sprintf("room %d", i)})
						sendText(b, c, rooms[i], "hello")
					}
				})
			}
			for i := range n {
				work <- i
			}
			close(work)
			wg.Wait()
			list := func(conn string, end int) map[string]any {
				body := elementXRoomList("")
				delete(body, "txn_id")
				body["conn_id"] = conn
				obj(obj(body["lists"])["all_rooms"])["ranges"] = [][]int{{0, end}}
				return body
			}
			b.Run("first20", func(b *testing.B) {
				for b.Loop() {
					if r := slidingSync(b, c, "", 0, list("room-list", 19)); len(ssRooms(r)) != 20 {
						b.Fatalf("%d rooms", len(ssRooms(r)))
					}
				}
			})
			b.Run("firstAll", func(b *testing.B) {
				for b.Loop() {
					if r := slidingSync(b, c, "", 0, list("room-list", n-1)); len(ssRooms(r)) != n {
						b.Fatalf("%d rooms", len(ssRooms(r)))
					}
				}
			})
			b.Run("firstAllCold", func(b *testing.B) {
				i := 0
				for b.Loop() {
					b.StopTimer()
					coldUnreadCounts(b, c, i)
					i++
					b.StartTimer()
					if r := slidingSync(b, c, "", 0, list("room-list", n-1)); len(ssRooms(r)) != n {
						b.Fatalf("%d rooms", len(ssRooms(r)))
					}
				}
			})
			b.Run("incremental", func(b *testing.B) {
				body := list("room-list", n-1)
				pos := slidingSync(b, c, "", 0, body)["pos"].(string)
				i := 0
				for b.Loop() {
					b.StopTimer()
					sendText(b, c, rooms[i%n], "x")
					i++
					b.StartTimer()
					r := slidingSync(b, c, pos, 0, body)
					if len(ssRooms(r)) != 1 {
						b.Fatalf("%d rooms", len(ssRooms(r)))
					}
					pos = r["pos"].(string)
				}
			})
			b.Run("memory", func(b *testing.B) {
				// Each round: 8 new devices, one connection each, so the
				// connections of earlier rounds stay (nothing is replaced or
				// evicted) and the heap grows by what 8 connections hold.
				const conns = 8
				for b.Loop() {
					devices := make([]*mautrix.Client, conns)
					for k := range devices {
						devices[k] = srv.Client(b)
						if _, err := devices[k].Login(context.Background(), &mautrix.ReqLogin{Type: mautrix.AuthTypePassword,
							Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "bench"},
							Password:   "password-bench", StoreCredentials: true}); err != nil {
							b.Fatal(err)
						}
					}
					var before, after runtime.MemStats
					runtime.GC()
					runtime.ReadMemStats(&before)
					for _, d := range devices {
						body := list("room-list", n-1)
						r := slidingSync(b, d, "", 0, body)
						slidingSync(b, d, r["pos"].(string), 0, body) // a second snapshot, as a live connection holds
					}
					runtime.GC()
					runtime.ReadMemStats(&after)
					b.ReportMetric(float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/conns, "heap-B/conn")
				}
			})
		})
	}
}
