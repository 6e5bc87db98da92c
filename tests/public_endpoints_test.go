package tests

import (
	"net/url"
	"testing"

	"maunium.net/go/mautrix"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

// TestOptionalAuthEndpoints: the endpoints whose OpenAPI definition has no
// security section (profile and directory lookups, the public room list)
// answer without an access token and with one; a bad token is still
// refused. The room summary is served anonymously only for rooms anyone
// could find (room_summary.yaml: public, knock, knock_restricted or
// world_readable).
func TestOptionalAuthEndpoints(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice")
		public := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomAliasName: "lobby", Visibility: "public"})
		private := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat"})
		paths := []string{
			"/_matrix/client/v3/profile/" + string(alice.UserID),
			"/_matrix/client/v3/profile/" + string(alice.UserID) + "/displayname",
			"/_matrix/client/v3/publicRooms",
			"/_matrix/client/v3/directory/room/" + url.PathEscape("#lobby:localhost"),
			"/_matrix/client/v3/directory/list/room/" + string(public),
			"/_matrix/client/v1/room_summary/" + string(public),
			"/_matrix/client/v1/room_summary/" + url.PathEscape("#lobby:localhost"),
		}
		for _, p := range paths {
			if r := httpCall(t, srv.URL, "GET", p, "", nil); r.Status != 200 {
				t.Errorf("GET %s without a token: %d %s", p, r.Status, r.Raw)
			}
			if r := httpCall(t, srv.URL, "GET", p, alice.AccessToken, nil); r.Status != 200 {
				t.Errorf("GET %s with a token: %d %s", p, r.Status, r.Raw)
			}
			if r := httpCall(t, srv.URL, "GET", p, "not-a-token", nil); r.Status != 401 || r.errcode() != "M_UNKNOWN_TOKEN" {
				t.Errorf("GET %s with a bad token: %d %s", p, r.Status, r.errcode())
			}
		}
		if r := httpCall(t, srv.URL, "GET", "/_matrix/client/v3/publicRooms", "", nil); len(chunk(r.Body)) != 1 {
			t.Errorf("anonymous publicRooms: %s", r.Raw)
		}
		// A private room's summary is not for strangers.
		if r := httpCall(t, srv.URL, "GET", "/_matrix/client/v1/room_summary/"+string(private), "", nil); r.Status != 404 {
			t.Errorf("anonymous summary of a private room: %d %s", r.Status, r.Raw)
		}
		// Writes still need a token.
		for _, c := range []struct{ method, path string }{
			{"POST", "/_matrix/client/v3/publicRooms"},
			{"PUT", "/_matrix/client/v3/profile/" + string(alice.UserID) + "/displayname"},
			{"PUT", "/_matrix/client/v3/directory/room/" + url.PathEscape("#other:localhost")},
			{"PUT", "/_matrix/client/v3/directory/list/room/" + string(public)},
		} {
			if r := httpCall(t, srv.URL, c.method, c.path, "", map[string]any{}); r.Status != 401 || r.errcode() != "M_MISSING_TOKEN" {
				t.Errorf("%s %s without a token: %d %s", c.method, c.path, r.Status, r.errcode())
			}
		}
	})
}

// chunk is body.chunk.
func chunk(body map[string]any) []any {
	l, _ := body["chunk"].([]any)
	return l
}
