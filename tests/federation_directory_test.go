package tests

import (
	"net/http"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

// TestFederationRemoteDirectory: a user of b.test resolves an alias of a.test
// (GET /directory/room asks a.test's /query/directory), joins the room by
// that alias (the answer's servers are the join's candidates), and reads
// a.test's room directory with /publicRooms?server=a.test, GET and POST with
// a filter. An alias a.test does not have is 404; one on a server nobody
// answers for is 502; a malformed server= is 400.
func TestFederationRemoteDirectory(t *testing.T) {
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) {
			n := newFedNet(t, "a.test", "b.test", "gone.test")
			a := n.start(t, backend, "a.test")
			b := n.start(t, backend, "b.test")
			ctx := ctxT(t)
			alice := a.Register(t, "alice")
			bob := b.Register(t, "bob")
			room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Lobby", Topic: "federated lobby",
				RoomAliasName: "lobby", Visibility: "public"})
			createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Other", Visibility: "public"})

			alias := id.RoomAlias("#lobby:a.test")
			res, err := bob.ResolveAlias(ctx, alias)
			if err != nil {
				t.Fatalf("resolve remote alias: %v", err)
			}
			if res.RoomID != room || len(res.Servers) == 0 || res.Servers[0] != "a.test" {
				t.Fatalf("remote alias resolved to %+v", res)
			}
			_, err = bob.ResolveAlias(ctx, "#nope:a.test")
			wantErr(t, err, http.StatusNotFound, "M_NOT_FOUND")
			_, err = bob.ResolveAlias(ctx, "#lobby:gone.test")
			wantErr(t, err, http.StatusBadGateway, "M_UNKNOWN")

			// Join by the remote alias.
			joined, err := bob.JoinRoom(ctx, alias.String(), nil)
			if err != nil {
				t.Fatalf("join by remote alias: %v", err)
			}
			if joined.RoomID != room {
				t.Fatalf("joined %s, want %s", joined.RoomID, room)
			}
			members := must(alice.JoinedMembers(ctx, room))
			if _, ok := members.Joined[bob.UserID]; !ok {
				t.Fatalf("a.test does not list bob: %v", members.Joined)
			}
			// Now both servers are in the room: a.test's local answer lists both.
			res = must(alice.ResolveAlias(ctx, alias))
			if len(res.Servers) != 2 || res.Servers[0] != "a.test" || res.Servers[1] != "b.test" {
				t.Fatalf("local alias servers %v", res.Servers)
			}

			// a.test's directory from b.test.
			list, err := bob.PublicRooms(ctx, &mautrix.ReqPublicRooms{Server: "a.test"})
			if err != nil {
				t.Fatalf("remote publicRooms: %v", err)
			}
			if len(list.Chunk) != 2 {
				t.Fatalf("remote publicRooms: %+v", list.Chunk)
			}
			var filtered mautrix.RespPublicRooms
			_, err = bob.MakeRequest(ctx, http.MethodPost, bob.BuildURLWithQuery(mautrix.ClientURLPath{"v3", "publicRooms"},
				map[string]string{"server": "a.test"}), map[string]any{"filter": map[string]any{"generic_search_term": "lobby"}}, &filtered)
			if err != nil {
				t.Fatalf("remote publicRooms filtered: %v", err)
			}
			if len(filtered.Chunk) != 1 || filtered.Chunk[0].RoomID != room || filtered.Chunk[0].Topic != "federated lobby" {
				t.Fatalf("remote publicRooms filtered: %+v", filtered.Chunk)
			}
			_, err = bob.PublicRooms(ctx, &mautrix.ReqPublicRooms{Server: "gone.test"})
			wantErr(t, err, http.StatusBadGateway, "M_UNKNOWN")
			_, err = bob.PublicRooms(ctx, &mautrix.ReqPublicRooms{Server: "bad server!"})
			wantErr(t, err, http.StatusBadRequest, "M_INVALID_PARAM")
		})
	}
}
