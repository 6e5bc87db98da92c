package tests

import (
	"context"
	"testing"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/homeserver/testserver"
	"github.com/myelin-chat/myelin/push"
)

// TestFollowerHandlesWhatItMissedAcrossRestart: a follower keeps its cursor
// in the store, so an event committed while it is not running (stopped, or
// the process died before it got there) is handled once the server is back.
// Here the follower that copies push rules to an upgraded room is stopped,
// the room is upgraded (nothing copied), the server restarts, and the rules
// arrive.
func TestFollowerHandlesWhatItMissedAcrossRestart(t *testing.T) {
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			conf := restartableOptions(t, nil)
			srv := testserver.Start(t, backend, conf)
			alice := srv.Register(t, "alice")
			old := createRoom(t, alice, nil)
			if r := clientCall(t, alice, "PUT", "/_matrix/client/v3/pushrules/global/room/"+string(old),
				map[string]any{"actions": []string{"dont_notify"}}); r.Status != 200 {
				t.Fatalf("PUT room rule = %d %s", r.Status, r.Raw)
			}
			stopped := false
			for _, f := range srv.Followers {
				if f.Name() == push.UpgradeFollower {
					f.Close()
					stopped = true
				}
			}
			if !stopped {
				t.Fatalf("no follower named %s", push.UpgradeFollower)
			}
			r := upgradeRoom(t, alice, old, "11")
			if r.Status != 200 {
				t.Fatalf("upgrade = %d %s", r.Status, r.Raw)
			}
			newRoom := id.RoomID(r.Body["replacement_room"].(string))
			rules := clientCall(t, alice, "GET", "/_matrix/client/v3/pushrules/global/room/"+string(newRoom), nil)
			if rules.Status != 404 {
				t.Fatalf("rules copied with the follower stopped: %d %s", rules.Status, rules.Raw)
			}

			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := srv.Shutdown(ctx); err != nil {
				t.Fatal(err)
			}
			srv2 := testserver.Start(t, backend, conf)
			alice2 := srv2.Client(t)
			alice2.SetCredentials(alice.UserID, alice.AccessToken)
			alice2.DeviceID = alice.DeviceID
			syncUntil(t, alice2, "", "", syncHasRoomPushRule(newRoom))
			rules = clientCall(t, alice2, "GET", "/_matrix/client/v3/pushrules/global/room/"+string(newRoom), nil)
			if rules.Status != 200 || rules.Body["actions"].([]any)[0] != "dont_notify" {
				t.Fatalf("after the restart: the new room's rule = %d %s", rules.Status, rules.Raw)
			}
		})
	}
}
