package tests

import (
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

// TestKeyClaimOfManyDevicesDoesNotHoldWriters: one /keys/claim naming 200,000
// devices that do not exist (a 5 MB body) must not become 200,000 writes in
// one transaction: on SQLite that held the single writer for tens of seconds,
// and every room message waited. It answers quickly, others' writes go
// through meanwhile, and real devices in the same request still get their keys.
func TestKeyClaimOfManyDevicesDoesNotHoldWriters(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		alice, bob, mallory := srv.Register(t, "alice"), srv.Register(t, "bob"), srv.Register(t, "mallory")
		d := uploadDevice(t, alice, 0)
		keysMustCall(t, alice, "POST", "/_matrix/client/v3/keys/upload", map[string]any{
			"one_time_keys": map[string]any{"signed_curve25519:k1": d.signedKey(t, false)}})
		room := shareRoom(t, bob)

		claims := map[string]any{alice.UserID.String(): map[string]string{alice.DeviceID.String(): "signed_curve25519"}}
		for i := range 20_000 {
			devs := map[string]string{}
			for k := range 10 {
				devs[fmt.Sprintf("D%d", k)] = "signed_curve25519"
			}
			claims[fmt.Sprintf("@u%d:%s", i, srv.Config.ServerName)] = devs
		}
		type result struct {
			r       rawResp
			elapsed time.Duration
		}
		done := make(chan result, 1)
		go func() {
			start := time.Now()
			r := clientCall(t, mallory, "POST", "/_matrix/client/v3/keys/claim", map[string]any{"one_time_keys": claims})
			done <- result{r, time.Since(start)}
		}()
		time.Sleep(time.Second) // the claim is being decoded or run
		start := time.Now()
		r := clientCall(t, bob, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(string(room))+"/send/m.room.message/during",
			map[string]any{"msgtype": "m.text", "body": "during a big claim"})
		if r.Status != 200 {
			t.Fatalf("send during the claim: %d %s", r.Status, r.Raw)
		}
		if waited := time.Since(start); waited > 5*time.Second {
			t.Errorf("a room message waited %v for a key claim", waited)
		}
		res := <-done
		if res.r.Status != 200 {
			t.Fatalf("claim: %d %.300s", res.r.Status, res.r.Raw)
		}
		if res.elapsed > 15*time.Second {
			t.Errorf("a claim of 200,000 unknown devices took %v", res.elapsed)
		}
		if got := obj(obj(res.r.Body["one_time_keys"])[alice.UserID.String()])[alice.DeviceID.String()]; got == nil {
			t.Errorf("alice's real device got no key: %.300s", res.r.Raw)
		}
	})
}
