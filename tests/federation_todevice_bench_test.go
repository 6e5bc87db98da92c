package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/myelin-chat/myelin/homeserver/testserver"
	"github.com/myelin-chat/myelin/internal/config"
	"github.com/myelin-chat/myelin/storage"
)

// BenchmarkFederationToDeviceFanout: one PUT /sendToDevice from a.test to
// 1,000 devices of users on 5 other servers (200 each); the time until every
// device holds the message on its server (ms/fanout).
func BenchmarkFederationToDeviceFanout(b *testing.B) {
	const servers, devices = 5, 200
	names := []string{"a.test"}
	for i := 1; i <= servers; i++ {
		names = append(names, fmt.Sprintf("s%d.test", i))
	}
	fast := func(c *config.Config) {
		c.Federation.Sender.MinBackoff.Duration = 100 * time.Millisecond
		c.Federation.Sender.MaxBackoff.Duration = time.Second
	}
	for _, backend := range testserver.Backends {
		b.Run(backend, func(b *testing.B) {
			ctx := context.Background()
			n := newFedNet(b, names...)
			a := n.start(b, backend, "a.test", fast)
			alice := a.Register(b, "alice")
			type target struct {
				srv  *testserver.Server
				user string
				devs []string
			}
			var targets []target
			for _, name := range names[1:] {
				s := n.start(b, backend, name, fast)
				u := s.Register(b, "u")
				tg := target{srv: s, user: u.UserID.String(), devs: []string{u.DeviceID.String()}}
				for d := 1; d < devices; d++ {
					dev := fmt.Sprintf("DEV%03d", d)
					if err := s.DB.CreateDeviceWithToken(ctx, storage.Device{UserID: tg.user, DeviceID: dev, CreatedTS: 1},
						fmt.Sprintf("hash-%s-%s", name, dev), 0, ""); err != nil {
						b.Fatal(err)
					}
					tg.devs = append(tg.devs, dev)
				}
				targets = append(targets, tg)
			}
			messages := func(i int) map[string]map[string]any {
				out := map[string]map[string]any{}
				for _, tg := range targets {
					m := map[string]any{}
					for _, d := range tg.devs {
						m[d] = map[string]any{"n": i, "ciphertext": "an olm message of about a hundred bytes, as clients send them......"}
					}
					out[tg.user] = m
				}
				return out
			}
			// has: every device of every target holds message i.
			has := func(i int, all bool) bool {
				for _, tg := range targets {
					devs := tg.devs[len(tg.devs)-1:] // stored per EDU in one commit: the last stands for its EDU
					if all {
						devs = tg.devs
					}
					for _, d := range devs {
						msgs, err := tg.srv.DB.ToDeviceSince(ctx, tg.user, d, 0, 1000)
						if err != nil {
							b.Fatal(err)
						}
						found := false
						for _, m := range msgs {
							var c struct{ N int }
							if json.Unmarshal(m.Content, &c) == nil && c.N == i {
								found = true
							}
						}
						if !found {
							return false
						}
					}
				}
				return true
			}
			round := 0
			send := func(b *testing.B) time.Duration {
				round++
				start := time.Now()
				sendToDeviceB(b, alice.AccessToken, a.URL, fmt.Sprintf("fan%d", round), messages(round))
				for !has(round, false) {
					if time.Since(start) > time.Minute {
						b.Fatalf("round %d not delivered after a minute", round)
					}
					time.Sleep(2 * time.Millisecond)
				}
				return time.Since(start)
			}
			send(b) // warm-up: keys fetched, connections open
			if !has(1, true) {
				b.Fatal("the warm-up did not reach every device")
			}
			b.Run("fanout", func(b *testing.B) {
				var total time.Duration
				for i := 0; i < b.N; i++ {
					total += send(b)
				}
				b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms/fanout")
			})
			if !has(round, true) {
				b.Fatal("the last round did not reach every device")
			}
		})
	}
}

func sendToDeviceB(b *testing.B, token, url, txnID string, msgs map[string]map[string]any) {
	b.Helper()
	r := httpCall(b, url, "PUT", "/_matrix/client/v3/sendToDevice/m.test/"+txnID, token, map[string]any{"messages": msgs})
	if r.Status != 200 {
		b.Fatalf("sendToDevice: %d %.300s", r.Status, r.Raw)
	}
}
