package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/myelin-chat/myelin/homeserver/testserver"
	"github.com/myelin-chat/myelin/keyserver"
)

// A room of 500 devices: 100 users with 5 devices each.
const benchUsers, benchDevicesPerUser = 100, 5

type benchRoom struct {
	srv      *testserver.Server
	devices  []*testDevice
	otkRound int
}

func newBenchRoom(b *testing.B, backend string) *benchRoom {
	b.Helper()
	r := &benchRoom{srv: testserver.Start(b, backend)}
	for u := 0; u < benchUsers; u++ {
		for d := 0; d < benchDevicesPerUser; d++ {
			dev := newTestDevice(fmt.Sprintf("@user%03d:localhost", u), fmt.Sprintf("DEV%d", d))
			r.devices = append(r.devices, dev)
			r.upload(b, dev, map[string]any{
				"device_keys":   dev.deviceKeys(b),
				"fallback_keys": map[string]any{"signed_curve25519:fb": dev.signedKey(b, true)},
			})
		}
	}
	return r
}

func (r *benchRoom) upload(b *testing.B, dev *testDevice, body map[string]any) {
	raw, _ := json.Marshal(body)
	var req keyserver.UploadRequest
	if err := json.Unmarshal(raw, &req); err != nil {
		b.Fatal(err)
	}
	if _, err := r.srv.Keys.Upload(context.Background(), dev.user, dev.device, &req); err != nil {
		b.Fatal(err)
	}
}

// refillOTKs gives every device n fresh one-time keys.
func (r *benchRoom) refillOTKs(b *testing.B, n int) {
	r.otkRound++
	for _, dev := range r.devices {
		r.upload(b, dev, map[string]any{"one_time_keys": dev.oneTimeKeys(b, fmt.Sprintf("r%d", r.otkRound), n)})
	}
}

func (r *benchRoom) queryBody() map[string]any {
	users := map[string]any{}
	for _, d := range r.devices {
		users[d.user] = []string{}
	}
	return map[string]any{"device_keys": users}
}

func (r *benchRoom) claimBody() map[string]any {
	users := map[string]any{}
	for _, d := range r.devices {
		m, _ := users[d.user].(map[string]string)
		if m == nil {
			m = map[string]string{}
			users[d.user] = m
		}
		m[d.device] = "signed_curve25519"
	}
	return map[string]any{"one_time_keys": users}
}

// BenchmarkKeysQuery500 is POST /keys/query for every member of a room of 500 devices, over HTTP.
func BenchmarkKeysQuery500(b *testing.B) {
	for _, backend := range testserver.Backends {
		b.Run(backend, func(b *testing.B) {
			r := newBenchRoom(b, backend)
			c := r.srv.Register(b, "requester")
			body := r.queryBody()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				out := keysMustCall(b, c, "POST", "/_matrix/client/v3/keys/query", body)
				if len(obj(out["device_keys"])) != benchUsers {
					b.Fatalf("got %d users", len(obj(out["device_keys"])))
				}
			}
		})
	}
}

// BenchmarkKeysClaim500 is POST /keys/claim of one one-time key from each of 500 devices, over HTTP.
func BenchmarkKeysClaim500(b *testing.B) {
	for _, backend := range testserver.Backends {
		b.Run(backend, func(b *testing.B) {
			r := newBenchRoom(b, backend)
			c := r.srv.Register(b, "requester")
			body := r.claimBody()
			const perRefill = 20
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if i%perRefill == 0 {
					b.StopTimer()
					r.refillOTKs(b, perRefill)
					b.StartTimer()
				}
				out := keysMustCall(b, c, "POST", "/_matrix/client/v3/keys/claim", body)
				if len(obj(out["one_time_keys"])) != benchUsers {
					b.Fatalf("got keys of %d users", len(obj(out["one_time_keys"])))
				}
			}
		})
	}
}
