package tests

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"maunium.net/go/mautrix"

	"github.com/myelin-chat/myelin/homeserver/testserver"
	"github.com/myelin-chat/myelin/storage"
)

// TestDeviceListAnnouncedAfterCrash: alice@a.test shares a room with
// bob@b.test, whose server caches her device list. a.test stores a new device's keys and dies before queueing
// its m.device_list_update (simulated by writing the upload's transaction
// into a.test's store while it is down, which is exactly what a crash after
// answering the client leaves). On restart a.test announces it: b.test's
// cache holds the device under the next stream_id in alice's chain (no
// resync needed) and bob's /sync names alice in device_lists.changed.
func TestDeviceListAnnouncedAfterCrash(t *testing.T) {
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) {
			n := newFedNet(t, "a.test", "b.test")
			startA := n.restartable(t, backend, "a.test")
			a := startA()
			b := n.start(t, backend, "b.test")
			ctx := ctxT(t)
			alice, bob := a.Register(t, "alice"), b.Register(t, "bob")
			user := alice.UserID.String()
			dev := newTestDevice(user, alice.DeviceID.String())
			keysMustCall(t, alice, "POST", "/_matrix/client/v3/keys/upload", map[string]any{"device_keys": dev.deviceKeys(t)})
			room := createRoom(t, bob, &mautrix.ReqCreateRoom{Preset: "public_chat"})
			if _, err := alice.JoinRoom(ctx, string(room), &mautrix.ReqJoinRoom{Via: []string{"b.test"}}); err != nil {
				t.Fatal(err)
			}
			// bob's query fills b.test's cache (its stream_id unknown); alice's
			// rename then reaches b.test, which resyncs to a known stream_id.
			keysMustCall(t, bob, "POST", "/_matrix/client/v3/keys/query", map[string]any{"device_keys": map[string]any{user: []string{}}})
			if r := clientCall(t, alice, "PUT", "/_matrix/client/v3/devices/"+alice.DeviceID.String(), map[string]string{"display_name": "laptop"}); r.Status != 200 {
				t.Fatalf("rename: %d %s", r.Status, r.Raw)
			}
			cached := func() *storage.RemoteDeviceList {
				lists, err := b.DB.RemoteDeviceLists(context.Background(), []string{user})
				if err != nil {
					t.Fatal(err)
				}
				return lists[user]
			}
			deadline := time.Now().Add(20 * time.Second)
			for (cached() == nil || cached().StreamID <= 0) && time.Now().Before(deadline) {
				time.Sleep(50 * time.Millisecond)
			}
			l := cached()
			if l == nil || l.StreamID <= 0 {
				t.Fatal("b.test never learned alice's device list at a known stream_id")
			}
			first := l.StreamID
			login, err := a.Client(t).Login(ctx, &mautrix.ReqLogin{Type: mautrix.AuthTypePassword,
				Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "alice"}, Password: "password-alice"})
			if err != nil {
				t.Fatal(err)
			}
			sync0, err := bob.SyncRequest(ctx, 0, "", "", false, "")
			if err != nil {
				t.Fatal(err)
			}

			// The crash: the new device's keys stored, nothing queued.
			dbURL := a.Config.DatabaseURL()
			if err := a.Shutdown(ctx); err != nil {
				t.Fatal(err)
			}
			db, err := storage.Open(ctx, dbURL, 2)
			if err != nil {
				t.Fatal(err)
			}
			newDev := newTestDevice(user, login.DeviceID.String())
			keyJSON, err := json.Marshal(newDev.deviceKeys(t))
			if err != nil {
				t.Fatal(err)
			}
			pos, finish, err := db.Stream.Allocate()
			if err != nil {
				t.Fatal(err)
			}
			_, err = db.UploadKeys(ctx, storage.KeyUpload{UserID: user, DeviceID: login.DeviceID.String(), StreamPos: pos,
				DeviceKeys: &storage.DeviceKeys{UserID: user, DeviceID: login.DeviceID.String(), Ed25519: newDev.ed, KeyJSON: keyJSON},
				Now:        time.Now().UnixMilli()})
			finish()
			db.Close()
			if err != nil {
				t.Fatal(err)
			}

			startA()
			deadline = time.Now().Add(20 * time.Second)
			for time.Now().Before(deadline) {
				if l := cached(); l != nil && len(l.Devices[login.DeviceID.String()].KeyJSON) > 0 {
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
			l = cached()
			if l == nil || len(l.Devices[login.DeviceID.String()].KeyJSON) == 0 {
				t.Fatal("b.test never learned the device stored before the crash")
			}
			if l.StreamID != first+1 {
				t.Errorf("b.test's cache is at stream_id %d, want %d (the next in alice's chain)", l.StreamID, first+1)
			}
			if !changedSince(t, bob, sync0.NextBatch, user, 20*time.Second) {
				t.Fatal("bob's sync never named alice in device_lists.changed")
			}
		})
	}
}
