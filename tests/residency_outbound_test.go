package tests

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/audit"
	"github.com/myelin-chat/myelin/homeserver/testserver"
	"github.com/myelin-chat/myelin/internal/config"
	"github.com/myelin-chat/myelin/residency"
)

// outboundPolicy is zone a's policy with zone open sharing no presence and
// no to-device messages, and a zone c (no server matches it) that zone
// open does not admit: a trust list placing b.test in c cuts b off.
func outboundPolicy() func(*config.Config) {
	return residencyPolicy(func(r *config.Residency) {
		r.Zones[1].Share = map[string]bool{"presence": false, "to_device": false}
		r.Zones = append(r.Zones, config.ResidencyZone{Name: "c", Servers: []string{"c.invalid"}})
	})
}

// bHasEvent reports whether b.test stores ev.
func bHasEvent(t *testing.T, n *residencyNet, ev id.EventID) bool {
	t.Helper()
	got, err := n.b.DB.GetEvents(context.Background(), []string{string(ev)})
	if err != nil {
		t.Fatal(err)
	}
	return got[string(ev)] != nil
}

// waitBHas waits until b.test stores ev.
func waitBHas(t *testing.T, n *residencyNet, ev id.EventID, what string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !bHasEvent(t, n, ev) {
		if time.Now().After(deadline) {
			t.Fatalf("%s never reached b.test", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// residencyRefusals are the outbound residency refusal records of srv's
// audit trail about server.
func outboundRefusals(t *testing.T, admin *mautrix.Client, server string) []audit.Refusal {
	t.Helper()
	var out []audit.Refusal
	for _, r := range auditRecords(t, admin) {
		if r.Kind != audit.KindRefusal {
			continue
		}
		var f audit.Refusal
		if err := json.Unmarshal(r.Body, &f); err != nil {
			t.Fatal(err)
		}
		if f.Direction == audit.Outbound && f.Server == server && strings.HasPrefix(f.Rule, "residency.") {
			out = append(out, f)
		}
	}
	return out
}

func waitRefusal(t *testing.T, admin *mautrix.Client, server, what string, cond func(audit.Refusal) bool) audit.Refusal {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		for _, r := range outboundRefusals(t, admin, server) {
			if cond(r) {
				return r
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no outbound residency refusal recorded for %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestResidencyOutbound: what a1 sends or asks of b follows the residency
// policy. A zone-a room with users on a1 and a2 (and bob of b.test, if a1
// lets him join: inbound enforcement is another check) never reaches b: a
// message, typing, a receipt; an open room (#open-x) does. Inviting a user
// of b to the zone-a room is 403 with the reason, nothing sent; joining a
// room hosted on b that classifies into zone a is 403 before any request.
// Presence and to-device to b are withheld (zone open shares neither), the
// client's sendToDevice still succeeds. Then a trust list places b in zone
// c: further events of the open room stop reaching b, and a refusal is
// recorded.
func TestResidencyOutbound(t *testing.T) {
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) {
			defer recoverMust(t)
			n := newResidencyNet(t, backend, outboundPolicy(), func(cfg *config.Config) { cfg.Presence.Enabled = true })
			ctx := ctxT(t)
			alice, anna := n.a1.Register(t, "alice"), n.a2.Register(t, "anna")
			bob, xavier := n.b.Register(t, "bob"), n.b.Register(t, "xavier")
			admin := auditAdmin(t, n.a1)

			// The open room: b may have it (the control: a1 does send to b).
			open := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomAliasName: "open-x"})
			must(anna.JoinRoom(ctx, string(open), &mautrix.ReqJoinRoom{Via: []string{"a1.test"}}))
			must(bob.JoinRoom(ctx, "#open-x:a1.test", nil))
			openMsg := sendText(t, alice, open, "open hello")
			waitBHas(t, n, openMsg, "a message of the open room")
			if !n.wire.mentions(string(open)) {
				t.Fatal("the open room's traffic to b was not seen on the wire: the test cannot tell")
			}

			// The zone-a room.
			room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
			must(anna.JoinRoom(ctx, string(room), &mautrix.ReqJoinRoom{Via: []string{"a1.test"}}))
			_, bobErr := bob.JoinRoom(ctx, string(room), &mautrix.ReqJoinRoom{Via: []string{"a1.test"}})
			t.Logf("bob joining the zone-a room: %v", bobErr)
			msg := sendText(t, alice, room, "zone a only")
			must(alice.UserTyping(ctx, room, true, 30*time.Second))
			if err := alice.MarkRead(ctx, room, msg); err != nil {
				t.Fatal(err)
			}

			// Inviting a user of b: 403 with the reason, nothing sent.
			r := clientCall(t, alice, http.MethodPost, "/_matrix/client/v3/rooms/"+string(room)+"/invite",
				map[string]any{"user_id": string(xavier.UserID)})
			if r.Status != http.StatusForbidden || r.errcode() != "M_FORBIDDEN" || !strings.Contains(r.Raw, "zone a") {
				t.Fatalf("inviting %s to the zone-a room: %d %s, want 403 M_FORBIDDEN naming zone a", xavier.UserID, r.Status, r.Raw)
			}

			// Joining a room hosted on b that classifies into zone a (no
			// #open- alias): 403 before any request.
			bRoom := createRoom(t, bob, &mautrix.ReqCreateRoom{Preset: "public_chat"})
			r = clientCall(t, alice, http.MethodPost, "/_matrix/client/v3/join/"+string(bRoom)+"?via=b.test", map[string]any{})
			if r.Status != http.StatusForbidden || r.errcode() != "M_FORBIDDEN" || !strings.Contains(r.Raw, "zone a") {
				t.Fatalf("joining %s on b: %d %s, want 403 M_FORBIDDEN naming zone a", bRoom, r.Status, r.Raw)
			}
			if n.wire.mentions(string(bRoom)) {
				t.Fatal("a1 asked b about the zone-a room it refused to join")
			}

			// Presence and to-device to b: withheld; sendToDevice still 200.
			const presenceMarker, toDeviceMarker = "presence-marker-7f3", "to-device-marker-9c1"
			if err := alice.SetPresence(ctx, mautrix.ReqPresence{Presence: event.PresenceOnline, StatusMsg: presenceMarker}); err != nil {
				t.Fatal(err)
			}
			bobDevice := bob.DeviceID
			r = clientCall(t, alice, http.MethodPut, "/_matrix/client/v3/sendToDevice/m.test/txn-resid-1", map[string]any{
				"messages": map[string]any{string(bob.UserID): map[string]any{string(bobDevice): map[string]any{"marker": toDeviceMarker}}}})
			if r.Status != http.StatusOK {
				t.Fatalf("sendToDevice to a refused server: %d %s, want 200", r.Status, r.Raw)
			}

			// A later open-room event reaching b flushes what was queued before.
			flush := sendText(t, alice, open, "flush")
			waitBHas(t, n, flush, "the flush message")
			if n.wire.mentions(string(room)) || n.wire.mentions(string(msg)) {
				t.Fatal("the zone-a room reached b")
			}
			if bHasEvent(t, n, msg) {
				t.Fatal("b stores the zone-a room's message")
			}
			if n.wire.mentions(presenceMarker) {
				t.Fatal("presence went to b, whose zone shares none")
			}
			if n.wire.mentions(toDeviceMarker) {
				t.Fatal("a to-device message went to b, whose zone shares none")
			}
			waitRefusal(t, admin, "b.test", "the invite", func(r audit.Refusal) bool { return r.Purpose == "invite" && r.Room == string(room) })
			waitRefusal(t, admin, "b.test", "the join", func(r audit.Refusal) bool { return r.Purpose == "join" && r.Room == string(bRoom) })
			waitRefusal(t, admin, "b.test", "the to-device message", func(r audit.Refusal) bool { return r.Kind == string(residency.ToDevice) })
			if bobErr == nil { // bob is in the zone-a room: the sender withheld its PDUs
				waitRefusal(t, admin, "b.test", "the zone-a room's PDUs", func(r audit.Refusal) bool { return r.Rooms[string(room)] > 0 })
			}

			// The trust list places b in zone c, which zone open does not
			// admit: the open room's further events stop reaching b.
			n.a1.Residency.SetTrustList(&residency.TrustList{Issuer: "test", Version: 1, Servers: map[string]string{"b.test": "c"}})
			cut := sendText(t, alice, open, "after the cut")
			waitRefusal(t, admin, "b.test", "the open room after the cut", func(r audit.Refusal) bool {
				return r.Rooms[string(open)] > 0 && r.Rule == residency.RuleIncludes("open")
			})
			time.Sleep(500 * time.Millisecond)
			if n.wire.mentions(string(cut)) || bHasEvent(t, n, cut) {
				t.Fatal("a1's event of the open room reached b after the trust list cut it off")
			}
		})
	}
}
