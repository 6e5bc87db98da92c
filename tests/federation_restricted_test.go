package tests

import (
	"maps"
	"net/http"
	"net/url"
	"testing"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix"
	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

// TestFederationRestrictedJoin: two Myelin servers. a.test hosts a space S
// and a room R restricted to S's members (room versions 10 and 12). bob
// (b.test) joins S over federation, then R through a.test: make_join names a
// local user of a.test in join_authorised_via_users_server and a.test
// co-signs the join in send_join; both servers then have bob joined. dave
// (b.test), not in S, is refused with M_FORBIDDEN; a room restricted to a
// room a.test is not in is M_UNABLE_TO_AUTHORISE_JOIN. Nothing is left on
// b.test by a refused join. make_join as a remote server sees it: 403
// M_FORBIDDEN, 400 M_UNABLE_TO_AUTHORISE_JOIN, and 400 M_UNABLE_TO_GRANT_JOIN
// when no member of a.test may invite; a room restricted to a room a.test
// has left is M_UNABLE_TO_AUTHORISE_JOIN (its copy is stale).
func TestFederationRestrictedJoin(t *testing.T) {
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) {
			n := newFedNet(t, "a.test", "b.test", "remote.test")
			a := n.start(t, backend, "a.test")
			b := n.start(t, backend, "b.test")
			ctx := ctxT(t)
			alice := a.Register(t, "alice")
			bob := b.Register(t, "bob")
			dave := b.Register(t, "dave")
			create := func(body map[string]any) id.RoomID {
				t.Helper()
				r := clientCall(t, alice, "POST", "/_matrix/client/v3/createRoom", body)
				if r.Status != 200 {
					t.Fatalf("createRoom: %d %s", r.Status, r.Raw)
				}
				return id.RoomID(r.Body["room_id"].(string))
			}
			restricted := func(version string, allowed id.RoomID, extra ...map[string]any) id.RoomID {
				body := map[string]any{"preset": "public_chat", "room_version": version, "initial_state": []any{map[string]any{
					"type": "m.room.join_rules", "state_key": "", "content": map[string]any{"join_rule": "restricted",
						"allow": []any{map[string]any{"type": "m.room_membership", "room_id": allowed, "via": []string{"a.test"}}}}}}}
				for _, e := range extra {
					maps.Copy(body, e)
				}
				return create(body)
			}
			space := create(map[string]any{"preset": "public_chat", "creation_content": map[string]any{"type": "m.space"}})
			if _, err := bob.JoinRoom(ctx, string(space), &mautrix.ReqJoinRoom{Via: []string{"a.test"}}); err != nil {
				t.Fatalf("bob joins the space: %v", err)
			}
			for _, version := range []string{"10", "12"} {
				room := restricted(version, space)
				// dave is not in the space: a.test refuses; b.test keeps nothing.
				_, err := dave.JoinRoom(ctx, string(room), &mautrix.ReqJoinRoom{Via: []string{"a.test"}})
				wantErr(t, err, http.StatusForbidden, "M_FORBIDDEN")
				if _, err := b.DB.GetRoom(ctx, string(room)); err == nil {
					t.Fatalf("v%s: a refused join left the room on b.test", version)
				}
				// bob is: a.test authorises and co-signs his join.
				if _, err := bob.JoinRoom(ctx, string(room), &mautrix.ReqJoinRoom{Via: []string{"a.test"}}); err != nil {
					t.Fatalf("v%s: bob joins the restricted room: %v", version, err)
				}
				for _, srv := range []*testserver.Server{a, b} {
					ev := currentMember(t, srv, room, bob.UserID)
					if gjson.GetBytes(ev, "content.membership").Str != "join" ||
						gjson.GetBytes(ev, "content.join_authorised_via_users_server").Str != string(alice.UserID) ||
						!gjson.GetBytes(ev, "signatures.a\\.test").Exists() || !gjson.GetBytes(ev, "signatures.b\\.test").Exists() {
						t.Fatalf("v%s: %s's copy of bob's join: %s", version, srv.Config.ServerName, ev)
					}
				}
				if _, ok := must(alice.JoinedMembers(ctx, room)).Joined[bob.UserID]; !ok {
					t.Fatalf("v%s: a.test does not list bob", version)
				}
			}
			// A room restricted to a room a.test does not know: it cannot tell.
			room := restricted("10", "!elsewhere:c.test")
			_, err := bob.JoinRoom(ctx, string(room), &mautrix.ReqJoinRoom{Via: []string{"a.test"}})
			wantErr(t, err, http.StatusForbidden, "M_UNABLE_TO_AUTHORISE_JOIN")
			if _, err := b.DB.GetRoom(ctx, string(room)); err == nil {
				t.Fatal("a refused join left the room on b.test")
			}

			// make_join's codes as a remote server sees them (eve of
			// remote.test is in the space; mallory is not).
			remote := newFakeRemote(t, n, a, "remote.test")
			remote.join(t, a, space, "eve")
			makeJoin := func(room id.RoomID, user id.UserID) error {
				_, _, err := remote.client.MakeFullRequest(ctx, mfed.RequestParams{ServerName: "a.test", Method: "GET",
					Path: mfed.URLPath{"v1", "make_join", room, user}, Query: url.Values{"ver": {"10"}}, Authenticate: true})
				return err
			}
			if err := makeJoin(restricted("10", space), "@eve:remote.test"); err != nil {
				t.Fatalf("make_join of a member of the space: %v", err)
			}
			assertMatrixErr(t, makeJoin(restricted("10", space), "@mallory:remote.test"), 403, "M_FORBIDDEN")
			assertMatrixErr(t, makeJoin(room, "@eve:remote.test"), 400, "M_UNABLE_TO_AUTHORISE_JOIN")
			// No member of a.test may invite: another resident might grant it.
			noGrant := restricted("10", space, map[string]any{"power_level_content_override": map[string]any{
				"invite": 60, "events": map[string]any{}, "users": map[string]any{string(alice.UserID): 50}}})
			assertMatrixErr(t, makeJoin(noGrant, "@eve:remote.test"), 400, "M_UNABLE_TO_GRANT_JOIN")
			// An allowed room a.test has left: its copy says eve is joined,
			// but it stopped following the room, so it cannot tell.
			left := create(map[string]any{"preset": "public_chat"})
			remote.join(t, a, left, "eve")
			restrictedToLeft := restricted("10", left)
			if _, err := alice.LeaveRoom(ctx, left); err != nil {
				t.Fatal(err)
			}
			assertMatrixErr(t, makeJoin(restrictedToLeft, "@eve:remote.test"), 400, "M_UNABLE_TO_AUTHORISE_JOIN")
		})
	}
}

// currentMember is the PDU of user's member event in srv's current state of room.
func currentMember(t *testing.T, srv *testserver.Server, room id.RoomID, user id.UserID) []byte {
	t.Helper()
	for _, e := range must(srv.DB.CurrentStateEvents(ctxT(t), string(room))) {
		if e.Type == "m.room.member" && *e.StateKey == string(user) {
			return e.JSON
		}
	}
	t.Fatalf("%s has no member event of %s in %s", srv.Config.ServerName, user, room)
	return nil
}

// TestFederationRestrictedJoinThroughResident: b.test is in a.test's room R,
// restricted to the space S, but no member of b.test may invite (carol, at
// level 0). dave of b.test, in S, joins R: b.test cannot authorise it
// locally, so it joins through a.test (make_join/send_join though it has the
// room), which names alice in join_authorised_via_users_server and co-signs;
// both servers then have dave joined. erin, in no allowed room, is refused.
func TestFederationRestrictedJoinThroughResident(t *testing.T) {
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) {
			n := newFedNet(t, "a.test", "b.test")
			a := n.start(t, backend, "a.test")
			b := n.start(t, backend, "b.test")
			ctx := ctxT(t)
			alice := a.Register(t, "alice")
			carol, dave, erin := b.Register(t, "carol"), b.Register(t, "dave"), b.Register(t, "erin")
			create := func(body map[string]any) id.RoomID {
				t.Helper()
				r := clientCall(t, alice, "POST", "/_matrix/client/v3/createRoom", body)
				if r.Status != 200 {
					t.Fatalf("createRoom: %d %s", r.Status, r.Raw)
				}
				return id.RoomID(r.Body["room_id"].(string))
			}
			space := create(map[string]any{"preset": "public_chat"})
			room := create(map[string]any{"preset": "public_chat", "room_version": "10", "initial_state": []any{map[string]any{
				"type": "m.room.join_rules", "state_key": "", "content": map[string]any{"join_rule": "restricted",
					"allow": []any{map[string]any{"type": "m.room_membership", "room_id": space, "via": []string{"a.test"}}}}}}})
			if _, err := alice.InviteUser(ctx, room, &mautrix.ReqInviteUser{UserID: carol.UserID}); err != nil {
				t.Fatalf("inviting carol: %v", err)
			}
			if _, err := carol.JoinRoom(ctx, string(room), &mautrix.ReqJoinRoom{Via: []string{"a.test"}}); err != nil {
				t.Fatalf("carol joins: %v", err)
			}
			if _, err := dave.JoinRoom(ctx, string(space), &mautrix.ReqJoinRoom{Via: []string{"a.test"}}); err != nil {
				t.Fatalf("dave joins the space: %v", err)
			}
			_, err := erin.JoinRoom(ctx, string(room), nil)
			wantErr(t, err, http.StatusForbidden, "M_FORBIDDEN")
			if _, err := dave.JoinRoom(ctx, string(room), nil); err != nil {
				t.Fatalf("dave joins the restricted room: %v", err)
			}
			for _, srv := range []*testserver.Server{a, b} {
				ev := currentMember(t, srv, room, dave.UserID)
				if gjson.GetBytes(ev, "content.membership").Str != "join" ||
					gjson.GetBytes(ev, "content.join_authorised_via_users_server").Str != string(alice.UserID) ||
					!gjson.GetBytes(ev, "signatures.a\\.test").Exists() {
					t.Fatalf("%s's copy of dave's join: %s", srv.Config.ServerName, ev)
				}
			}
		})
	}
}
