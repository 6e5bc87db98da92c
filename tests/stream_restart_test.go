package tests

import (
	"context"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

// TestSyncAcrossRestartWithAcknowledgedToDevice: a client holds a sync token
// whose position no surviving row carries (its to-device messages were
// acknowledged and deleted; a to-device message to a device that does not
// exist took a position and stored nothing). After a restart that token must
// still be valid, and what is sent afterwards — a room message and a
// to-device key — must reach the client, once, and not be deleted unseen by
// the next acknowledgement.
func TestSyncAcrossRestartWithAcknowledgedToDevice(t *testing.T) {
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			conf := restartableOptions(t, nil)
			srv := testserver.Start(t, backend, conf)
			alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
			room := shareRoom(t, alice, bob)
			a := alice.UserID.String()
			toDevice := func(c *mautrix.Client, txn, device, marker string) {
				keysMustCall(t, c, "PUT", "/_matrix/client/v3/sendToDevice/m.room_key/"+txn, map[string]any{
					"messages": map[string]any{a: map[string]any{device: map[string]string{"marker": marker}}}})
			}
			toDevice(bob, "before", alice.DeviceID.String(), "before")
			first := syncUntil(t, alice, "", "", func(r *mautrix.RespSync) bool { return hasToDevice(r, "before") })
			// Acknowledge (deletes the message), then take a position with no row behind it.
			acked := syncOnce(t, alice, first.NextBatch, "", 0)
			toDevice(bob, "nowhere", "NO_SUCH_DEVICE", "lost")
			held := syncOnce(t, alice, acked.NextBatch, "", 0).NextBatch

			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := srv.Shutdown(ctx); err != nil {
				t.Fatal(err)
			}
			srv2 := testserver.Start(t, backend, conf)
			reconnect := func(c *mautrix.Client) *mautrix.Client {
				c2 := srv2.Client(t)
				c2.SetCredentials(c.UserID, c.AccessToken)
				c2.DeviceID = c.DeviceID
				return c2
			}
			alice2, bob2 := reconnect(alice), reconnect(bob)
			toDevice(bob2, "after", alice.DeviceID.String(), "after")
			msg := sendText(t, bob2, room, "after restart")

			resp, err := alice2.SyncRequest(context.Background(), 5000, held, "", false, event.PresenceOnline)
			if err != nil {
				t.Fatalf("sync with a token held across the restart: %v", err)
			}
			gotMsg, gotKey := false, hasToDevice(resp, "after")
			next := resp.NextBatch
			if jr := resp.Rooms.Join[room]; jr != nil {
				gotMsg = syncHasEvent(jr.Timeline.Events, msg)
			}
			for i := 0; (!gotMsg || !gotKey) && i < 10; i++ {
				r := syncOnce(t, alice2, next, "", 2000)
				gotKey = gotKey || hasToDevice(r, "after")
				if jr := r.Rooms.Join[room]; jr != nil && syncHasEvent(jr.Timeline.Events, msg) {
					gotMsg = true
				}
				next = r.NextBatch
			}
			if !gotMsg || !gotKey {
				t.Fatalf("after the restart: message delivered %v, to-device key delivered %v", gotMsg, gotKey)
			}
			// Acknowledged now: never again.
			if r := syncOnce(t, alice2, next, "", 0); hasToDevice(r, "after") {
				t.Fatal("the to-device message was delivered twice")
			}
		})
	}
}

func hasToDevice(r *mautrix.RespSync, marker string) bool {
	for _, ev := range r.ToDevice.Events {
		if ev.Content.Raw["marker"] == marker {
			return true
		}
	}
	return false
}
