package keyserver

import (
	"context"
	"fmt"
	"testing"

	"github.com/myelin-chat/myelin/internal/pgtest"
	"github.com/myelin-chat/myelin/storage"
)

// BenchmarkRemoteKeyQuery is a client /keys/query for 500 remote users (2
// devices and master/self-signing keys each) spread over 5 servers, all
// sharing a room with us: cold (every list stale: each server asked, its
// answer checked — signatures verified — and cached) and warm (answered
// from the cache). The servers answer at once (an in-memory fake): the
// figures are this server's cost, without the network's.
func BenchmarkRemoteKeyQuery(b *testing.B) {
	for _, backend := range pgtest.Backends {
		b.Run(backend, func(b *testing.B) {
			ctx := context.Background()
			db, err := storage.Open(ctx, pgtest.StoreURL(b, backend), 8)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(db.Close)
			fed := &devicesFed{lists: map[string]*UserDevicesResponse{}, fail: map[string]bool{}, calls: map[string]int{}}
			store := sharingStore{DB: db, shared: map[string]int64{}}
			req := &QueryRequest{DeviceKeys: map[string][]string{}}
			var users []string
			for i := range 500 {
				u := fmt.Sprintf("@u%d:s%d.example", i, i%5)
				master, ssk, _ := crossSigning(b, u)
				fed.lists[u] = &UserDevicesResponse{UserID: u, MasterKey: master, SelfSigningKey: ssk, Devices: []UserDevice{
					{DeviceID: "D1", DisplayName: "phone", Keys: deviceKeys(b, u, "D1")}, {DeviceID: "D2", Keys: deviceKeys(b, u, "D2")}}}
				store.shared[u] = 0
				req.DeviceKeys[u] = nil
				users = append(users, u)
			}
			s := New(Options{Store: store, Stream: db.Stream, Notifier: &recordingNotifier{}, Members: sharedRooms{},
				Federation: fed, ServerName: "local.example"})
			check := func(resp *QueryResponse) {
				if len(resp.DeviceKeys) != 500 || len(resp.MasterKeys) != 500 || len(resp.Failures) != 0 {
					b.Fatalf("%d users' keys, %d master keys, failures %v", len(resp.DeviceKeys), len(resp.MasterKeys), resp.Failures)
				}
			}
			b.Run("cold", func(b *testing.B) {
				for b.Loop() {
					b.StopTimer()
					for _, u := range users {
						if err := db.MarkRemoteDeviceListStale(ctx, u, 0); err != nil {
							b.Fatal(err)
						}
					}
					b.StartTimer()
					resp, err := s.Query(ctx, "@alice:local.example", req)
					if err != nil {
						b.Fatal(err)
					}
					check(resp)
				}
			})
			b.Run("warm", func(b *testing.B) {
				for b.Loop() {
					resp, err := s.Query(ctx, "@alice:local.example", req)
					if err != nil {
						b.Fatal(err)
					}
					check(resp)
				}
			})
		})
	}
}
