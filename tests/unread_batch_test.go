package tests

import (
	"context"
	"fmt"
	"reflect"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/homeserver/testserver"
	"github.com/myelin-chat/myelin/push"
)

// TestUnreadCountsInRoomsMatchPerRoom: push's batched counts of one user in
// many rooms (what sliding sync's and an initial /sync's first answer use)
// equal UnreadCounts room by room, cold and when advancing cached counts,
// unthreaded and threaded: receipts part way (unthreaded, threaded, private),
// threads, mentions (highlights), a leave and rejoin with messages while
// away, a room left, rooms never read and rooms read to the end.
func TestUnreadCountsInRoomsMatchPerRoom(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		if err := alice.SetDisplayName(ctx, "Queen Wonderland"); err != nil {
			t.Fatal(err)
		}
		var rooms []string
		msgs := map[string][]id.EventID{}
		send := func(room id.RoomID, content map[string]any) id.EventID {
			resp, err := bob.SendMessageEvent(ctx, room, event.EventMessage, content)
			if err != nil {
				t.Fatal(err)
			}
			msgs[string(room)] = append(msgs[string(room)], resp.EventID)
			return resp.EventID
		}
		receipt := func(room id.RoomID, ev id.EventID, typ event.ReceiptType, thread string) {
			if err := alice.SendReceipt(ctx, room, ev, typ, &mautrix.ReqSendReceipt{ThreadID: thread}); err != nil {
				t.Fatal(err)
			}
		}
		for i := range 14 {
			room := createRoom(t, bob, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: fmt.Sprintf("r%d", i)}, alice)
			rooms = append(rooms, string(room))
			var root id.EventID
			for k := range 6 {
				body := map[string]any{"msgtype": "m.text", "body": fmt.Sprintf("m%d", k)}
				switch {
				case k == 2 && i%3 == 0: // a mention: highlight
					body["body"] = "hey alice"
					body["m.mentions"] = map[string]any{"user_ids": []string{string(alice.UserID)}}
				case k == 2 && i%3 == 1: // @room by the room's creator: highlight (power levels)
					body["body"] = "hello @room"
				case k == 2 && i%3 == 2: // alice's display name, no m.mentions: highlight (own display name)
					body["body"] = "ping Queen Wonderland"
				case k == 3 && i%2 == 0:
					root = send(room, body)
					continue
				case k > 3 && root != "":
					body["m.relates_to"] = map[string]any{"rel_type": "m.thread", "event_id": string(root)}
				}
				send(room, body)
			}
			evs := msgs[string(room)]
			switch i % 5 {
			case 1:
				receipt(room, evs[2], event.ReceiptTypeRead, "")
			case 2:
				receipt(room, evs[len(evs)-1], event.ReceiptTypeRead, "")
			case 3:
				receipt(room, evs[1], event.ReceiptTypeReadPrivate, "")
				if root != "" {
					receipt(room, evs[4], event.ReceiptTypeRead, string(root))
				}
			case 4:
				receipt(room, evs[3], event.ReceiptTypeRead, "main")
			}
		}
		// Left and rejoined, with messages while away and after.
		away := id.RoomID(rooms[5])
		must(alice.LeaveRoom(ctx, away))
		send(away, map[string]any{"msgtype": "m.text", "body": "while away, alice"})
		joinRoom(t, alice, away)
		send(away, map[string]any{"msgtype": "m.text", "body": "back, alice"})
		// Left for good.
		must(alice.LeaveRoom(ctx, id.RoomID(rooms[7])))
		send(id.RoomID(rooms[7]), map[string]any{"msgtype": "m.text", "body": "gone"})

		ruleset, pos, err := srv.Push.PushRuleset(ctx, string(alice.UserID))
		if err != nil {
			t.Fatal(err)
		}
		// Each comparison uses rule positions nothing cached yet, so both
		// paths count from the store (the rules are the same).
		fake := pos + 1000
		compare := func(stage string, batchPos, perRoomPos int64) {
			t.Helper()
			upTo := srv.DB.Stream.Current()
			for _, threaded := range []bool{false, true} {
				got, err := srv.Push.UnreadCountsInRooms(ctx, string(alice.UserID), rooms, upTo, ruleset, batchPos, threaded)
				if err != nil {
					t.Fatal(err)
				}
				nonZero := 0
				for _, r := range rooms {
					main, threads, err := srv.Push.UnreadCounts(ctx, string(alice.UserID), r, upTo, ruleset, perRoomPos, threaded, nil, 0)
					if err != nil {
						t.Fatal(err)
					}
					want := push.RoomCounts{Main: main, Threads: threads}
					if g := got[r]; g.Main != want.Main || len(g.Threads)+len(want.Threads) > 0 && !reflect.DeepEqual(g.Threads, want.Threads) {
						t.Errorf("%s, threaded %v, room %s: batched %+v, per room %+v", stage, threaded, r, g, want)
					}
					if main.Notifications > 0 {
						nonZero++
					}
				}
				if len(got) != len(rooms) || nonZero < len(rooms)/2 {
					t.Fatalf("%s: %d rooms counted, %d with unread", stage, len(got), nonZero)
				}
			}
		}
		compare("cold", fake, fake+1)
		// More messages: the batch advances its cached counts (fake), the
		// per-room path counts afresh.
		for _, r := range rooms[:6] {
			send(id.RoomID(r), map[string]any{"msgtype": "m.text", "body": "later alice"})
		}
		compare("advanced", fake, fake+2)
	})
}
