package tests

import (
	"net/url"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/audit"
	"github.com/myelin-chat/myelin/homeserver/testserver"
)

// Findings of the adversarial review of issue 13's policy: each test fails
// on the code before its fix.

// TestResidencyReviewACLWildcards: a local client may not widen the ACL
// mirror of a room of zone eu with a wildcard reaching past the zone ("**"
// and "?*" match every server as "*" does; "*.us.example" is zone us), while
// the zone's own patterns and narrower forms of them pass.
func TestResidencyReviewACLWildcards(t *testing.T) {
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) {
			srv := startCreationServer(t, backend, creationPolicy())
			alice := srv.Register(t, "alice")
			r := createRaw(t, alice, map[string]any{"preset": "public_chat"})
			if r.Status != 200 {
				t.Fatalf("createRoom: %d %s", r.Status, r.Raw)
			}
			room := id.RoomID(r.Body["room_id"].(string))
			put := func(allow ...string) rawResp {
				return clientCall(t, alice, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(string(room))+"/state/m.room.server_acl/",
					map[string]any{"allow": append([]string{"hs.test"}, allow...)})
			}
			for _, allow := range []string{"**", "?*", "*?", "*.example", "*.us.example", "*example", "x.us.examp?e"} {
				if r := put(allow); r.Status != 403 || r.errcode() != "M_FORBIDDEN" {
					t.Errorf("ACL allowing %q in an eu room: %d %s, want 403 M_FORBIDDEN", allow, r.Status, r.Raw)
				}
			}
			if got := aclAllow(t, alice, room); len(got) != 2 || got[0] != "*.eu.example" {
				t.Fatalf("the ACL changed: allows %v", got)
			}
			for _, allow := range []string{"*.eu.example", "*.de.eu.example", "x?.eu.example"} {
				if r := put(allow); r.Status != 200 {
					t.Errorf("ACL allowing %q in an eu room: %d %s, want 200", allow, r.Status, r.Raw)
				}
			}
		})
	}
}

// TestResidencyReviewRefusalFlood: a listed peer (b, zone open) asking
// again and again for a room of zone a is refused every time, but does not
// write one audit record per request: the same refusal (server, endpoint,
// rule, room) is recorded once a minute.
func TestResidencyReviewRefusalFlood(t *testing.T) {
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) {
			n := newResidencyNet(t, backend)
			ctx := ctxT(t)
			alice := n.a1.Register(t, "alice")
			roomA := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
			msg := sendText(t, alice, roomA, "zone a only")
			b := newPeer(t, n, n.b, "a1.test")
			const requests = 40
			for i := 0; i < requests; i++ {
				_, err := b.call(ctx, "GET", mfed.URLPath{"v1", "state", roomA}, url.Values{"event_id": {string(msg)}}, nil)
				wantRefused(t, "state", err, "the room is resident in zone a")
				_, err = b.call(ctx, "GET", mfed.URLPath{"v1", "event", msg}, nil, nil)
				wantRefused(t, "event", err, "the room is resident in zone a")
			}
			// A last, different refusal: once it is written, so is every one before it.
			_, err := b.call(ctx, "GET", mfed.URLPath{"v1", "backfill", roomA}, url.Values{"v": {string(msg)}, "limit": {"10"}}, nil)
			wantRefused(t, "backfill", err, "the room is resident in zone a")
			recs := inboundAuditRecords(t, n.a1, func(recs []audit.Record) bool {
				for _, r := range inboundRefusalRecords(recs) {
					if r.Server == "b.test" && r.Purpose == "backfill" {
						return true
					}
				}
				return false
			})
			count := map[string]int{}
			for _, r := range inboundRefusalRecords(recs) {
				if r.Server == "b.test" {
					count[r.Purpose]++
				}
			}
			if count["backfill"] != 1 || count["state"] != 1 || count["event"] != 1 {
				t.Fatalf("refusal records of b's %d requests per endpoint: %v, want one per endpoint", requests, count)
			}
		})
	}
}

// TestResidencyReviewInviteRespectsACLMirror: a room of zone a held by a2
// (its m.room.server_acl mirrors zone a) that a1 classified otherwise — its
// user joined it by an alias #open-x that a user of a2 pointed at it, so a1
// records it in zone open — must still not be offered to b: an invite to
// b's user would carry the room's stripped state to b, whose server the
// room's ACL denies (it could never join). The invite is refused before
// anything is sent.
func TestResidencyReviewInviteRespectsACLMirror(t *testing.T) {
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) {
			n := newResidencyNet(t, backend)
			ctx := ctxT(t)
			carol := n.a2.Register(t, "carol")
			room := createRoom(t, carol, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "zone a secrets",
				PowerLevelOverride: &event.PowerLevelsEventContent{InvitePtr: ptr(0), Users: map[id.UserID]int{carol.UserID: 100}}})
			if _, err := carol.CreateAlias(ctx, "#open-x:a2.test", room); err != nil {
				t.Fatalf("alias: %v", err)
			}
			alice := n.a1.Register(t, "alice")
			if _, err := alice.JoinRoom(ctx, "#open-x:a2.test", nil); err != nil {
				t.Fatalf("alice joins by #open-x: %v", err)
			}
			rec, _ := n.a1.DB.GetRoomResidency(ctx, string(room))
			t.Logf("a1 records %+v", rec)
			bob := n.b.Register(t, "bob")
			_, err := alice.InviteUser(ctx, room, &mautrix.ReqInviteUser{UserID: bob.UserID})
			if errStatus(err) != 403 {
				t.Errorf("invite of b's user to a room whose ACL denies b: %v, want 403", err)
			}
			t.Logf("invite: %v", err)
			if n.wire.mentions(string(room)) {
				t.Fatalf("the room reached b: %v", n.wire.paths())
			}
			if _, err := n.b.DB.GetRoom(ctx, string(room)); err == nil {
				t.Fatal("b's store holds the room")
			}
		})
	}
}
