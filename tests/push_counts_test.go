package tests

import (
	"context"
	"net/url"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

// TestPushCountsMatchSyncAfterRestart: push delivery computes its recipients'
// counts in batches (one read per room for all of them); after a restart,
// with every count cold, each push's counts.unread is the user's total of
// /sync's notification_count over their joined rooms: a read receipt part
// way (bob), two rooms (bob, carol), a leave and rejoin (dave: only what
// came after the rejoin counts), a threaded reply (counted unthreaded).
func TestPushCountsMatchSyncAfterRestart(t *testing.T) {
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			gw := newPushGateway(t)
			conf := restartableOptions(t, pushTestConfig)
			srv := testserver.Start(t, backend, conf)
			alice, bob, carol, dave := srv.Register(t, "alice"), srv.Register(t, "bob"), srv.Register(t, "carol"), srv.Register(t, "dave")
			users := []*mautrix.Client{bob, carol, dave}
			for _, c := range users {
				if r := setHTTPPusher(t, c, "org.example.app", c.UserID.Localpart()+"key", gw.URL(), nil); r.Status != 200 {
					t.Fatalf("pushers/set = %d %s", r.Status, r.Raw)
				}
			}
			room1 := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"}, bob, carol, dave)
			room2 := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"}, bob, carol)
			m1 := sendText(t, alice, room1, "m1")
			m2 := sendText(t, alice, room1, "m2")
			sendText(t, alice, room1, "m3")
			sendText(t, alice, room2, "r1")
			sendText(t, alice, room2, "r2")
			if err := bob.MarkRead(ctx, room1, m2); err != nil {
				t.Fatal(err)
			}
			if _, err := dave.LeaveRoom(ctx, room1); err != nil {
				t.Fatal(err)
			}
			sendText(t, alice, room1, "m4")
			joinRoom(t, dave, room1)
			if _, err := alice.SendMessageEvent(ctx, room1, event.EventMessage, map[string]any{"msgtype": "m.text", "body": "t1",
				"m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": string(m1)}}); err != nil {
				t.Fatal(err)
			}
			last := sendText(t, alice, room1, "m5")
			for _, c := range users {
				gw.pushFor(t, c.UserID.Localpart()+"key", string(last))
			}

			// A restart: every cached count is gone.
			sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			if err := srv.Shutdown(sctx); err != nil {
				t.Fatal(err)
			}
			srv = testserver.Start(t, backend, conf)
			u, err := url.Parse(srv.URL)
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range append(users, alice) {
				c.HomeserverURL = u
			}
			after := sendText(t, alice, room1, "after the restart")
			// bob: m3, m4, t1, m5, this one in room1 and r1, r2; carol: all 7
			// of room1 and 2 of room2; dave: t1, m5 and this one.
			want := map[id.UserID]int{bob.UserID: 7, carol.UserID: 9, dave.UserID: 3}
			for _, c := range users {
				n := gw.pushFor(t, c.UserID.Localpart()+"key", string(after))
				counts, _ := n["counts"].(map[string]any)
				got, _ := counts["unread"].(float64)
				synced := syncNotificationTotal(t, c)
				if int(got) != want[c.UserID] || synced != want[c.UserID] {
					t.Errorf("%s: push counts.unread = %v, /sync total = %d, want %d", c.UserID, got, synced, want[c.UserID])
				}
			}
		})
	}
}

// syncNotificationTotal is the sum of notification_count over the user's
// joined rooms in an initial /sync.
func syncNotificationTotal(t *testing.T, c *mautrix.Client) int {
	t.Helper()
	r := clientCall(t, c, "GET", "/_matrix/client/v3/sync", nil)
	if r.Status != 200 {
		t.Fatalf("/sync = %d %s", r.Status, r.Raw)
	}
	rooms, _ := r.Body["rooms"].(map[string]any)
	joined, _ := rooms["join"].(map[string]any)
	total := 0
	for _, room := range joined {
		unread, _ := room.(map[string]any)["unread_notifications"].(map[string]any)
		n, _ := unread["notification_count"].(float64)
		total += int(n)
	}
	return total
}
