package tests

import (
	"net/url"
	"testing"

	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

// TestRestrictedRoomMemberUpdate: a member already joined to a restricted
// room may send their member event again (a display name change), with a
// stray join_authorised_via_users_server ignored, as Complement's
// restricted-room tests do after joining, and a profile change reaches the
// room; a user outside the allowed rooms still cannot join.
func TestRestrictedRoomMemberUpdate(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		for _, version := range []string{"8", "10", "12"} {
			create := func(body map[string]any) id.RoomID {
				r := clientCall(t, alice, "POST", "/_matrix/client/v3/createRoom", body)
				if r.Status != 200 {
					t.Fatalf("createRoom: %d %s", r.Status, r.Raw)
				}
				return id.RoomID(r.Body["room_id"].(string))
			}
			allowed := create(map[string]any{"preset": "public_chat"})
			room := create(map[string]any{"preset": "public_chat", "room_version": version, "initial_state": []any{map[string]any{
				"type": "m.room.join_rules", "state_key": "", "content": map[string]any{"join_rule": "restricted",
					"allow": []any{map[string]any{"type": "m.room_membership", "room_id": allowed, "via": []string{"localhost"}}}}}}})
			join := func() rawResp {
				return clientCall(t, bob, "POST", "/_matrix/client/v3/join/"+url.PathEscape(string(room)), map[string]any{})
			}
			if r := join(); r.Status != 403 {
				t.Fatalf("v%s: join before joining the allowed room: %d %s", version, r.Status, r.Raw)
			}
			joinRoom(t, bob, allowed)
			if r := join(); r.Status != 200 {
				t.Fatalf("v%s: join: %d %s", version, r.Status, r.Raw)
			}
			r := clientCall(t, bob, "PUT", roomPath(room, "/state/m.room.member/"+url.PathEscape(string(bob.UserID))), map[string]any{
				"membership": "join", "displayname": "Bobby", "join_authorised_via_users_server": "unused"})
			if r.Status != 200 {
				t.Fatalf("v%s: member update in a restricted room: %d %s", version, r.Status, r.Raw)
			}
			c := stateContent(t, alice, room, "m.room.member", string(bob.UserID))
			if c["displayname"] != "Bobby" || c["join_authorised_via_users_server"] != nil {
				t.Fatalf("v%s: member content after the update: %v", version, c)
			}
			// A profile change reaches the restricted room too.
			name := "Robert " + version
			if r := clientCall(t, bob, "PUT", "/_matrix/client/v3/profile/"+url.PathEscape(string(bob.UserID))+"/displayname", map[string]any{"displayname": name}); r.Status != 200 {
				t.Fatalf("v%s: profile change: %d %s", version, r.Status, r.Raw)
			}
			if c := stateContent(t, alice, room, "m.room.member", string(bob.UserID)); c["displayname"] != name {
				t.Fatalf("v%s: member content after a profile change: %v", version, c)
			}
		}
	})
}
