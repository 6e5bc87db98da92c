package roomserver

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/storage"
)

// roomWithMembers creates a public room and joins n users concurrently (so
// that the joins group-commit like real traffic would).
func roomWithMembers(tb testing.TB, s *Server, n int) id.RoomID {
	tb.Helper()
	ctx := context.Background()
	roomID, err := s.CreateRoom(ctx, user("owner"), &CreateRoomRequest{Preset: "public_chat"})
	if err != nil {
		tb.Fatal(err)
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func(i int) {
			defer wg.Done()
			defer func() { <-sem }()
			if _, err := s.Join(ctx, user(fmt.Sprintf("m%05d", i)), string(roomID), ""); err != nil {
				errs <- err
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		tb.Fatal(err)
	}
	return roomID
}

// BenchmarkSendMessages measures messages/s into one room with 1,000
// members from 64 concurrent senders (embedded SQLite).
func BenchmarkSendMessages(b *testing.B) {
	s := newTestServer(b)
	roomID := roomWithMembers(b, s, 1000)
	ctx := context.Background()
	var n atomic.Int64
	b.SetParallelism(32) // × GOMAXPROCS senders
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			sender := user(fmt.Sprintf("m%05d", i%1000))
			if _, err := s.Send(ctx, SendRequest{Sender: sender, DeviceID: "DEV", RoomID: roomID, Type: "m.room.message",
				Content: []byte(fmt.Sprintf(`{"msgtype":"m.text","body":"message %d"}`, i)), TxnID: fmt.Sprint("t", i)}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

// BenchmarkStoragePerMessage measures the rows and bytes one message adds in
// rooms of 100 and 10,000 members: the figures must not grow with the
// member count.
func BenchmarkStoragePerMessage(b *testing.B) {
	for _, members := range []int{100, 10000} {
		b.Run(fmt.Sprintf("members=%d", members), func(b *testing.B) {
			s := newTestServer(b)
			roomID := roomWithMembers(b, s, members)
			ctx := context.Background()
			rows0, bytes0, err := s.db.(*storage.DB).RoomStorageFootprint(ctx, string(roomID))
			if err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := s.Send(ctx, SendRequest{Sender: user("m00001"), DeviceID: "DEV", RoomID: roomID, Type: "m.room.message",
					Content: []byte(`{"msgtype":"m.text","body":"hello"}`)}); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			rows1, bytes1, err := s.db.(*storage.DB).RoomStorageFootprint(ctx, string(roomID))
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(rows1-rows0)/float64(b.N), "rows/msg")
			b.ReportMetric(float64(bytes1-bytes0)/float64(b.N), "bytes/msg")
		})
	}
}
