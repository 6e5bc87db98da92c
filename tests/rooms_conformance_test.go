package tests

import (
	"context"
	"encoding/json"
	"net/url"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

// Room behaviour Complement's tests/csapi checks (issue 9).

// stateContent returns a state event's content as raw JSON, as c sees it.
func stateContent(t *testing.T, c *mautrix.Client, room id.RoomID, evType, stateKey string) map[string]any {
	t.Helper()
	r := clientCall(t, c, "GET", roomPath(room, "/state/"+evType+"/"+url.PathEscape(stateKey)), nil)
	if r.Status != 200 {
		t.Fatalf("GET state %s/%s = %d %s", evType, stateKey, r.Status, r.Raw)
	}
	return r.Body
}

// TestCreateRoomRichTopic: createRoom's topic is written both as the plain
// topic and as the spec's (v1.15) rich form, m.topic: {m.text: [{body,
// mimetype}]}, also over a topic set in initial_state; a topic set only in
// initial_state is kept as the client gave it.
func TestCreateRoomRichTopic(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice")
		create := func(body map[string]any) id.RoomID {
			r := clientCall(t, alice, "POST", "/_matrix/client/v3/createRoom", body)
			room, _ := r.Body["room_id"].(string)
			if r.Status != 200 || room == "" {
				t.Fatalf("createRoom = %d %s", r.Status, r.Raw)
			}
			return id.RoomID(room)
		}
		wantRich := func(name string, c map[string]any) {
			t.Helper()
			rich, _ := c["m.topic"].(map[string]any)
			texts, _ := rich["m.text"].([]any)
			if c["topic"] != "Test Room" || len(texts) != 1 {
				t.Fatalf("%s: topic content %v", name, c)
			}
			text, _ := texts[0].(map[string]any)
			if text["body"] != "Test Room" || text["mimetype"] != "text/plain" {
				t.Fatalf("%s: m.topic %v", name, c)
			}
		}
		plain := create(map[string]any{"topic": "Test Room"})
		wantRich("topic", stateContent(t, alice, plain, "m.room.topic", ""))

		overwritten := create(map[string]any{"topic": "Test Room", "initial_state": []any{
			map[string]any{"type": "m.room.topic", "state_key": "", "content": map[string]any{"topic": "Shenanigans"}},
		}})
		wantRich("topic over initial_state", stateContent(t, alice, overwritten, "m.room.topic", ""))

		initial := create(map[string]any{"initial_state": []any{
			map[string]any{"type": "m.room.topic", "state_key": "", "content": map[string]any{"topic": "Test Room"}},
		}})
		if c := stateContent(t, alice, initial, "m.room.topic", ""); c["topic"] != "Test Room" || c["m.topic"] != nil {
			t.Fatalf("initial_state topic: %v", c)
		}
	})
}

// TestDeleteAliasUpdatesCanonical: deleting an alias removes it from the
// room's m.room.canonical_alias (alias and alt_aliases, other keys kept), so
// the room stops advertising it; an alias creator without the power to change
// the event still deletes the alias.
func TestDeleteAliasUpdatesCanonical(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"}, bob)
		for _, a := range []id.RoomAlias{"#main:localhost", "#alt1:localhost", "#alt2:localhost"} {
			must(alice.CreateAlias(ctx, a, room))
		}
		must(bob.CreateAlias(ctx, "#bobs:localhost", room))
		must(alice.SendStateEvent(ctx, room, event.StateCanonicalAlias, "", map[string]any{
			"alias": "#main:localhost", "alt_aliases": []string{"#alt1:localhost", "#alt2:localhost", "#bobs:localhost"}, "x": 1,
		}))
		deleteAlias := func(c *mautrix.Client, alias string) {
			t.Helper()
			if r := clientCall(t, c, "DELETE", "/_matrix/client/v3/directory/room/"+url.PathEscape(alias), nil); r.Status != 200 {
				t.Fatalf("delete %s = %d %s", alias, r.Status, r.Raw)
			}
		}
		deleteAlias(alice, "#main:localhost")
		c := stateContent(t, alice, room, "m.room.canonical_alias", "")
		if _, ok := c["alias"]; ok || len(c["alt_aliases"].([]any)) != 3 || c["x"] != float64(1) {
			t.Fatalf("after deleting the main alias: %v", c)
		}
		deleteAlias(alice, "#alt1:localhost")
		c = stateContent(t, alice, room, "m.room.canonical_alias", "")
		if alt, _ := json.Marshal(c["alt_aliases"]); string(alt) != `["#alt2:localhost","#bobs:localhost"]` {
			t.Fatalf("after deleting an alt alias: %v", c)
		}
		// bob (power 0) created #bobs: he may delete it, the event stays.
		deleteAlias(bob, "#bobs:localhost")
		if _, err := alice.ResolveAlias(ctx, "#bobs:localhost"); err == nil {
			t.Fatal("bob's alias survived its deletion")
		}
		deleteAlias(alice, "#alt2:localhost")
		c = stateContent(t, alice, room, "m.room.canonical_alias", "")
		if alt, _ := json.Marshal(c["alt_aliases"]); string(alt) != `["#bobs:localhost"]` {
			t.Fatalf("after deleting the last alt alias alice made: %v", c)
		}

		// The Complement case: the only alias, canonical, deleted: {}.
		other := createRoom(t, alice, nil)
		must(alice.CreateAlias(ctx, "#only:localhost", other))
		must(alice.SendStateEvent(ctx, other, event.StateCanonicalAlias, "", map[string]any{"alias": "#only:localhost"}))
		deleteAlias(alice, "#only:localhost")
		if c := stateContent(t, alice, other, "m.room.canonical_alias", ""); len(c) != 0 {
			t.Fatalf("after deleting the only alias: %v", c)
		}
	})
}

// TestJoinBodyContent: the keys of a /join body go into the member event
// (reason and any other), by room ID and by alias; membership and the keys
// only the server may set are not the client's to choose.
func TestJoinBodyContent(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		alice, bob, carol := srv.Register(t, "alice"), srv.Register(t, "bob"), srv.Register(t, "carol")
		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomAliasName: "custom"})
		r := clientCall(t, bob, "POST", "/_matrix/client/v3/join/"+url.PathEscape(string(room)), map[string]any{
			"foo": "bar", "reason": "hello", "membership": "ban", "join_authorised_via_users_server": string(alice.UserID),
			"third_party_signed": map[string]any{"x": 1},
		})
		if r.Status != 200 || r.Body["room_id"] != string(room) {
			t.Fatalf("join = %d %s", r.Status, r.Raw)
		}
		c := stateContent(t, alice, room, "m.room.member", string(bob.UserID))
		if c["membership"] != "join" || c["foo"] != "bar" || c["reason"] != "hello" || len(c) != 4 || c["displayname"] != "bob" {
			t.Fatalf("bob's member content: %v", c)
		}
		r = clientCall(t, carol, "POST", "/_matrix/client/v3/join/"+url.PathEscape("#custom:localhost"), map[string]any{"foo": "baz"})
		if r.Status != 200 {
			t.Fatalf("join by alias = %d %s", r.Status, r.Raw)
		}
		if c := stateContent(t, alice, room, "m.room.member", string(carol.UserID)); c["foo"] != "baz" || c["membership"] != "join" {
			t.Fatalf("carol's member content: %v", c)
		}

		// Bad input changes nothing.
		dave := srv.Register(t, "dave")
		for _, body := range []any{
			map[string]any{"reason": 5},
			map[string]any{"third_party_invite": map[string]any{}},
			`{"n": 1.5}`,
			`{"n": 9007199254740993}`,
		} {
			r := clientCall(t, dave, "POST", "/_matrix/client/v3/join/"+url.PathEscape(string(room)), body)
			if r.Status/100 != 4 {
				t.Errorf("join with %v = %d %s", body, r.Status, r.Raw)
			}
		}
		if m := must(alice.JoinedMembers(ctx, room)); len(m.Joined) != 3 {
			t.Fatalf("refused joins joined: %v", m.Joined)
		}
	})
}

// TestJoinedMembersNullProfile: /joined_members names display_name and
// avatar_url for every member, null when unset (registration sets a display
// name; no one has an avatar here).
func TestJoinedMembersNullProfile(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		must(struct{}{}, bob.SetDisplayName(ctx, "Bob"))
		room := shareRoom(t, alice, bob)
		r := clientCall(t, alice, "GET", roomPath(room, "/joined_members"), nil)
		var body struct {
			Joined map[string]map[string]json.RawMessage `json:"joined"`
		}
		if r.Status != 200 || json.Unmarshal([]byte(r.Raw), &body) != nil {
			t.Fatalf("joined_members = %d %s", r.Status, r.Raw)
		}
		a, b := body.Joined[string(alice.UserID)], body.Joined[string(bob.UserID)]
		if string(a["display_name"]) != `"alice"` || string(a["avatar_url"]) != "null" ||
			string(b["display_name"]) != `"Bob"` || string(b["avatar_url"]) != "null" {
			t.Fatalf("joined_members: %s", r.Raw)
		}
	})
}

// TestTxnIDScopedToPath: a transaction ID is scoped to a device and an
// endpoint path: the same ID in another room, or for another event type,
// is a new request; in the same room and type it is a retry (whatever the
// content), and the event still carries the client's transaction ID.
func TestTxnIDScopedToPath(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice")
		room1, room2 := createRoom(t, alice, nil), createRoom(t, alice, nil)
		send := func(room id.RoomID, evType, body string) string {
			t.Helper()
			r := clientCall(t, alice, "PUT", roomPath(room, "/send/"+evType+"/abc"), map[string]any{"msgtype": "m.text", "body": body})
			evID, _ := r.Body["event_id"].(string)
			if r.Status != 200 || evID == "" {
				t.Fatalf("send to %s = %d %s", room, r.Status, r.Raw)
			}
			return evID
		}
		first := send(room1, "m.room.message", "one")
		if again := send(room1, "m.room.message", "two"); again != first {
			t.Fatalf("retry in the same room made a new event %s (first %s)", again, first)
		}
		other := send(room2, "m.room.message", "one")
		if other == first {
			t.Fatal("the same txnId in another room returned the first room's event")
		}
		if typed := send(room1, "m.custom", "one"); typed == first {
			t.Fatal("the same txnId for another event type returned the first event")
		}
		ev := clientCall(t, alice, "GET", roomPath(room2, "/event/"+url.PathEscape(other)), nil)
		if unsigned, _ := ev.Body["unsigned"].(map[string]any); unsigned["transaction_id"] != "abc" {
			t.Fatalf("event in room2: %s", ev.Raw)
		}
	})
}
