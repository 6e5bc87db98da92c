package tests

import (
	"context"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/homeserver/testserver"
	"github.com/myelin-chat/myelin/roomview"
)

// TestRoomReadSide checks the storage methods /sync builds on, on both
// backends: events by stream range, membership changes, state at a stream
// position, member counts and heroes, and the pagination token handshake.
func TestRoomReadSide(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		db := srv.DB
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		start := db.Stream.Current()
		roomID := must(alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "before"}))
		must(bob.JoinRoomByID(ctx, roomID.RoomID))
		afterJoin := db.Stream.Current()
		sendText(t, bob, roomID.RoomID, "one")
		must(alice.SendStateEvent(ctx, roomID.RoomID, event.StateRoomName, "", map[string]string{"name": "after"}))
		must(bob.LeaveRoom(ctx, roomID.RoomID))
		end := db.Stream.Current()
		rid := string(roomID.RoomID)

		changes, err := db.MembershipChanges(ctx, string(bob.UserID), start, end)
		if err != nil {
			t.Fatal(err)
		}
		if len(changes) != 2 || changes[0].Membership != "join" || changes[1].Membership != "leave" || changes[0].RoomID != rid {
			t.Fatalf("membership changes = %+v", changes)
		}
		evs, limited, err := db.RoomEventsRange(ctx, rid, afterJoin, end, 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) != 3 || limited || evs[0].Type != "m.room.message" || evs[2].Membership != "leave" {
			t.Fatalf("events after join = %d", len(evs))
		}
		last, limited, err := db.RoomEventsRange(ctx, rid, 0, end, 2)
		if err != nil || len(last) != 2 || !limited || last[0].StreamPos >= last[1].StreamPos || last[1].StreamPos != evs[2].StreamPos {
			t.Fatalf("last events: %v", err)
		}
		// State at a stream position: the name before the rename.
		st, err := db.StateAtPosition(ctx, rid, afterJoin)
		if err != nil {
			t.Fatal(err)
		}
		for k, eventID := range st {
			if k.Type == "m.room.name" {
				ev, _ := db.GetEvent(ctx, eventID)
				if want := `"name":"before"`; !strings.Contains(string(ev.JSON), want) {
					t.Fatalf("name at join: %s", ev.JSON)
				}
			}
		}
		joined, invited, err := db.MemberCounts(ctx, rid)
		if err != nil || joined != 1 || invited != 0 {
			t.Fatalf("counts %d %d %v", joined, invited, err)
		}
		heroes, err := db.Heroes(ctx, rid, string(alice.UserID), 5)
		if err != nil || len(heroes) != 1 || heroes[0] != string(bob.UserID) {
			t.Fatalf("heroes %v %v", heroes, err)
		}
		// A /sync prev_batch (stream token) is accepted by /messages.
		resp := must(alice.Messages(ctx, roomID.RoomID, roomview.StreamToken(end), "", mautrix.DirectionBackward, nil, 2))
		if len(resp.Chunk) != 2 || resp.Chunk[0].Type.Type != "m.room.member" || resp.Chunk[0].StateKey == nil || id.UserID(*resp.Chunk[0].StateKey) != bob.UserID {
			t.Fatalf("messages from stream token: %+v", resp.Chunk)
		}
	})
}
