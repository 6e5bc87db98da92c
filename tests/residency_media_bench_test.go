package tests

import (
	"context"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

// BenchmarkResidencyMediaServe: the cost of the reference lookup per media
// request served to another server. a1.test runs zone a's policy; an image
// is posted in a room among 500 other messages. "served" is what
// /_matrix/federation/v1/media/download does for a2 (decision: record and
// tail lookup, the room's zone; then the item opened); "lookup_only" the
// same item without the decision; "refused" an unreferenced item asked by
// a2 (the whole lookup, then the refusal); "record_queries" the store's
// part of the decision alone. "served" and "refused" include queueing their
// audit record.
//
//	go test -tags goolm -run '^$' -bench BenchmarkResidencyMediaServe ./tests/
func BenchmarkResidencyMediaServe(b *testing.B) {
	for _, backend := range testserver.Backends {
		b.Run(backend, func(b *testing.B) {
			srv := testserver.Start(b, backend, testserver.Options{ServerName: "a1.test", Configure: residencyPolicy()})
			ctx := context.Background()
			alice := srv.Register(b, "alice")
			room := createRoom(b, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
			up := func(content string) string {
				resp, err := alice.UploadBytes(ctx, []byte(content), "text/plain")
				if err != nil {
					b.Fatal(err)
				}
				return resp.ContentURI.FileID
			}
			for i := range 500 {
				sendText(b, alice, room, "message "+string(rune('a'+i%26)))
			}
			id := up("shared")
			lone := up("never shared")
			if _, err := alice.SendMessageEvent(ctx, room, event.EventMessage, map[string]any{
				"msgtype": "m.image", "body": "p.png", "url": "mxc://a1.test/" + id}); err != nil {
				b.Fatal(err)
			}
			for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
				if rooms, _ := srv.DB.MediaRefRooms(ctx, "mxc://a1.test/"+id, 4); len(rooms) > 0 {
					break
				}
				if time.Now().After(deadline) {
					b.Fatal("the follower never recorded the image")
				}
			}
			b.Run("served", func(b *testing.B) {
				for b.Loop() {
					_, _, body, err := srv.Media.ServeMedia(ctx, "a2.test", id, 0)
					if err != nil {
						b.Fatal(err)
					}
					body.Close()
				}
			})
			b.Run("lookup_only", func(b *testing.B) {
				for b.Loop() {
					m, err := srv.Media.Lookup(ctx, "a1.test", id, 0, false)
					if err != nil {
						b.Fatal(err)
					}
					f, err := srv.Media.Open(m)
					if err != nil {
						b.Fatal(err)
					}
					f.Close()
				}
			})
			b.Run("record_queries", func(b *testing.B) { // the store's part of the decision
				for b.Loop() {
					if rooms, err := srv.DB.MediaRefRooms(ctx, "mxc://a1.test/"+id, 64); err != nil || len(rooms) != 1 {
						b.Fatal(rooms, err)
					}
					if _, err := srv.DB.MediaRefTail(ctx, "mxc://a1.test/"+id, 64); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run("refused", func(b *testing.B) {
				for b.Loop() {
					if _, _, _, err := srv.Media.ServeMedia(ctx, "a2.test", lone, 0); err == nil {
						b.Fatal("an unreferenced item was served")
					}
				}
			})
		})
	}
}
