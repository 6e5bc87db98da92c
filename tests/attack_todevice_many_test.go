package tests

import (
	"fmt"
	"testing"
	"time"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

// TestSendToDeviceToManyUsers: one sendToDevice naming 20,000 users of this
// server (10 devices each, a 4 MB body) is answered in seconds, not after a
// scan of every local user per message (20 s of CPU per request before), and
// a real recipient among them gets its message.
func TestSendToDeviceToManyUsers(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		alice, mallory := srv.Register(t, "alice"), srv.Register(t, "mallory")
		since := syncOnce(t, alice, "", "", 0).NextBatch
		msgs := map[string]any{alice.UserID.String(): map[string]any{alice.DeviceID.String(): map[string]string{"marker": "real"}}}
		for i := range 20_000 {
			devs := map[string]any{}
			for k := range 10 {
				devs[fmt.Sprintf("D%d", k)] = map[string]int{"n": k}
			}
			msgs[fmt.Sprintf("@u%d:%s", i, srv.Config.ServerName)] = devs
		}
		start := time.Now()
		r := clientCall(t, mallory, "PUT", "/_matrix/client/v3/sendToDevice/m.test/many", map[string]any{"messages": msgs})
		if r.Status != 200 {
			t.Fatalf("sendToDevice: %d %.300s", r.Status, r.Raw)
		}
		took := time.Since(start)
		t.Logf("sendToDevice to 200,000 devices: %v", took)
		if took > 8*time.Second {
			t.Errorf("sendToDevice to 200,000 devices took %v", took)
		}
		if !hasToDevice(syncOnce(t, alice, since, "", 0), "real") {
			t.Error("the real recipient got no message")
		}
	})
}
