package tests

import (
	"net/url"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

// Content a client sends must not claim what only the server may vouch for:
// this server signs every local event, so whatever the auth rules accept on
// the strength of a signature (join_authorised_via_users_server) is only as
// good as the path that built the event (issue 8, item 1).

func memberPath(room id.RoomID, user id.UserID) string {
	return "/_matrix/client/v3/rooms/" + url.PathEscape(string(room)) + "/state/m.room.member/" + url.PathEscape(string(user))
}

func messagesStatus(t testing.TB, c *mautrix.Client, room id.RoomID) rawResp {
	return clientCall(t, c, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(string(room))+"/messages?dir=b&limit=10", nil)
}

// memberContent reads a user's current m.room.member content in room, as seen by c.
func memberContent(t testing.TB, c *mautrix.Client, room id.RoomID, user id.UserID) rawResp {
	return clientCall(t, c, "GET", memberPath(room, user), nil)
}

// restrictedRoom creates, as owner, a room whose join rule lets in the members of allowed.
func restrictedRoom(t testing.TB, owner *mautrix.Client, allowed id.RoomID) id.RoomID {
	allow := []any{map[string]any{"type": "m.room_membership", "room_id": string(allowed)}}
	return createRoom(t, owner, &mautrix.ReqCreateRoom{Preset: "private_chat", InitialState: []*event.Event{{
		Type: event.StateJoinRules, StateKey: new(string), Content: event.Content{Raw: map[string]any{"join_rule": "restricted", "allow": allow}},
	}}})
}

// TestRestrictedJoinCannotBeForged: an outsider's own member event naming the
// owner as authoriser is refused and the history stays closed; members of the
// allowed room join through /join or a member state PUT, and the authoriser in
// their join is the one the server chose.
func TestRestrictedJoinCannotBeForged(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		owner, bob, carol, dave := srv.Register(t, "owner"), srv.Register(t, "bob"), srv.Register(t, "carol"), srv.Register(t, "dave")
		allowed := createRoom(t, owner, &mautrix.ReqCreateRoom{Preset: "public_chat"}, bob, dave)
		room := restrictedRoom(t, owner, allowed)
		sendText(t, owner, room, "members only")

		for _, via := range []id.UserID{owner.UserID, bob.UserID, id.UserID("@nobody:" + owner.UserID.Homeserver())} {
			r := clientCall(t, carol, "PUT", memberPath(room, carol.UserID), map[string]any{
				"membership": "join", "join_authorised_via_users_server": via,
			})
			if r.Status != 403 || r.errcode() != "M_FORBIDDEN" {
				t.Errorf("outsider's join naming %s as authoriser: %d %s, want 403 M_FORBIDDEN", via, r.Status, r.Raw)
			}
		}
		if r := messagesStatus(t, carol, room); r.Status != 403 {
			t.Errorf("outsider reads /messages: %d %s, want 403", r.Status, r.Raw)
		}
		if r := memberContent(t, owner, room, carol.UserID); r.Status != 404 {
			t.Errorf("outsider has a member event: %d %s", r.Status, r.Raw)
		}

		// Bob, in the allowed room, joins through /join: the server names the authoriser.
		joinRoom(t, bob, room)
		if r := memberContent(t, owner, room, bob.UserID); r.Body["join_authorised_via_users_server"] != string(owner.UserID) {
			t.Errorf("bob's join content %s: want join_authorised_via_users_server %s", r.Raw, owner.UserID)
		}
		if r := messagesStatus(t, bob, room); r.Status != 200 {
			t.Errorf("bob reads /messages: %d %s", r.Status, r.Raw)
		}

		// Dave, also allowed, joins by a state PUT naming someone who cannot authorise:
		// the claim is dropped and the server's choice stands.
		r := clientCall(t, dave, "PUT", memberPath(room, dave.UserID), map[string]any{
			"membership": "join", "join_authorised_via_users_server": "@nobody:" + owner.UserID.Homeserver(), "displayname": "Dave here",
		})
		if r.Status != 200 {
			t.Fatalf("allowed user's state join: %d %s", r.Status, r.Raw)
		}
		got := memberContent(t, owner, room, dave.UserID)
		if got.Body["join_authorised_via_users_server"] != string(owner.UserID) || got.Body["displayname"] != "Dave here" {
			t.Errorf("dave's join content %s: want the server's authoriser and his per-room name", got.Raw)
		}

		// A joined member's profile change that echoes the key keeps its content
		// but not the claim (clients copy the whole member event; Synapse strips it too).
		r = clientCall(t, bob, "PUT", memberPath(room, bob.UserID), map[string]any{
			"membership": "join", "join_authorised_via_users_server": string(owner.UserID), "displayname": "Bob in X",
		})
		if r.Status != 200 {
			t.Fatalf("profile change: %d %s", r.Status, r.Raw)
		}
		got = memberContent(t, owner, room, bob.UserID)
		if _, has := got.Body["join_authorised_via_users_server"]; has || got.Body["displayname"] != "Bob in X" {
			t.Errorf("bob's member content after a profile change %s: want his name, no authoriser", got.Raw)
		}
	})
}

// TestMemberStatePutFollowsMembershipRules: a member state PUT is the
// membership endpoint it stands for, with the same checks; state a client may
// not set, and server-vouched content, is refused.
func TestMemberStatePutFollowsMembershipRules(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		owner, bob, carol := srv.Register(t, "owner"), srv.Register(t, "bob"), srv.Register(t, "carol")
		room := createRoom(t, owner, &mautrix.ReqCreateRoom{Preset: "private_chat", RoomVersion: "11"})
		put := func(c *mautrix.Client, target id.UserID, content map[string]any) rawResp {
			return clientCall(t, c, "PUT", memberPath(room, target), content)
		}
		want := func(what string, r rawResp, status int, errcode string) {
			t.Helper()
			if r.Status != status || (errcode != "" && r.errcode() != errcode) {
				t.Errorf("%s: %d %s, want %d %s", what, r.Status, r.Raw, status, errcode)
			}
		}

		// Joining an invite-only room without an invite.
		want("join into an invite-only room", put(carol, carol.UserID, map[string]any{"membership": "join"}), 403, "M_FORBIDDEN")
		// Inviting a user of another server is refused as /invite refuses it.
		want("invite of a remote user", put(owner, "@someone:elsewhere.example", map[string]any{"membership": "invite"}), 403, "M_FORBIDDEN")
		// A third-party invite block the server never checked.
		want("invite with a third_party_invite block", put(owner, bob.UserID, map[string]any{"membership": "invite",
			"third_party_invite": map[string]any{"display_name": "bob", "signed": map[string]any{"mxid": string(bob.UserID), "token": "abc", "signatures": map[string]any{}}}}), 403, "M_FORBIDDEN")
		// Malformed member events.
		want("unknown membership", put(owner, bob.UserID, map[string]any{"membership": "friend"}), 400, "M_BAD_JSON")
		want("membership not a string", put(owner, bob.UserID, map[string]any{"membership": 1}), 400, "M_BAD_JSON")
		want("state key not a user ID", put(owner, "not-a-user", map[string]any{"membership": "leave"}), 400, "M_INVALID_PARAM")
		// Joining on behalf of someone else.
		want("join for another user", put(owner, bob.UserID, map[string]any{"membership": "join"}), 403, "M_FORBIDDEN")

		// An invite by state PUT is an invite: the invitee sees the room's stripped state.
		want("invite by state", put(owner, bob.UserID, map[string]any{"membership": "invite", "reason": "come", "is_direct": true}), 200, "")
		inv := syncUntil(t, bob, "", "", func(r *mautrix.RespSync) bool { _, ok := r.Rooms.Invite[room]; return ok })
		hasCreate := false
		for _, e := range inv.Rooms.Invite[room].State.Events {
			hasCreate = hasCreate || e.Type == event.StateCreate
		}
		if !hasCreate {
			t.Errorf("invite sent by state PUT carries no stripped room state")
		}
		if got := memberContent(t, owner, room, bob.UserID); got.Body["reason"] != "come" || got.Body["is_direct"] != true {
			t.Errorf("invite content %s: want the reason and is_direct kept", got.Raw)
		}
		want("join after the invite", put(bob, bob.UserID, map[string]any{"membership": "join"}), 200, "")

		// Sending the same member event again changes nothing.
		same := map[string]any{"membership": "join", "displayname": "B"}
		first, again := put(bob, bob.UserID, same), put(bob, bob.UserID, same)
		if first.Status != 200 || again.Status != 200 || first.Body["event_id"] != again.Body["event_id"] {
			t.Errorf("repeated member event: %s then %s, want the same event", first.Raw, again.Raw)
		}

		// Kick by state (owner outranks bob), then leave for someone not in the room.
		want("kick by state", put(owner, bob.UserID, map[string]any{"membership": "leave", "reason": "bye"}), 200, "")
		want("kick of someone not in the room", put(owner, carol.UserID, map[string]any{"membership": "leave"}), 403, "M_FORBIDDEN")
		// Ban and unban by state.
		want("ban by state", put(owner, carol.UserID, map[string]any{"membership": "ban"}), 200, "")
		want("unban by state", put(owner, carol.UserID, map[string]any{"membership": "leave"}), 200, "")
		if got := memberContent(t, owner, room, carol.UserID); got.Body["membership"] != "leave" {
			t.Errorf("after unban: %s", got.Raw)
		}
	})
}

// TestRedactionIsNotState: in room versions whose redactions name their target
// in content (v11+), a state event of type m.room.redaction would redact
// without the power check /redact makes.
func TestRedactionIsNotState(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		owner, bob := srv.Register(t, "owner"), srv.Register(t, "bob")
		room := createRoom(t, owner, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: "11"}, bob)
		target := sendText(t, owner, room, "the owner's words")
		// Bob may send state of any type at state_default? Let him: lower it.
		pl := clientCall(t, owner, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(string(room))+"/state/m.room.power_levels/", nil).Body
		pl["state_default"] = 0
		if r := clientCall(t, owner, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(string(room))+"/state/m.room.power_levels/", pl); r.Status != 200 {
			t.Fatalf("lowering state_default: %d %s", r.Status, r.Raw)
		}
		r := clientCall(t, bob, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(string(room))+"/state/m.room.redaction/x", map[string]any{"redacts": string(target)})
		if r.Status != 400 {
			t.Errorf("state m.room.redaction: %d %s, want 400", r.Status, r.Raw)
		}
		ev := clientCall(t, owner, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(string(room))+"/event/"+url.PathEscape(string(target)), nil)
		if c, _ := ev.Body["content"].(map[string]any); c["body"] != "the owner's words" {
			t.Errorf("the owner's message after bob's state redaction: %s", ev.Raw)
		}
		// /redact still refuses him.
		if r := clientCall(t, bob, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(string(room))+"/redact/"+url.PathEscape(string(target))+"/t1", map[string]any{}); r.Status != 403 {
			t.Errorf("bob redacting the owner's message: %d %s", r.Status, r.Raw)
		}
	})
}

// TestCreateRoomInitialStateLimits: initial_state cannot carry what the
// create request itself builds (the create event, memberships) nor a redaction.
func TestCreateRoomInitialStateLimits(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		owner := srv.Register(t, "owner")
		for _, st := range []map[string]any{
			{"type": "m.room.create", "state_key": "", "content": map[string]any{"room_version": "1"}},
			{"type": "m.room.member", "state_key": string(owner.UserID), "content": map[string]any{"membership": "join", "join_authorised_via_users_server": string(owner.UserID)}},
			{"type": "m.room.member", "state_key": "@someone:elsewhere.example", "content": map[string]any{"membership": "invite"}},
			{"type": "m.room.redaction", "state_key": "", "content": map[string]any{"redacts": "$x"}},
		} {
			r := clientCall(t, owner, "POST", "/_matrix/client/v3/createRoom", map[string]any{"initial_state": []any{st}})
			if r.Status != 400 {
				t.Errorf("createRoom with initial_state %v: %d %s, want 400", st, r.Status, r.Raw)
			}
		}
	})
}
