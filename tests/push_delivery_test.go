package tests

import (
	"context"
	"fmt"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/homeserver/testserver"
	"github.com/myelin-chat/myelin/internal/config"
	"github.com/myelin-chat/myelin/storage"
)

// pushTestConfig lets pushers name the loopback gateway and retries fast.
func pushTestConfig(c *config.Config) {
	c.Push.AllowPrivateGateways = true
	c.Push.Delivery.MinBackoff = config.Duration{Duration: 50 * time.Millisecond}
	c.Push.Delivery.MaxBackoff = config.Duration{Duration: 200 * time.Millisecond}
}

// TestPushDelivery: notifications reach a real push gateway on loopback as
// the Push Gateway API spells them: an invite and a message in a DM (full
// format: event fields, content, counts, the device with its data less url
// and the rules' tweaks), a mention (highlight), an encrypted event (no
// content, type or sender leaves), a second pusher with format
// event_id_only, a badge-only push after a read receipt, and a pushkey the
// gateway rejects, whose pusher is then removed. Email pushers are refused.
func TestPushDelivery(t *testing.T) {
	forEachBackendWith(t, testserver.Options{Configure: pushTestConfig}, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		gw := newPushGateway(t)
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		if r := clientCall(t, alice, "PUT", "/_matrix/client/v3/profile/"+string(alice.UserID)+"/displayname",
			map[string]any{"displayname": "Alice A"}); r.Status != 200 {
			t.Fatalf("displayname = %d %s", r.Status, r.Raw)
		}
		if r := setHTTPPusher(t, bob, "org.example.full", "bobkey", gw.URL(), map[string]any{"custom": "x"}); r.Status != 200 {
			t.Fatalf("pushers/set = %d %s", r.Status, r.Raw)
		}
		if r := setHTTPPusher(t, bob, "org.example.ids", "bobkey2", gw.URL(), map[string]any{"format": "event_id_only"}); r.Status != 200 {
			t.Fatalf("pushers/set = %d %s", r.Status, r.Raw)
		}
		// Email pushers: refused with a clear answer, nothing stored.
		r := clientCall(t, bob, "POST", "/_matrix/client/v3/pushers/set", map[string]any{"app_id": "m.email", "pushkey": "bob@example.org",
			"kind": "email", "app_display_name": "Mail", "device_display_name": "Mail", "lang": "en", "data": map[string]any{}})
		if r.Status != 400 || r.Body["errcode"] != "M_INVALID_PARAM" {
			t.Fatalf("email pusher = %d %s", r.Status, r.Raw)
		}

		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "trusted_private_chat", IsDirect: true, Name: "Tea",
			Invite: []id.UserID{bob.UserID}})
		// The invite: user_is_target, high priority (.m.rule.invite_for_me plays a sound).
		var invite map[string]any
		gw.waitFor(t, "bobkey", "the invite", func(ps []gatewayPush) bool {
			for _, p := range ps {
				if p.Notification["type"] == "m.room.member" {
					invite = p.Notification
					return true
				}
			}
			return false
		})
		if invite["user_is_target"] != true || invite["prio"] != "high" || invite["room_id"] != string(room) {
			t.Fatalf("invite push = %v", invite)
		}
		joinRoom(t, bob, room)

		// A message in the DM (.m.rule.room_one_to_one: notify, sound).
		msg := sendText(t, alice, room, "hello bob")
		n := gw.pushFor(t, "bobkey", string(msg))
		content, _ := n["content"].(map[string]any)
		counts, _ := n["counts"].(map[string]any)
		if n["room_id"] != string(room) || n["type"] != "m.room.message" || n["sender"] != string(alice.UserID) ||
			n["sender_display_name"] != "Alice A" || n["room_name"] != "Tea" || n["prio"] != "high" ||
			content["body"] != "hello bob" || counts["unread"] != float64(1) || n["user_is_target"] != nil {
			t.Fatalf("message push = %v", n)
		}
		devs := devicesOf(n)
		if len(devs) != 1 {
			t.Fatalf("devices = %v", n["devices"])
		}
		d := devs[0]
		data, _ := d["data"].(map[string]any)
		tweaks, _ := d["tweaks"].(map[string]any)
		ts, _ := d["pushkey_ts"].(float64)
		if d["app_id"] != "org.example.full" || d["pushkey"] != "bobkey" || ts < float64(time.Now().Add(-time.Hour).Unix()) ||
			ts > float64(time.Now().Unix()+1) || data["custom"] != "x" || data["url"] != nil || tweaks["sound"] != "default" {
			t.Fatalf("device = %v", d)
		}
		// The event_id_only pusher: IDs, counts and priority only.
		ids := gw.pushFor(t, "bobkey2", string(msg))
		for _, k := range []string{"content", "type", "sender", "sender_display_name", "room_name"} {
			if _, ok := ids[k]; ok {
				t.Fatalf("event_id_only push has %s: %v", k, ids)
			}
		}
		if ids["room_id"] != string(room) {
			t.Fatalf("event_id_only push = %v", ids)
		}
		if data, _ := devicesOf(ids)[0]["data"].(map[string]any); data["format"] != "event_id_only" || data["url"] != nil {
			t.Fatalf("event_id_only device data = %v", data)
		}

		// A mention: highlight.
		mention, err := alice.SendMessageEvent(ctx, room, event.EventMessage, map[string]any{"msgtype": "m.text",
			"body": "look, bob", "m.mentions": map[string]any{"user_ids": []string{string(bob.UserID)}}})
		if err != nil {
			t.Fatal(err)
		}
		n = gw.pushFor(t, "bobkey", string(mention.EventID))
		if tw, _ := devicesOf(n)[0]["tweaks"].(map[string]any); tw["highlight"] != true || n["prio"] != "high" {
			t.Fatalf("mention push = %v", n)
		}

		// An encrypted event: nothing of it but its IDs leaves, whatever the format.
		enc, err := alice.SendMessageEvent(ctx, room, event.EventEncrypted, map[string]any{"algorithm": "m.megolm.v1.aes-sha2",
			"ciphertext": "c2VjcmV0", "sender_key": "k", "session_id": "s", "device_id": "D"})
		if err != nil {
			t.Fatal(err)
		}
		n = gw.pushFor(t, "bobkey", string(enc.EventID))
		for _, k := range []string{"content", "type", "sender", "sender_display_name", "room_name"} {
			if _, ok := n[k]; ok {
				t.Fatalf("encrypted push has %s: %v", k, n)
			}
		}
		if n["room_id"] != string(room) || n["prio"] != "high" {
			t.Fatalf("encrypted push = %v", n)
		}
		if c, _ := n["counts"].(map[string]any); c["unread"] != float64(3) {
			t.Fatalf("encrypted push counts = %v", n["counts"])
		}

		// Bob reads: a badge-only push (counts and devices only; zero counts omitted).
		before := len(gw.pushes("bobkey"))
		if err := bob.MarkRead(ctx, room, enc.EventID); err != nil {
			t.Fatal(err)
		}
		ps := gw.waitFor(t, "bobkey", "a badge update", func(ps []gatewayPush) bool { return len(ps) > before })
		badge := ps[before].Notification
		if len(badge) != 2 || badge["counts"] == nil || badge["devices"] == nil || len(badge["counts"].(map[string]any)) != 0 {
			t.Fatalf("badge push = %v", badge)
		}

		// The gateway rejects bobkey2: its pusher goes, bobkey's stays.
		gw.mu.Lock()
		gw.reject["bobkey2"] = true
		gw.mu.Unlock()
		m2 := sendText(t, alice, room, "second")
		gw.pushFor(t, "bobkey2", string(m2))
		deadline := time.Now().Add(10 * time.Second)
		for {
			r := clientCall(t, bob, "GET", "/_matrix/client/v3/pushers", nil)
			list, _ := r.Body["pushers"].([]any)
			if len(list) == 1 && list[0].(map[string]any)["pushkey"] == "bobkey" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("pushers after the rejection = %s", r.Raw)
			}
			time.Sleep(20 * time.Millisecond)
		}
		m3 := sendText(t, alice, room, "third")
		gw.pushFor(t, "bobkey", string(m3))
		time.Sleep(200 * time.Millisecond)
		for _, p := range gw.pushes("bobkey2") {
			if p.Notification["event_id"] == string(m3) {
				t.Fatalf("a rejected pushkey still gets pushes")
			}
		}
	})
}

// TestPushDeliveryOutageAndRestart: a gateway answering 500, then closing
// connections, holds its pushes queued (retried with backoff); once it
// recovers they arrive in order and once each. Pushes queued when the
// server stops are delivered by the next start (the queue is the store's).
func TestPushDeliveryOutageAndRestart(t *testing.T) {
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			gw := newPushGateway(t)
			conf := restartableOptions(t, pushTestConfig)
			srv := testserver.Start(t, backend, conf)
			alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
			if r := setHTTPPusher(t, bob, "org.example.app", "bobkey", gw.URL(), nil); r.Status != 200 {
				t.Fatalf("pushers/set = %d %s", r.Status, r.Raw)
			}
			room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "trusted_private_chat", IsDirect: true,
				Invite: []id.UserID{bob.UserID}}, bob)

			inOrderOnce := func(ps []gatewayPush, want []id.EventID) bool {
				wanted := map[string]bool{}
				for _, e := range want {
					wanted[string(e)] = true
				}
				var got []string
				for _, p := range ps {
					if e, _ := p.Notification["event_id"].(string); wanted[e] {
						got = append(got, e)
					}
				}
				if len(got) < len(want) {
					return false
				}
				if fmt.Sprint(got) != fmt.Sprint(want) {
					t.Fatalf("pushes = %v, want %v in order, once each", got, want)
				}
				return true
			}
			messages := func() int {
				n := 0
				for _, p := range gw.pushes("bobkey") {
					if p.Notification["type"] == "m.room.message" {
						n++
					}
				}
				return n
			}
			waitAttempts := func(n int) {
				deadline := time.Now().Add(10 * time.Second)
				for {
					gw.mu.Lock()
					a := gw.attempts
					gw.mu.Unlock()
					if a >= n {
						return
					}
					if time.Now().After(deadline) {
						t.Fatalf("the gateway saw %d attempts, want %d", a, n)
					}
					time.Sleep(10 * time.Millisecond)
				}
			}

			// Outage: 500s.
			gw.setStatus(500)
			var want []id.EventID
			for i := range 3 {
				want = append(want, sendText(t, alice, room, fmt.Sprintf("m%d", i)))
			}
			waitAttempts(3) // the first push, tried (at least) three times
			if got := messages(); got != 0 {
				t.Fatalf("a failing gateway took %d pushes", got)
			}
			gw.setStatus(0)
			gw.waitFor(t, "bobkey", "the pushes after recovery", func(ps []gatewayPush) bool { return inOrderOnce(ps, want) })
			if n := messages(); n != 3 {
				t.Fatalf("after recovery the gateway took %d pushes, want 3", n)
			}

			// Closed connections, then a restart with the pushes pending.
			gw.mu.Lock()
			gw.status, gw.attempts = -1, 0
			gw.mu.Unlock()
			var later []id.EventID
			for i := range 2 {
				later = append(later, sendText(t, alice, room, fmt.Sprintf("later%d", i)))
			}
			waitAttempts(2)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := srv.Shutdown(ctx); err != nil {
				t.Fatal(err)
			}
			gw.setStatus(0)
			testserver.Start(t, backend, conf)
			gw.waitFor(t, "bobkey", "the pushes pending at the restart", func(ps []gatewayPush) bool { return inOrderOnce(ps, later) })
			time.Sleep(300 * time.Millisecond)
			if n := messages(); n != 5 {
				t.Fatalf("the gateway took %d pushes in all, want 5 (nothing twice)", n)
			}
		})
	}
}

// TestPushGatewayPrivateAddressRefused: without push.allow_private_gateways
// a pusher cannot be set on a loopback gateway, and one stored anyway (as a
// name that resolves inside would be) is never reached: delivery's dialer
// checks the address it dials.
func TestPushGatewayPrivateAddressRefused(t *testing.T) {
	forEachBackendWith(t, testserver.Options{Configure: func(c *config.Config) {
		c.Push.Delivery.MinBackoff = config.Duration{Duration: 20 * time.Millisecond}
		c.Push.Delivery.MaxBackoff = config.Duration{Duration: 50 * time.Millisecond}
	}}, func(t *testing.T, srv *testserver.Server) {
		gw := newPushGateway(t)
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		if r := setHTTPPusher(t, bob, "org.example.app", "bobkey", gw.URL(), nil); r.Status != 400 || r.Body["errcode"] != "M_INVALID_PARAM" {
			t.Fatalf("pushers/set on loopback = %d %s", r.Status, r.Raw)
		}
		data := fmt.Sprintf(`{"app_id":"org.example.app","pushkey":"bobkey","kind":"http","app_display_name":"App","device_display_name":"Phone","lang":"en","data":{"url":%q}}`, gw.URL())
		if err := srv.DB.SetPusher(context.Background(), storage.Pusher{UserID: string(bob.UserID), AppID: "org.example.app",
			PushKey: "bobkey", DeviceID: string(bob.DeviceID), JSON: data}, true); err != nil {
			t.Fatal(err)
		}
		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "trusted_private_chat", IsDirect: true,
			Invite: []id.UserID{bob.UserID}}, bob)
		sendText(t, alice, room, "hello")
		// The pushes (the invite's first, in order) are queued and tried (and
		// refused at the dial) several times.
		deadline := time.Now().Add(10 * time.Second)
		for {
			var attempts int64
			if err := srv.DB.QueryRow(context.Background(), `SELECT COALESCE(MAX(attempts), 0) FROM push_queue
				WHERE user_id = $1 AND done_ts = 0`, string(bob.UserID)).Scan(&attempts); err != nil {
				t.Fatal(err)
			}
			if attempts >= 3 {
				break
			}
			if time.Now().After(deadline) {
				rows, _ := srv.DB.Query(context.Background(), `SELECT dedup, attempts, done_ts, result FROM push_queue`)
				for rows.Next() {
					var d, r string
					var a, dt int64
					_ = rows.Scan(&d, &a, &dt, &r)
					t.Logf("row %s attempts %d done %d %s", d, a, dt, r)
				}
				rows.Close()
				t.Fatalf("the push to the loopback gateway was tried %d times", attempts)
			}
			time.Sleep(20 * time.Millisecond)
		}
		gw.mu.Lock()
		defer gw.mu.Unlock()
		if gw.attempts != 0 {
			t.Fatalf("the loopback gateway got %d requests", gw.attempts)
		}
	})
}
