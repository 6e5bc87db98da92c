package tests

import (
	"context"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

// loginAgain logs c's user in on a second device.
func loginAgain(t *testing.T, srv *testserver.Server, c *mautrix.Client, localpart string) *mautrix.Client {
	t.Helper()
	c2 := srv.Client(t)
	resp, err := c2.Login(context.Background(), &mautrix.ReqLogin{
		Type: mautrix.AuthTypePassword, Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: localpart},
		Password: "password-" + localpart, StoreCredentials: true,
	})
	if err != nil {
		t.Fatalf("second login of %s: %v", localpart, err)
	}
	if resp.DeviceID == c.DeviceID {
		t.Fatal("second login got the same device")
	}
	return c2
}

func findEvent(evs []*event.Event, evID id.EventID) *event.Event {
	for _, e := range evs {
		if e.ID == evID {
			return e
		}
	}
	return nil
}

// TestTransactionIDOnlyForSendingDevice: an event sent with a transaction ID
// carries unsigned.transaction_id when served to the device that sent it —
// in /sync, /messages, /event and /context — and never to another device of
// the same user or to another user.
func TestTransactionIDOnlyForSendingDevice(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		alice := srv.Register(t, "alice")
		alice2 := loginAgain(t, srv, alice, "alice")
		bob := srv.Register(t, "bob")
		room := shareRoom(t, alice, bob)
		const txn = "local-echo-1"
		sent := must(alice.SendMessageEvent(ctx, room, event.EventMessage,
			&event.MessageEventContent{MsgType: event.MsgText, Body: "hello"}, mautrix.ReqSendEvent{TransactionID: txn})).EventID
		redaction := must(alice.RedactEvent(ctx, room, sent, mautrix.ReqRedact{TxnID: "redact-txn"})).EventID

		check := func(c *mautrix.Client, wantTxn bool) {
			t.Helper()
			who := string(c.UserID) + "/" + string(c.DeviceID)
			expect := func(where string, e *event.Event, want string) {
				t.Helper()
				if e == nil {
					t.Errorf("%s: %s: event missing", who, where)
					return
				}
				if !wantTxn {
					want = ""
				}
				if e.Unsigned.TransactionID != want {
					t.Errorf("%s: %s: transaction_id %q, want %q", who, where, e.Unsigned.TransactionID, want)
				}
			}
			s := syncOnce(t, c, "", "", 0)
			expect("/sync", findEvent(s.Rooms.Join[room].Timeline.Events, sent), txn)
			expect("/sync redaction", findEvent(s.Rooms.Join[room].Timeline.Events, redaction), "redact-txn")
			msgs := must(c.Messages(ctx, room, "", "", mautrix.DirectionBackward, nil, 50))
			expect("/messages", findEvent(msgs.Chunk, sent), txn)
			expect("/event", must(c.GetEvent(ctx, room, sent)), txn)
			cx := must(c.Context(ctx, room, redaction, nil, 4))
			expect("/context", findEvent(cx.EventsBefore, sent), txn)
			expect("/context event", cx.Event, "redact-txn")
		}
		check(alice, true)
		check(alice2, false)
		check(bob, false)
	})
}

// TestUnsignedPrevContent: a state event that replaced another carries
// unsigned.replaces_state and unsigned.prev_content (the replaced content),
// and age, in /sync, /messages, /event and /state; the first event of a
// state key carries neither.
func TestUnsignedPrevContent(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		alice := srv.Register(t, "alice")
		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "First"})
		first := must(alice.State(ctx, room))[event.StateRoomName][""]
		second := must(alice.SendStateEvent(ctx, room, event.StateRoomName, "", &event.RoomNameEventContent{Name: "Second"})).EventID

		check := func(where string, e *event.Event) {
			t.Helper()
			if e == nil {
				t.Errorf("%s: event missing", where)
				return
			}
			if e.Unsigned.ReplacesState != first.ID {
				t.Errorf("%s: replaces_state %q, want %q", where, e.Unsigned.ReplacesState, first.ID)
			}
			if e.Unsigned.PrevContent == nil || e.Unsigned.PrevContent.Raw["name"] != "First" {
				t.Errorf("%s: prev_content %+v, want name First", where, e.Unsigned.PrevContent)
			}
			if e.Unsigned.Age <= 0 && e.Timestamp == 0 {
				t.Errorf("%s: no age", where)
			}
		}
		s := syncOnce(t, alice, "", "", 0)
		check("/sync", findEvent(s.Rooms.Join[room].Timeline.Events, second))
		msgs := must(alice.Messages(ctx, room, "", "", mautrix.DirectionBackward, nil, 50))
		check("/messages", findEvent(msgs.Chunk, second))
		check("/event", must(alice.GetEvent(ctx, room, second)))
		st := must(alice.State(ctx, room))
		check("/state", st[event.StateRoomName][""])
		if f := findEvent(msgs.Chunk, first.ID); f == nil || f.Unsigned.ReplacesState != "" || f.Unsigned.PrevContent != nil {
			t.Errorf("the first name event claims to replace something: %+v", f)
		}
		// A limited sync puts the replaced name in the state section with its own unsigned.
		lim := syncOnce(t, alice, "", `{"room":{"timeline":{"limit":1}}}`, 0)
		if n := findEvent(lim.Rooms.Join[room].State.Events, second); n != nil {
			check("/sync state", n)
		}
	})
}
