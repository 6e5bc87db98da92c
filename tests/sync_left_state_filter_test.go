package tests

import (
	"context"
	"net/url"
	"testing"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

// TestSyncLeftRoomStateNotRepeated: bob left a room after alice sent a
// message and a state event; his initial sync (include_leave, a timeline
// filter of those two types, a state filter of the state type) shows them in
// the left room's timeline and nothing in its state: the timeline ends at
// his leave and carries that state event already (Complement's
// TestArchivedRoomsHistory).
func TestSyncLeftRoomStateNotRepeated(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"}, bob)
		sendText(t, alice, room, "before")
		must(alice.SendStateEvent(ctx, room, event.Type{Type: "a.madeup.test.state", Class: event.StateEventType}, "", map[string]string{"my_key": "before"}))
		must(bob.LeaveRoom(ctx, room))
		sendText(t, alice, room, "after")
		filter := `{"room":{"timeline":{"types":["m.room.message","a.madeup.test.state"]},"state":{"types":["a.madeup.test.state"]},"include_leave":true}}`
		r := clientCall(t, bob, "GET", "/_matrix/client/v3/sync?filter="+url.QueryEscape(filter), nil)
		left := gjson.Get(r.Raw, "rooms.leave."+gjson.Escape(string(room)))
		if !left.Exists() {
			t.Fatalf("no left room: %s", r.Raw)
		}
		if n := len(left.Get("state.events").Array()); n != 0 {
			t.Fatalf("left room state %s", left.Get("state").Raw)
		}
		var types []string
		for _, e := range left.Get("timeline.events").Array() {
			types = append(types, e.Get("type").Str+"/"+e.Get("content.body").Str)
		}
		if len(types) != 2 || types[0] != "m.room.message/before" || types[1] != "a.madeup.test.state/" {
			t.Fatalf("left room timeline %v", types)
		}
	})
}
