package tests

import (
	"context"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

// BenchmarkSyncV2 is GET /sync for a user in 20 rooms of 20 messages each,
// with a topic change and a redaction in every room (so prev_content and
// redacted_because are rendered): "initial" is a full initial sync (timeline
// limit 20), "initialCold" the same with no unread counts cached (as after a
// restart), "incremental" a sync that returns one new message. It measures
// the read path and the renderer end to end, over real HTTP.
func BenchmarkSyncV2(b *testing.B) {
	for _, backend := range testserver.Backends {
		b.Run(backend, func(b *testing.B) {
			srv := testserver.Start(b, backend)
			c := srv.Register(b, "bench")
			ctx := context.Background()
			var last id.RoomID
			for range 20 {
				last = createRoom(b, c, &mautrix.ReqCreateRoom{Preset: "private_chat", Topic: "first"})
				for i := range 20 {
					ev := sendText(b, c, last, "message")
					if i == 10 {
						if _, err := c.RedactEvent(ctx, last, ev); err != nil {
							b.Fatal(err)
						}
						if _, err := c.SendStateEvent(ctx, last, event.StateTopic, "", map[string]any{"topic": "second"}); err != nil {
							b.Fatal(err)
						}
					}
				}
			}
			f, err := c.CreateFilter(ctx, &mautrix.Filter{Room: &mautrix.RoomFilter{Timeline: &mautrix.FilterPart{Limit: 20}}})
			if err != nil {
				b.Fatal(err)
			}
			filter := f.FilterID
			b.Run("initial", func(b *testing.B) {
				for b.Loop() {
					resp, err := c.FullSyncRequest(ctx, mautrix.ReqSync{FilterID: filter})
					if err != nil || len(resp.Rooms.Join) != 20 {
						b.Fatalf("%v, %d rooms", err, len(resp.Rooms.Join))
					}
				}
			})
			b.Run("initialCold", func(b *testing.B) {
				i := 0
				for b.Loop() {
					b.StopTimer()
					coldUnreadCounts(b, c, i)
					i++
					b.StartTimer()
					resp, err := c.FullSyncRequest(ctx, mautrix.ReqSync{FilterID: filter})
					if err != nil || len(resp.Rooms.Join) != 20 {
						b.Fatalf("%v, %d rooms", err, len(resp.Rooms.Join))
					}
				}
			})
			b.Run("incremental", func(b *testing.B) {
				resp, err := c.FullSyncRequest(ctx, mautrix.ReqSync{FilterID: filter})
				if err != nil {
					b.Fatal(err)
				}
				since := resp.NextBatch
				for b.Loop() {
					b.StopTimer()
					sendText(b, c, last, "x")
					b.StartTimer()
					resp, err := c.FullSyncRequest(ctx, mautrix.ReqSync{Since: since, FilterID: filter})
					if err != nil || len(resp.Rooms.Join) != 1 {
						b.Fatalf("%v, %d rooms", err, len(resp.Rooms.Join))
					}
					since = resp.NextBatch
				}
			})
		})
	}
}
