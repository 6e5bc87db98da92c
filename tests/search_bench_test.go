package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"

	"github.com/myelin-chat/myelin/homeserver/testserver"
	"github.com/myelin-chat/myelin/roomserver"
)

// benchWord is a distinct four-letter word for n (no word is a prefix of another).
func benchWord(n int) string {
	b := make([]byte, 4)
	for i := 3; i >= 0; i-- {
		b[i] = byte('a' + n%26)
		n /= 26
	}
	return "q" + string(b)
}

// BenchmarkSearch10k searches 10,000 messages in 10 rooms: a word in every
// message, a word in 1% of them, a word in one; by rank and by recency,
// 10 results a page with the total count.
func BenchmarkSearch10k(b *testing.B) {
	const rooms, perRoom = 10, 1000
	for _, backend := range testserver.Backends {
		b.Run(backend, func(b *testing.B) {
			srv := testserver.Start(b, backend)
			alice := srv.Register(b, "alice")
			ctx := context.Background()
			var wg sync.WaitGroup
			errs := make(chan error, rooms)
			for r := range rooms {
				room := privateRoom(b, alice)
				wg.Add(1)
				go func() {
					defer wg.Done()
					// Several senders per room: the room worker commits them in groups.
					var inner sync.WaitGroup
					for w := range 8 {
						inner.Add(1)
						go func() {
							defer inner.Done()
							for i := w; i < perRoom; i += 8 {
								n := r*perRoom + i
								content, _ := json.Marshal(map[string]string{"msgtype": "m.text",
									"body": fmt.Sprintf("message %s %s %s and some more filler text", benchWord(n%100), benchWord(1000+n), benchWord(20000+n%7))})
								if _, err := srv.Rooms.Send(ctx, roomserver.SendRequest{Sender: alice.UserID, DeviceID: alice.DeviceID,
									RoomID: room, Type: "m.room.message", Content: content, TxnID: fmt.Sprintf("b%d", n)}); err != nil {
									errs <- err
									return
								}
							}
						}()
					}
					inner.Wait()
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				b.Fatal(err)
			}
			cases := []struct {
				name, term string
				count      int64
			}{
				{"all", "message", rooms * perRoom},
				{"1pct", benchWord(42), rooms * perRoom / 100},
				{"one", benchWord(1000 + 4242), 1},
			}
			for _, c := range cases {
				for _, order := range []string{"rank", "recent"} {
					b.Run(c.name+"/"+order, func(b *testing.B) {
						for b.Loop() {
							re := mustSearch(b, alice, map[string]any{"search_term": c.term, "order_by": order}, "")
							if re.Get("count").Int() != c.count || len(re.Get("results").Array()) != min(int(c.count), 10) {
								b.Fatalf("%s: count %d, %d results", c.term, re.Get("count").Int(), len(re.Get("results").Array()))
							}
						}
					})
				}
			}
			b.Run("all/recent/page5", func(b *testing.B) {
				next := ""
				for range 4 {
					next = mustSearch(b, alice, map[string]any{"search_term": "message", "order_by": "recent"}, next).Get("next_batch").Str
				}
				for b.Loop() {
					mustSearch(b, alice, map[string]any{"search_term": "message", "order_by": "recent"}, next)
				}
			})
		})
	}
}
