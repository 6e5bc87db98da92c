package roomview

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/tidwall/gjson"

	"github.com/myelin-chat/myelin/roomserver"
)

// TestMessagesSkipsHiddenHistory: paging /messages backwards in a room with
// joined history does not read the history from before the user joined
// batch by batch: the pagination that reaches it costs a few queries,
// however long that history is.
func TestMessagesSkipsHiddenHistory(t *testing.T) {
	s, view, db := newTestRooms(t)
	ctx := context.Background()
	owner, bob := user("owner"), user("bob")
	room, err := s.CreateRoom(ctx, owner, &roomserver.CreateRoomRequest{Preset: "public_chat", InitialState: []roomserver.InitialStateEvent{
		{Type: "m.room.history_visibility", Content: json.RawMessage(`{"history_visibility":"joined"}`)},
	}})
	if err != nil {
		t.Fatal(err)
	}
	send := func(i int) {
		if _, err := s.Send(ctx, roomserver.SendRequest{Sender: owner, RoomID: room, Type: "m.room.message",
			Content: []byte(fmt.Sprintf(`{"msgtype":"m.text","body":"%d"}`, i))}); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 300; i++ {
		send(i)
	}
	if _, err := s.Join(ctx, bob, string(room), ""); err != nil {
		t.Fatal(err)
	}
	send(300)

	var seen []string
	from := ""
	for page := 0; ; page++ {
		if page > 20 {
			t.Fatal("pagination does not end")
		}
		reads0 := db.Reads()
		resp, err := view.Messages(ctx, bob, room, MessagesRequest{From: from, Dir: "b", Limit: 1})
		if err != nil {
			t.Fatal(err)
		}
		if reads := db.Reads() - reads0; reads > 20 {
			t.Errorf("page %d took %d queries", page, reads)
		}
		for _, e := range resp.Chunk {
			seen = append(seen, gjson.GetBytes(e, "type").Str)
		}
		if resp.End == "" {
			break
		}
		from = resp.End
	}
	// The message after bob's join, his join, and the room's creation (sent
	// before history_visibility was joined), never the hidden messages.
	if len(seen) < 2 || seen[0] != "m.room.message" || seen[1] != "m.room.member" {
		t.Fatalf("bob saw %v", seen)
	}
	for _, typ := range seen[2:] {
		if typ == "m.room.message" {
			t.Fatalf("bob saw a hidden message: %v", seen)
		}
	}
}
