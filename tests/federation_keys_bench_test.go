package tests

import (
	"context"
	"fmt"
	"testing"
	"time"

	"maunium.net/go/mautrix"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

// BenchmarkFederationKeyQuery: alice@a.test's POST /keys/query for 500 users
// spread over 5 other Myelin servers (100 each, one device with keys each),
// all sharing a room with her, over loopback HTTP with X-Matrix. cold: every
// cached list marked stale first (outside the timer), so a.test asks each
// server's /user/keys/query, checks every device's self-signature and fills
// its cache; warm: answered from a.test's cache. Every op must return all
// 500 users' devices and no failures.
func BenchmarkFederationKeyQuery(b *testing.B) {
	const servers, users = 5, 100
	names := []string{"a.test"}
	for i := 1; i <= servers; i++ {
		names = append(names, fmt.Sprintf("s%d.test", i))
	}
	for _, backend := range testserver.Backends {
		b.Run(backend, func(b *testing.B) {
			ctx := context.Background()
			n := newFedNet(b, names...)
			a := n.start(b, backend, "a.test")
			alice := a.Register(b, "alice")
			query := map[string]any{}
			var all []string
			for _, name := range names[1:] {
				s := n.start(b, backend, name)
				var members []*mautrix.Client
				for i := range users {
					c := s.Register(b, fmt.Sprintf("u%d", i))
					dev := newTestDevice(c.UserID.String(), c.DeviceID.String())
					keysMustCall(b, c, "POST", "/_matrix/client/v3/keys/upload", map[string]any{"device_keys": dev.deviceKeys(b)})
					members = append(members, c)
					query[c.UserID.String()] = []string{}
					all = append(all, c.UserID.String())
				}
				room := createRoom(b, members[0], &mautrix.ReqCreateRoom{Preset: "public_chat"}, members[1:]...)
				if _, err := alice.JoinRoom(ctx, string(room), &mautrix.ReqJoinRoom{Via: []string{name}}); err != nil {
					b.Fatal(err)
				}
			}
			ask := func(b *testing.B) {
				q := keysMustCall(b, alice, "POST", "/_matrix/client/v3/keys/query", map[string]any{"device_keys": query, "timeout": 30000})
				if len(obj(q["failures"])) != 0 || len(obj(q["device_keys"])) != len(all) {
					b.Fatalf("%d of %d users' devices, failures %v", len(obj(q["device_keys"])), len(all), q["failures"])
				}
			}
			ask(b) // fills the cache (and warms the servers' key caches)
			b.Run("cold", func(b *testing.B) {
				for b.Loop() {
					b.StopTimer()
					for _, u := range all {
						if err := a.DB.MarkRemoteDeviceListStale(ctx, u, time.Now().UnixMilli()); err != nil {
							b.Fatal(err)
						}
					}
					b.StartTimer()
					ask(b)
				}
			})
			b.Run("warm", func(b *testing.B) {
				for b.Loop() {
					ask(b)
				}
			})
		})
	}
}
