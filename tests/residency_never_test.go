package tests

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/audit"
	"github.com/myelin-chat/myelin/homeserver/testserver"
	"github.com/myelin-chat/myelin/storage"
)

// TestResidencyZoneRoomNeverReachesOutside is issue 13's proof, from the
// side of b's own users and b's own store: a zone-a room shared by a1 and
// a2 (messages, an image, typing, a receipt, an invite attempt) while b's
// user tries every way in a client has — join and knock through a1 and
// a2, the room directory, the space hierarchy, history, the image — and
// afterwards nothing of the room is anywhere on b: not in its events,
// memberships or media, not in any request a1 or a2 made of b. An open room
// shared the same way does reach b (the test can fail). a1's audit trail
// records the refusals and verifies.
func TestResidencyZoneRoomNeverReachesOutside(t *testing.T) {
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) {
			n := newResidencyNet(t, backend)
			ctx := ctxT(t)
			alice := n.a1.Register(t, "alice")
			carol := n.a2.Register(t, "carol")
			bob := n.b.Register(t, "bob")
			room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", Visibility: "public",
				RoomAliasName: "secret"})
			open := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", Visibility: "public",
				RoomAliasName: "open-lobby"})
			for _, r := range []id.RoomID{room, open} {
				if _, err := carol.JoinRoom(ctx, string(r), &mautrix.ReqJoinRoom{Via: []string{"a1.test"}}); err != nil {
					t.Fatalf("a2 joining %s: %v", r, err)
				}
			}

			// Life in the zone-a room.
			sendText(t, alice, room, "zone a only")
			sendText(t, carol, room, "agreed")
			uri := residencyUpload(t, n.a1, alice, 16)
			sendImage(t, alice, room, uri)
			must(alice.UserTyping(ctx, room, true, 30*time.Second))
			last := sendText(t, alice, room, "read me")
			eventually(t, 15*time.Second, "the message on a2", func() bool {
				_, err := carol.GetEvent(ctx, room, last)
				return err == nil
			})
			if err := carol.SendReceipt(ctx, room, last, event.ReceiptTypeRead, nil); err != nil {
				t.Fatal(err)
			}
			if _, err := alice.InviteUser(ctx, room, &mautrix.ReqInviteUser{UserID: bob.UserID}); errStatus(err) != http.StatusForbidden {
				t.Fatalf("inviting b's user into the zone-a room: %v, want 403", err)
			}

			// b's user tries every way in.
			for _, via := range []string{"a1.test", "a2.test"} {
				if _, err := bob.JoinRoom(ctx, string(room), &mautrix.ReqJoinRoom{Via: []string{via}}); err == nil {
					t.Fatalf("b's user joined the zone-a room via %s", via)
				}
				if _, err := bob.KnockRoom(ctx, string(room), &mautrix.ReqKnockRoom{Via: []string{via}}); err == nil {
					t.Fatalf("b's user knocked on the zone-a room via %s", via)
				}
			}
			if _, err := bob.JoinRoom(ctx, "#secret:a1.test", nil); err == nil {
				t.Fatal("b's user joined the zone-a room by its alias")
			}
			pub := clientCall(t, bob, http.MethodGet, "/_matrix/client/v3/publicRooms?server=a1.test", nil)
			if strings.Contains(pub.Raw, string(room)) || !strings.Contains(pub.Raw, string(open)) {
				t.Fatalf("b's user's directory of a1: %d %s; want the open room and not the zone-a room", pub.Status, pub.Raw)
			}
			if _, err := bob.Hierarchy(ctx, room, &mautrix.ReqHierarchy{}); err == nil {
				t.Fatal("b's user read the zone-a room's hierarchy")
			}
			if _, err := bob.Messages(ctx, room, "", "", mautrix.DirectionBackward, nil, 10); err == nil {
				t.Fatal("b's user read the zone-a room's history")
			}
			mediaID := strings.TrimPrefix(uri, "mxc://a1.test/")
			if r := rawMedia(t, "GET", n.b.URL+"/_matrix/client/v1/media/download/a1.test/"+mediaID, bob.AccessToken, "", nil); r.Status == http.StatusOK {
				t.Fatal("b's user downloaded the zone-a image")
			}

			// The open room, shared the same way, reaches b.
			if _, err := bob.JoinRoom(ctx, string(open), &mautrix.ReqJoinRoom{Via: []string{"a1.test"}}); err != nil {
				t.Fatalf("b's user joining the open room: %v", err)
			}
			sendText(t, alice, open, "hello everyone")
			eventually(t, 15*time.Second, "the open room's message on b", func() bool {
				return countRows(t, n.b, `SELECT COUNT(*) FROM events WHERE room_id = $1 AND type = 'm.room.message'`, string(open)) > 0
			})

			// Nothing of the zone-a room on b, nor on the wire to it.
			for what, q := range map[string]string{
				"events":      `SELECT COUNT(*) FROM events WHERE room_id = $1`,
				"memberships": `SELECT COUNT(*) FROM memberships WHERE room_id = $1`,
				"state":       `SELECT COUNT(*) FROM current_state WHERE room_id = $1`,
				"rooms":       `SELECT COUNT(*) FROM rooms WHERE room_id = $1`,
			} {
				if c := countRows(t, n.b, q, string(room)); c != 0 {
					t.Errorf("b's store has %d %s of the zone-a room", c, what)
				}
			}
			if _, err := n.b.DB.GetMedia(ctx, "a1.test", mediaID); !errors.Is(err, storage.ErrNotFound) {
				t.Errorf("b's store has the zone-a image: %v", err)
			}
			for _, s := range []string{string(room), string(last), mediaID, "#secret:a1.test"} {
				if n.wire.mentions(s) {
					t.Errorf("a request a1 or a2 made of b named %s", s)
				}
			}
			if !n.wire.mentions(string(open)) {
				t.Error("nothing of the open room reached b: the wire log sees nothing")
			}

			// a1's audit trail: refusals recorded, the chain intact.
			eventually(t, 10*time.Second, "a refusal about the zone-a room in a1's audit trail", func() bool {
				records, err := n.a1.Audit.Records(ctx, 1, 10000)
				if err != nil {
					t.Fatal(err)
				}
				for _, r := range records {
					if r.Kind == audit.KindRefusal && strings.Contains(string(r.Body), string(room)) {
						return true
					}
				}
				return false
			})
			if v, err := audit.Verify(context.Background(), n.a1.DB); err != nil {
				t.Errorf("a1's audit chain: %+v, %v", v, err)
			}
		})
	}
}

// eventually polls cond until it holds or d passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func countRows(t *testing.T, srv *testserver.Server, q string, args ...any) int {
	t.Helper()
	var c int
	if err := srv.DB.QueryRow(context.Background(), q, args...).Scan(&c); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return c
}
