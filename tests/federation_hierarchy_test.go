package tests

import (
	"encoding/json"
	"net/url"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

// TestFederationClientHierarchy: a space on a.test links rooms and a space
// hosted on b.test (which a.test does not know). GET /hierarchy on a.test
// lists them as b.test describes them (its federation /hierarchy), descends
// into b.test's space, and leaves out what b.test does not let a.test see (an
// invite-only room) and links whose servers do not answer.
func TestFederationClientHierarchy(t *testing.T) {
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) {
			n := newFedNet(t, "a.test", "b.test", "gone.test")
			a := n.start(t, backend, "a.test")
			b := n.start(t, backend, "b.test")
			ctx := ctxT(t)
			alice := a.Register(t, "alice")
			bob := b.Register(t, "bob")
			names := map[id.RoomID]string{}
			mk := func(c *mautrix.Client, name, preset string, space bool) id.RoomID {
				req := &mautrix.ReqCreateRoom{Preset: preset, Name: name}
				if space {
					req.CreationContent = map[string]any{"type": "m.space"}
				}
				room := createRoom(t, c, req)
				names[room] = name
				return room
			}
			link := func(c *mautrix.Client, parent, child id.RoomID, via string) {
				must(c.SendStateEvent(ctx, parent, event.StateSpaceChild, string(child), map[string]any{"via": []string{via}}))
				time.Sleep(3 * time.Millisecond) // distinct origin_server_ts: a stable order
			}
			root := mk(alice, "Root", "public_chat", true)
			local := mk(alice, "Local", "public_chat", false)
			remoteRoom := mk(bob, "Remote room", "public_chat", false)
			remoteSpace := mk(bob, "Remote space", "public_chat", true)
			deep := mk(bob, "Deep", "public_chat", false)
			private := mk(bob, "Private", "private_chat", false)
			link(alice, root, local, "a.test")
			link(alice, root, remoteRoom, "b.test")
			link(alice, root, remoteSpace, "b.test")
			link(alice, root, "!nowhere:gone.test", "gone.test")
			link(bob, remoteSpace, deep, "b.test")
			link(bob, remoteSpace, private, "b.test")

			r := clientCall(t, alice, "GET", "/_matrix/client/v1/rooms/"+url.PathEscape(string(root))+"/hierarchy", nil)
			if r.Status != 200 {
				t.Fatalf("hierarchy: %d %s", r.Status, r.Raw)
			}
			var body struct {
				Rooms []struct {
					RoomID        id.RoomID         `json:"room_id"`
					Name          string            `json:"name"`
					RoomType      string            `json:"room_type"`
					ChildrenState []json.RawMessage `json:"children_state"`
				} `json:"rooms"`
			}
			must(0, json.Unmarshal([]byte(r.Raw), &body))
			var got []string
			for _, room := range body.Rooms {
				got = append(got, room.Name)
				if room.Name != names[room.RoomID] {
					t.Errorf("room %s named %q, want %q", room.RoomID, room.Name, names[room.RoomID])
				}
				if room.RoomID == remoteSpace && len(room.ChildrenState) != 2 {
					t.Errorf("remote space's children_state: %s", room.ChildrenState)
				}
			}
			want := "Root,Local,Remote room,Remote space,Deep"
			if strings.Join(got, ",") != want {
				t.Fatalf("hierarchy rooms %q, want %q", strings.Join(got, ","), want)
			}
		})
	}
}
