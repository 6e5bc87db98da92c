package tests

import (
	"fmt"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/homeserver/testserver"
	"github.com/myelin-chat/myelin/internal/config"
)

// TestFederationNetsplit: three Myelin servers share a room; b.test is cut
// off from the other two (both directions, open connections included);
// during the split each side changes the same state (the topic) and sends
// messages; after the link heals, the federation senders deliver what was
// queued, and all three servers converge to the same current state (state
// resolution of the two branches) and hold every message.
func TestFederationNetsplit(t *testing.T) {
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) {
			t0 := time.Now()
			n := newFedNet(t, "a.test", "b.test", "c.test")
			fast := func(c *config.Config) {
				c.Federation.Sender.MinBackoff.Duration = 200 * time.Millisecond
				c.Federation.Sender.MaxBackoff.Duration = time.Second
			}
			a := n.start(t, backend, "a.test", fast)
			c := n.start(t, backend, "c.test", fast)
			// b.test reaches a.test and c.test through links of its own, so
			// that cutting them leaves a.test–c.test up.
			bLinks := map[string]*relay{"a.test": newRelay(t), "c.test": newRelay(t)}
			b := n.start(t, backend, "b.test", fast, func(cfg *config.Config) {
				for name, r := range bLinks {
					cfg.Federation.Hosts[name] = r.addr()
				}
			})
			bLinks["a.test"].point(a.Config.Listen.HTTP)
			bLinks["c.test"].point(c.Config.Listen.HTTP)
			split := func(down bool) {
				to := map[*relay]string{n.relays["b.test"]: b.Config.Listen.HTTP,
					bLinks["a.test"]: a.Config.Listen.HTTP, bLinks["c.test"]: c.Config.Listen.HTTP}
				for r, addr := range to {
					if down {
						r.point("")
						r.cut()
					} else {
						r.point(addr)
					}
				}
			}

			ctx := ctxT(t)
			alice, bob, carol := a.Register(t, "alice"), b.Register(t, "bob"), c.Register(t, "carol")
			room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", Topic: "before"})
			for _, u := range []*mautrix.Client{bob, carol} {
				if _, err := u.JoinRoom(ctx, string(room), &mautrix.ReqJoinRoom{Via: []string{"a.test"}}); err != nil {
					t.Fatalf("%s joins: %v", u.UserID, err)
				}
			}
			// bob may change the topic as alice may.
			var pl event.PowerLevelsEventContent
			if err := alice.StateEvent(ctx, room, event.StatePowerLevels, "", &pl); err != nil {
				t.Fatal(err)
			}
			pl.SetUserLevel(bob.UserID, 100)
			if _, err := alice.SendStateEvent(ctx, room, event.StatePowerLevels, "", &pl); err != nil {
				t.Fatal(err)
			}
			everyone := []*mautrix.Client{alice, bob, carol}
			waitAll(t, everyone, room, func(c *mautrix.Client) error {
				var got event.PowerLevelsEventContent
				if err := c.StateEvent(ctx, room, event.StatePowerLevels, "", &got); err != nil {
					return err
				}
				if got.GetUserLevel(bob.UserID) != 100 {
					return fmt.Errorf("bob's level %d", got.GetUserLevel(bob.UserID))
				}
				if m, err := c.JoinedMembers(ctx, room); err != nil || len(m.Joined) != 3 {
					return fmt.Errorf("members %v %v", m, err)
				}
				return nil
			})

			t.Logf("%s room shared by three servers", time.Since(t0))
			split(true)
			if _, err := alice.SendStateEvent(ctx, room, event.StateTopic, "", &event.TopicEventContent{Topic: "from a"}); err != nil {
				t.Fatal(err)
			}
			if _, err := bob.SendStateEvent(ctx, room, event.StateTopic, "", &event.TopicEventContent{Topic: "from b"}); err != nil {
				t.Fatal(err)
			}
			sent := []id.EventID{sendText(t, alice, room, "a during split"), sendText(t, bob, room, "b during split"),
				sendText(t, carol, room, "c during split")}
			time.Sleep(500 * time.Millisecond) // the senders fail and back off
			split(false)
			t.Logf("%s healed", time.Since(t0))
			sent = append(sent, sendText(t, alice, room, "a after"), sendText(t, bob, room, "b after"))

			// Converged: one topic everywhere, every message everywhere.
			var topics [3]string
			waitAll(t, everyone, room, func(c *mautrix.Client) error {
				for _, x := range sent {
					if _, err := c.GetEvent(ctx, room, x); err != nil {
						return fmt.Errorf("event %s: %v", x, err)
					}
				}
				return nil
			})
			t.Logf("%s every message everywhere", time.Since(t0))
			deadline := time.Now().Add(20 * time.Second)
			for {
				for i, u := range everyone {
					var tc event.TopicEventContent
					if err := u.StateEvent(ctx, room, event.StateTopic, "", &tc); err != nil {
						t.Fatal(err)
					}
					topics[i] = tc.Topic
				}
				if topics[0] == topics[1] && topics[1] == topics[2] && topics[0] != "before" {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("servers did not converge: topics %q", topics)
				}
				time.Sleep(100 * time.Millisecond)
			}
			t.Logf("%s converged on topic %q", time.Since(t0), topics[0])
		})
	}
}

// waitAll polls check for each client until it passes (20 s each).
func waitAll(t *testing.T, clients []*mautrix.Client, room id.RoomID, check func(*mautrix.Client) error) {
	t.Helper()
	for _, c := range clients {
		deadline := time.Now().Add(20 * time.Second)
		for {
			err := check(c)
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s in %s: %v", c.UserID, room, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}
