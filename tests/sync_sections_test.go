package tests

import (
	"testing"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

// TestSyncJoinedRoomSections: a joined room in a /sync answer carries its
// ephemeral and account_data sections even when they are empty, as Synapse's
// do: clients (and Complement's TestACLsForEDUs) read
// rooms.join.<id>.ephemeral.events without checking it exists.
func TestSyncJoinedRoomSections(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice")
		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat"})
		r := clientCall(t, alice, "GET", "/_matrix/client/v3/sync", nil)
		jr := gjson.Get(r.Raw, "rooms.join."+gjson.Escape(string(room)))
		for _, section := range []string{"ephemeral.events", "account_data.events"} {
			if v := jr.Get(section); !v.IsArray() || len(v.Array()) != 0 {
				t.Errorf("%s = %s, want []", section, v.Raw)
			}
		}
		// An incremental sync with a new message: the room is there again, whole.
		since := gjson.Get(r.Raw, "next_batch").Str
		sendText(t, alice, room, "hello")
		r = clientCall(t, alice, "GET", "/_matrix/client/v3/sync?since="+since, nil)
		jr = gjson.Get(r.Raw, "rooms.join."+gjson.Escape(string(room)))
		if !jr.Get("ephemeral.events").IsArray() || len(jr.Get("timeline.events").Array()) != 1 {
			t.Errorf("incremental room %s", jr.Raw)
		}
	})
}
