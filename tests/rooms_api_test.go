package tests

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

// TestRoomBadInput: invalid room IDs, aliases, event types, state keys,
// power levels, oversized events and sending to a room you are not in get
// the spec's error and never a 500.
func TestRoomBadInput(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		roomID := string(must(alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})).RoomID)
		room := "/_matrix/client/v3/rooms/" + url.PathEscape(roomID)
		big := strings.Repeat("x", 70000)
		longKey := strings.Repeat("k", 300)
		cases := []struct {
			name         string
			client       *mautrix.Client
			method, path string
			body         any
			status       int
			code         string
		}{
			{"invalid room id", alice, "PUT", "/_matrix/client/v3/rooms/not-a-room/send/m.room.message/t1", map[string]any{"body": "x"}, 400, "M_INVALID_PARAM"},
			{"unknown room send", alice, "PUT", "/_matrix/client/v3/rooms/!nope:localhost/send/m.room.message/t2", map[string]any{"body": "x"}, 403, "M_FORBIDDEN"},
			{"not in room send", bob, "PUT", room + "/send/m.room.message/t3", map[string]any{"body": "x"}, 403, "M_FORBIDDEN"},
			{"not in room state", bob, "GET", room + "/state", nil, 403, "M_FORBIDDEN"},
			{"not in room messages", bob, "GET", room + "/messages?dir=b", nil, 403, "M_FORBIDDEN"},
			{"event type too long", alice, "PUT", room + "/send/" + strings.Repeat("t", 300) + "/t4", map[string]any{}, 400, "M_INVALID_PARAM"},
			{"state key too long", alice, "PUT", room + "/state/m.custom/" + longKey, map[string]any{}, 400, "M_INVALID_PARAM"},
			{"oversized event", alice, "PUT", room + "/send/m.room.message/t5", map[string]any{"body": big}, 413, "M_TOO_LARGE"},
			{"not json", alice, "PUT", room + "/send/m.room.message/t6", "{nope", 400, "M_NOT_JSON"},
			{"content not object", alice, "PUT", room + "/send/m.room.message/t7", "[1,2]", 400, "M_BAD_JSON"},
			{"power level string", alice, "PUT", room + "/state/m.room.power_levels/", map[string]any{"users": map[string]any{"@alice:localhost": "high"}}, 400, "M_BAD_JSON"},
			{"power level bad user", alice, "PUT", room + "/state/m.room.power_levels/", map[string]any{"users": map[string]any{"alice": 100}}, 400, "M_BAD_JSON"},
			{"power level float", alice, "PUT", room + "/state/m.room.power_levels/", map[string]any{"ban": 1.5}, 400, "M_BAD_JSON"},
			{"canonical alias unknown", alice, "PUT", room + "/state/m.room.canonical_alias/", map[string]any{"alias": "#nothere:localhost"}, 400, "M_BAD_ALIAS"},
			{"canonical alias invalid", alice, "PUT", room + "/state/m.room.canonical_alias/", map[string]any{"alias": "nothash"}, 400, "M_INVALID_PARAM"},
			{"invalid alias lookup", alice, "GET", "/_matrix/client/v3/directory/room/" + url.PathEscape("#bad"), nil, 400, "M_INVALID_PARAM"},
			{"unknown alias", alice, "GET", "/_matrix/client/v3/directory/room/" + url.PathEscape("#none:localhost"), nil, 404, "M_NOT_FOUND"},
			{"alias other server", alice, "PUT", "/_matrix/client/v3/directory/room/" + url.PathEscape("#x:elsewhere"), map[string]any{"room_id": roomID}, 400, "M_INVALID_PARAM"},
			{"join invalid", alice, "POST", "/_matrix/client/v3/join/" + url.PathEscape("nonsense"), map[string]any{}, 400, "M_INVALID_PARAM"},
			{"join unknown room", alice, "POST", "/_matrix/client/v3/join/" + url.PathEscape("!unknown:localhost"), map[string]any{}, 404, "M_NOT_FOUND"},
			{"invite invalid user", alice, "POST", room + "/invite", map[string]any{"user_id": "bob"}, 400, "M_INVALID_PARAM"},
			{"invite missing user", alice, "POST", room + "/invite", map[string]any{}, 400, "M_MISSING_PARAM"},
			{"unsupported version", alice, "POST", "/_matrix/client/v3/createRoom", map[string]any{"room_version": "99"}, 400, "M_UNSUPPORTED_ROOM_VERSION"},
			{"bad preset", alice, "POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "party"}, 400, "M_BAD_JSON"},
			{"bad invitee", alice, "POST", "/_matrix/client/v3/createRoom", map[string]any{"invite": []string{"nobody"}}, 400, "M_INVALID_PARAM"},
			{"bad alias name", alice, "POST", "/_matrix/client/v3/createRoom", map[string]any{"room_alias_name": "a b:c"}, 400, "M_INVALID_PARAM"},
			{"bad pl override", alice, "POST", "/_matrix/client/v3/createRoom", map[string]any{"power_level_content_override": map[string]any{"kick": "lots"}}, 400, "M_BAD_JSON"},
			{"messages bad dir", alice, "GET", room + "/messages?dir=x", nil, 400, "M_INVALID_PARAM"},
			{"messages bad token", alice, "GET", room + "/messages?dir=b&from=zzz", nil, 400, "M_INVALID_PARAM"},
			{"unknown event", alice, "GET", room + "/event/" + url.PathEscape("$nope"), nil, 404, "M_NOT_FOUND"},
			{"unknown state", alice, "GET", room + "/state/m.room.nothing/", nil, 404, "M_NOT_FOUND"},
			// (An unknown event is redactable by a moderator: TestRedactUnknownEvent.)
			{"redact invalid event ID", alice, "PUT", room + "/redact/" + url.PathEscape("nope") + "/r1", map[string]any{}, 400, "M_INVALID_PARAM"},
			{"forget while joined", alice, "POST", room + "/forget", map[string]any{}, 400, "M_UNKNOWN"},
			{"timestamp bad", alice, "GET", "/_matrix/client/v1/rooms/" + url.PathEscape(roomID) + "/timestamp_to_event?ts=x&dir=f", nil, 400, "M_INVALID_PARAM"},
			{"other's tags", alice, "GET", "/_matrix/client/v3/user/" + url.PathEscape("@bob:localhost") + "/rooms/" + url.PathEscape(roomID) + "/tags", nil, 403, "M_FORBIDDEN"},
		}
		for _, c := range cases {
			r := clientCall(t, c.client, c.method, c.path, c.body)
			if r.Status != c.status || r.errcode() != c.code {
				t.Errorf("%s: got %d %s, want %d %s", c.name, r.Status, r.Raw, c.status, c.code)
			}
		}
		// None of the refused requests changed the room.
		msgs := must(alice.Messages(ctx, id.RoomID(roomID), "", "", mautrix.DirectionBackward, nil, 100))
		for _, e := range msgs.Chunk {
			if e.Type == event.EventMessage || e.Type.Type == "m.custom" {
				t.Errorf("refused request left event %s %s", e.Type.Type, e.ID)
			}
		}
	})
}

// TestRoomUpgrade: an upgraded room links both ways and carries state and aliases.
func TestRoomUpgrade(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		old := must(alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Old", RoomAliasName: "upgrademe", RoomVersion: "10"})).RoomID
		must(bob.JoinRoomByID(ctx, old))
		upgrade := "/_matrix/client/v3/rooms/" + url.PathEscape(string(old)) + "/upgrade"
		if r := clientCall(t, bob, "POST", upgrade, map[string]any{"new_version": "12"}); r.Status != 403 || r.errcode() != "M_FORBIDDEN" {
			t.Fatalf("upgrade by unprivileged user: %d %s", r.Status, r.Raw)
		}
		r := clientCall(t, alice, "POST", upgrade, map[string]any{"new_version": "12"})
		if r.Status != 200 {
			t.Fatalf("upgrade: %d %s", r.Status, r.Raw)
		}
		newRoom := id.RoomID(r.Body["replacement_room"].(string))
		var tomb event.TombstoneEventContent
		if err := alice.StateEvent(ctx, old, event.StateTombstone, "", &tomb); err != nil {
			t.Fatal(err)
		}
		if tomb.ReplacementRoom != newRoom {
			t.Fatalf("tombstone points to %s, want %s", tomb.ReplacementRoom, newRoom)
		}
		var create event.CreateEventContent
		if err := alice.StateEvent(ctx, newRoom, event.StateCreate, "", &create); err != nil {
			t.Fatal(err)
		}
		if create.Predecessor == nil || create.Predecessor.RoomID != old || create.RoomVersion != "12" {
			t.Fatalf("new room create: %+v", create)
		}
		var name event.RoomNameEventContent
		if err := alice.StateEvent(ctx, newRoom, event.StateRoomName, "", &name); err != nil || name.Name != "Old" {
			t.Fatalf("name not carried: %+v %v", name, err)
		}
		alias := must(alice.ResolveAlias(ctx, "#upgrademe:localhost"))
		if alias.RoomID != newRoom {
			t.Fatalf("alias points to %s, want %s", alias.RoomID, newRoom)
		}
		// bob can follow (public join rule carried) but can no longer talk in the old room.
		must(bob.JoinRoomByID(ctx, newRoom))
		_, err := bob.SendText(ctx, old, "old room")
		wantErrCode(t, err, "M_FORBIDDEN")
		sendText(t, bob, newRoom, "new room")
	})
}

// TestRoomDirectoryAndExtras covers aliases, the public room directory,
// relations, threads, timestamp_to_event, the room summary, hierarchy and reports.
func TestRoomDirectoryAndExtras(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		roomID := must(alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Visibility: "public", Name: "Lobby", Topic: "chat"})).RoomID
		must(alice.CreateAlias(ctx, "#lobby:localhost", roomID))
		_, err := alice.CreateAlias(ctx, "#lobby:localhost", roomID)
		if err == nil {
			t.Fatal("duplicate alias accepted")
		}
		must(bob.JoinRoom(ctx, "#lobby:localhost", nil))
		aliases := must(alice.GetAliases(ctx, roomID))
		if len(aliases.Aliases) != 1 {
			t.Fatalf("aliases = %v", aliases.Aliases)
		}
		must(alice.SendStateEvent(ctx, roomID, event.StateCanonicalAlias, "", map[string]any{"alias": "#lobby:localhost"}))
		pub := must(bob.PublicRooms(ctx, &mautrix.ReqPublicRooms{}))
		if len(pub.Chunk) != 1 || pub.Chunk[0].Name != "Lobby" || pub.Chunk[0].NumJoinedMembers != 2 || pub.Chunk[0].CanonicalAlias != "#lobby:localhost" {
			t.Fatalf("public rooms = %+v", pub.Chunk)
		}
		r := clientCall(t, bob, "POST", "/_matrix/client/v3/publicRooms", map[string]any{"filter": map[string]any{"generic_search_term": "nomatch"}})
		if r.Status != 200 || len(r.Body["chunk"].([]any)) != 0 {
			t.Fatalf("filter ignored: %d %s", r.Status, r.Raw)
		}
		r = clientCall(t, bob, "POST", "/_matrix/client/v3/publicRooms", map[string]any{"filter": map[string]any{"generic_search_term": "lob"}})
		if r.Status != 200 || len(r.Body["chunk"].([]any)) != 1 {
			t.Fatalf("filter: %d %s", r.Status, r.Raw)
		}
		// Thread and reactions.
		root := sendText(t, alice, roomID, "root")
		reply := must(bob.SendMessageEvent(ctx, roomID, event.EventMessage, map[string]any{"msgtype": "m.text", "body": "in thread",
			"m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": root}})).EventID
		must(bob.SendMessageEvent(ctx, roomID, event.EventReaction, map[string]any{
			"m.relates_to": map[string]any{"rel_type": "m.annotation", "event_id": root, "key": "👍"}}))
		rel := must(alice.GetRelations(ctx, roomID, root, &mautrix.ReqGetRelations{RelationType: "m.thread"}))
		if len(rel.Chunk) != 1 || rel.Chunk[0].ID != reply {
			t.Fatalf("thread relations = %+v", rel.Chunk)
		}
		all := must(alice.GetRelations(ctx, roomID, root, &mautrix.ReqGetRelations{}))
		if len(all.Chunk) != 2 {
			t.Fatalf("relations = %d, want 2", len(all.Chunk))
		}
		r = clientCall(t, alice, "GET", "/_matrix/client/v1/rooms/"+url.PathEscape(string(roomID))+"/threads", nil)
		if r.Status != 200 || len(r.Body["chunk"].([]any)) != 1 {
			t.Fatalf("threads: %d %s", r.Status, r.Raw)
		}
		ts := must(alice.TimestampToEvent(ctx, roomID, time.Now().Add(time.Hour), mautrix.DirectionBackward))
		if ts.EventID == "" {
			t.Fatal("timestamp_to_event found nothing")
		}
		r = clientCall(t, bob, "GET", "/_matrix/client/v1/room_summary/"+url.PathEscape("#lobby:localhost"), nil)
		if r.Status != 200 || r.Body["room_id"] != string(roomID) || r.Body["membership"] != "join" {
			t.Fatalf("summary: %d %s", r.Status, r.Raw)
		}
		if r = clientCall(t, bob, "GET", "/_matrix/client/unstable/im.nheko.summary/rooms/"+url.PathEscape(string(roomID))+"/summary", nil); r.Status != 200 {
			t.Fatalf("unstable summary: %d %s", r.Status, r.Raw)
		}
		// A space with the lobby as child.
		space := must(alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", CreationContent: map[string]any{"type": "m.space"}})).RoomID
		must(alice.SendStateEvent(ctx, space, event.StateSpaceChild, string(roomID), map[string]any{"via": []string{"localhost"}}))
		h := must(alice.Hierarchy(ctx, space, &mautrix.ReqHierarchy{}))
		if len(h.Rooms) != 2 || h.Rooms[1].RoomID != roomID {
			t.Fatalf("hierarchy = %+v", h.Rooms)
		}
		if r = clientCall(t, bob, "POST", "/_matrix/client/v3/rooms/"+url.PathEscape(string(roomID))+"/report/"+url.PathEscape(string(root)), map[string]any{"reason": "spam"}); r.Status != 200 {
			t.Fatalf("report: %d %s", r.Status, r.Raw)
		}
		// Context around the root.
		c := must(alice.Context(ctx, roomID, root, nil, 4))
		if c.Event == nil || c.Event.ID != root || len(c.EventsAfter) == 0 {
			t.Fatalf("context = %+v", c)
		}
		// Directory visibility and alias deletion.
		if r = clientCall(t, alice, "PUT", "/_matrix/client/v3/directory/list/room/"+url.PathEscape(string(roomID)), map[string]any{"visibility": "private"}); r.Status != 200 {
			t.Fatalf("set visibility: %d %s", r.Status, r.Raw)
		}
		pub = must(bob.PublicRooms(ctx, &mautrix.ReqPublicRooms{}))
		for _, r := range pub.Chunk {
			if r.RoomID == roomID {
				t.Fatal("unpublished room still listed")
			}
		}
		_, err = bob.DeleteAlias(ctx, "#lobby:localhost")
		wantErrCode(t, err, "M_FORBIDDEN")
		must(alice.DeleteAlias(ctx, "#lobby:localhost"))
		// Tags are room account data.
		if err := alice.AddTag(ctx, roomID, "u.work", 0.5); err != nil {
			t.Fatal(err)
		}
		tags := must(alice.GetTags(ctx, roomID))
		if _, ok := tags.Tags["u.work"]; !ok || len(tags.Tags) != 1 {
			t.Fatalf("tags = %+v", tags.Tags)
		}
		if err := alice.RemoveTag(ctx, roomID, "u.work"); err != nil {
			t.Fatal(err)
		}
		if tags = must(alice.GetTags(ctx, roomID)); len(tags.Tags) != 0 {
			t.Fatalf("tag not removed: %+v", tags.Tags)
		}
		// A profile change updates the member event.
		if err := bob.SetDisplayName(ctx, "Bobby"); err != nil {
			t.Fatal(err)
		}
		var member event.MemberEventContent
		if err := alice.StateEvent(ctx, roomID, event.StateMember, bob.UserID.String(), &member); err != nil || member.Displayname != "Bobby" {
			t.Fatalf("member event after profile change: %+v %v", member, err)
		}
		// Members with filters.
		members := must(alice.Members(ctx, roomID, mautrix.ReqMembers{Membership: event.MembershipJoin}))
		if len(members.Chunk) != 2 {
			t.Fatalf("members = %d", len(members.Chunk))
		}
	})
}
