package tests

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

func wantErrCode(t *testing.T, err error, code string) {
	t.Helper()
	var httpErr mautrix.HTTPError
	if !errors.As(err, &httpErr) || httpErr.RespError == nil {
		t.Fatalf("want %s, got %v", code, err)
	}
	if httpErr.RespError.ErrCode != code {
		t.Fatalf("want %s, got %s (%d): %s", code, httpErr.RespError.ErrCode, httpErr.Response.StatusCode, httpErr.RespError.Err)
	}
}

// TestRoomLifecycle: three users create, invite, join, chat, change power
// levels and ban, all through mautrix-go against a real server.
func TestRoomLifecycle(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		alice, bob, carol := srv.Register(t, "alice"), srv.Register(t, "bob"), srv.Register(t, "carol")
		room := must(alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Name: "Lifecycle", Topic: "testing", Invite: []id.UserID{bob.UserID}}))
		roomID := room.RoomID

		// carol is not invited to an invite-only room.
		_, err := carol.JoinRoomByID(ctx, roomID)
		wantErrCode(t, err, "M_FORBIDDEN")
		must(bob.JoinRoomByID(ctx, roomID))
		must(alice.InviteUser(ctx, roomID, &mautrix.ReqInviteUser{UserID: carol.UserID}))
		must(carol.JoinRoomByID(ctx, roomID))

		for i, c := range []*mautrix.Client{alice, bob, carol} {
			sendText(t, c, roomID, fmt.Sprintf("hello %d", i))
		}
		members := must(alice.JoinedMembers(ctx, roomID))
		if len(members.Joined) != 3 {
			t.Fatalf("joined members = %d, want 3", len(members.Joined))
		}
		name := must(bob.FullStateEvent(ctx, roomID, event.StateRoomName, ""))
		if name.Content.AsRoomName().Name != "Lifecycle" {
			t.Fatalf("room name = %+v", name.Content.Raw)
		}

		// bob (level 0) cannot kick; alice raises him to 50, then he can.
		_, err = bob.KickUser(ctx, roomID, &mautrix.ReqKickUser{UserID: carol.UserID})
		wantErrCode(t, err, "M_FORBIDDEN")
		var pl event.PowerLevelsEventContent
		if err := alice.StateEvent(ctx, roomID, event.StatePowerLevels, "", &pl); err != nil {
			t.Fatal(err)
		}
		pl.SetUserLevel(bob.UserID, 50)
		must(alice.SendStateEvent(ctx, roomID, event.StatePowerLevels, "", &pl))
		must(bob.KickUser(ctx, roomID, &mautrix.ReqKickUser{UserID: carol.UserID, Reason: "bye"}))
		_, err = carol.SendText(ctx, roomID, "still here?")
		wantErrCode(t, err, "M_FORBIDDEN")

		// carol rejoins? Invite-only: no. alice re-invites, then bans.
		must(alice.InviteUser(ctx, roomID, &mautrix.ReqInviteUser{UserID: carol.UserID}))
		must(alice.BanUser(ctx, roomID, &mautrix.ReqBanUser{UserID: carol.UserID}))
		_, err = carol.JoinRoomByID(ctx, roomID)
		wantErrCode(t, err, "M_FORBIDDEN")
		// bob (50) cannot unban? ban level is 50: he can. But he cannot change power levels (100).
		pl.SetUserLevel(bob.UserID, 100)
		_, err = bob.SendStateEvent(ctx, roomID, event.StatePowerLevels, "", &pl)
		wantErrCode(t, err, "M_FORBIDDEN")
		must(bob.UnbanUser(ctx, roomID, &mautrix.ReqUnbanUser{UserID: carol.UserID}))

		joined := must(carol.JoinedRooms(ctx))
		if len(joined.JoinedRooms) != 0 {
			t.Fatalf("carol joined rooms = %v", joined.JoinedRooms)
		}
		joined = must(bob.JoinedRooms(ctx))
		if len(joined.JoinedRooms) != 1 || joined.JoinedRooms[0] != roomID {
			t.Fatalf("bob joined rooms = %v", joined.JoinedRooms)
		}
		// bob leaves and forgets.
		must(bob.LeaveRoom(ctx, roomID))
		must(bob.ForgetRoom(ctx, roomID))
		_, err = bob.SendText(ctx, roomID, "gone")
		wantErrCode(t, err, "M_FORBIDDEN")
	})
}

// TestSendIdempotent: a send retried with the same transaction ID yields one event.
func TestSendIdempotent(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		alice := srv.Register(t, "alice")
		roomID := must(alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{})).RoomID
		content := map[string]any{"msgtype": "m.text", "body": "once"}
		first := must(alice.SendMessageEvent(ctx, roomID, event.EventMessage, content, mautrix.ReqSendEvent{TransactionID: "txn1"}))
		second := must(alice.SendMessageEvent(ctx, roomID, event.EventMessage, content, mautrix.ReqSendEvent{TransactionID: "txn1"}))
		if first.EventID != second.EventID {
			t.Fatalf("retry produced a second event: %s vs %s", first.EventID, second.EventID)
		}
		third := must(alice.SendMessageEvent(ctx, roomID, event.EventMessage, content, mautrix.ReqSendEvent{TransactionID: "txn2"}))
		if third.EventID == first.EventID {
			t.Fatal("new transaction ID reused the event")
		}
		msgs := must(alice.Messages(ctx, roomID, "", "", mautrix.DirectionBackward, nil, 100))
		n := 0
		for _, e := range msgs.Chunk {
			if e.Type == event.EventMessage {
				n++
			}
		}
		if n != 2 {
			t.Fatalf("room has %d messages, want 2", n)
		}
	})
}

// TestMessagesPagination: /messages pages the whole history in both
// directions with no gap or duplicate.
func TestMessagesPagination(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		alice := srv.Register(t, "alice")
		roomID := must(alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{})).RoomID
		const n = 57
		var sent []id.EventID
		for i := 0; i < n; i++ {
			sent = append(sent, sendText(t, alice, roomID, fmt.Sprintf("m%d", i)))
		}
		collect := func(dir mautrix.Direction) []id.EventID {
			var out []id.EventID
			seen := map[id.EventID]bool{}
			from := ""
			for pages := 0; pages < 100; pages++ {
				resp := must(alice.Messages(ctx, roomID, from, "", dir, nil, 7))
				for _, e := range resp.Chunk {
					if seen[e.ID] {
						t.Fatalf("duplicate event %s", e.ID)
					}
					seen[e.ID] = true
					if e.Type == event.EventMessage {
						out = append(out, e.ID)
					}
				}
				if resp.End == "" {
					return out
				}
				from = resp.End
			}
			t.Fatal("pagination did not end")
			return nil
		}
		fwd := collect(mautrix.DirectionForward)
		back := collect(mautrix.DirectionBackward)
		if len(fwd) != n || len(back) != n {
			t.Fatalf("forward %d, backward %d messages, want %d", len(fwd), len(back), n)
		}
		for i := range sent {
			if fwd[i] != sent[i] || back[n-1-i] != sent[i] {
				t.Fatalf("order mismatch at %d", i)
			}
		}
	})
}

// TestEveryRoomVersion: rooms of every version 1–12 can be created and used.
func TestEveryRoomVersion(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		for v := 1; v <= 12; v++ {
			version := id.RoomVersion(fmt.Sprint(v))
			roomID := must(alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{RoomVersion: version, Preset: "public_chat", Name: "v" + string(version)})).RoomID
			must(bob.JoinRoomByID(ctx, roomID))
			msg := sendText(t, bob, roomID, "hi from bob")
			ev := must(alice.GetEvent(ctx, roomID, msg))
			if ev.Content.Raw["body"] != "hi from bob" {
				t.Fatalf("v%d: event content %v", v, ev.Content.Raw)
			}
			must(alice.RedactEvent(ctx, roomID, msg))
			ev = must(alice.GetEvent(ctx, roomID, msg))
			if len(ev.Content.Raw) != 0 {
				t.Fatalf("v%d: redacted event still has content %v", v, ev.Content.Raw)
			}
			var create event.CreateEventContent
			if err := alice.StateEvent(ctx, roomID, event.StateCreate, "", &create); err != nil {
				t.Fatal(err)
			}
			if create.RoomVersion != version {
				t.Fatalf("room version %q, want %q", create.RoomVersion, version)
			}
			must(bob.LeaveRoom(ctx, roomID))
		}
		_, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{RoomVersion: "13"})
		wantErrCode(t, err, "M_UNSUPPORTED_ROOM_VERSION")
	})
}
