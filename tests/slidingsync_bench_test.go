package tests

import (
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
