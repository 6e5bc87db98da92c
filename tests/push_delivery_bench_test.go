package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"testing"
	"time"

	"maunium.net/go/mautrix"

	"github.com/myelin-chat/myelin/homeserver/testserver"
	"github.com/myelin-chat/myelin/push"
)

// BenchmarkPushDelivery: 1,000 users, each with an http pusher at one push
// gateway on loopback, in one room; one op is a message sent into it, until
// the gateway has taken its 1,000 pushes (the follower queues them, the
// delivery pool sends them). Reported: pushes per second, and the latency
// from the send call to each push's arrival at the gateway (p50, p99), of
// messages after a first one (cold-s: the time its 1,000 pushes took).
func BenchmarkPushDelivery(b *testing.B) {
	const users = 1000
	for _, backend := range testserver.Backends {
		b.Run(backend, func(b *testing.B) {
			ctx := context.Background()
			gw := newPushGateway(b)
			srv := testserver.Start(b, backend, testserver.Options{Configure: pushTestConfig})
			alice := srv.Register(b, "alice")
			room := createRoom(b, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
			joinLocalMembers(b, srv, room, users)
			data, _ := json.Marshal(map[string]string{"url": gw.URL()})
			for i := range users {
				app, key, kind := "org.example.bench", fmt.Sprintf("key%05d", i), "http"
				if err := srv.Push.SetPusher(ctx, string(srv.UserID(fmt.Sprintf("m%05d", i))), "DEV", push.PusherRequest{
					AppID: &app, PushKey: &key, Kind: &kind, AppDisplayName: "App", DeviceDisplayName: "Phone",
					Lang: "en", Data: data}); err != nil {
					b.Fatal(err)
				}
			}
			pushFollowerAt(b, srv, srv.DB.Stream.Current(), 5*time.Minute)
			var lat []time.Duration
			total := 0
			// The first message after a start computes every member's unread
			// counts from their join (later ones add to the cached counts, as
			// /sync's do): timed apart, as cold-s.
			var cold time.Duration
			for i := -1; i < b.N; i++ {
				if i == 0 {
					b.ResetTimer()
				}
				sent := time.Now()
				ev := sendText(b, alice, room, fmt.Sprintf("bench %d", i))
				deadline := time.Now().Add(5 * time.Minute)
				for {
					var arrived []time.Duration
					gw.mu.Lock()
					for _, p := range gw.taken {
						if p.Notification["event_id"] == string(ev) {
							arrived = append(arrived, p.At.Sub(sent))
						}
					}
					gw.mu.Unlock()
					if len(arrived) >= users {
						if i < 0 {
							cold = time.Since(sent)
							break
						}
						lat = append(lat, arrived...)
						total += len(arrived)
						break
					}
					if time.Now().After(deadline) {
						b.Fatalf("op %d: %d of %d pushes arrived", i, len(arrived), users)
					}
					time.Sleep(2 * time.Millisecond)
				}
			}
			b.StopTimer()
			sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
			b.ReportMetric(cold.Seconds(), "cold-s")
			b.ReportMetric(float64(total)/b.Elapsed().Seconds(), "pushes/s")
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
		})
	}
}

// pushFollowerAt waits until the push delivery follower has handled pos.
func pushFollowerAt(tb testing.TB, srv *testserver.Server, pos int64, within time.Duration) {
	tb.Helper()
	deadline := time.Now().Add(within)
	for {
		for _, f := range srv.Followers {
			if f.Name() == push.DeliveryFollower && f.Position() >= pos {
				return
			}
		}
		if time.Now().After(deadline) {
			tb.Fatalf("the push follower did not reach %d within %s", pos, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
