package tests

import (
	"encoding/json"
	"testing"

	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

// Room version 12 as Complement's v12_test.go checks it (MSC4289 creators,
// MSC4291 create event, MSC4311 stripped create event).

// TestV12CreateRoomCreators: a v12 room's default power levels list no user
// and put m.room.tombstone at 150 (100 before v12); creators listed in
// power levels users, through power_level_content_override, initial_state
// or a later PUT, are refused with 400 and change nothing; trusted_private_chat
// merges invitees into additional_creators without repeats.
func TestV12CreateRoomCreators(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		alice, bob, carol := srv.Register(t, "alice"), srv.Register(t, "bob"), srv.Register(t, "carol")
		create := func(body map[string]any) rawResp {
			return clientCall(t, alice, "POST", "/_matrix/client/v3/createRoom", body)
		}
		mustCreate := func(body map[string]any) id.RoomID {
			t.Helper()
			r := create(body)
			room, _ := r.Body["room_id"].(string)
			if r.Status != 200 || room == "" {
				t.Fatalf("createRoom %v = %d %s", body, r.Status, r.Raw)
			}
			return id.RoomID(room)
		}
		v12 := mustCreate(map[string]any{"room_version": "12"})
		pl := powerLevels(t, alice, v12)
		if users, _ := pl["users"].(map[string]any); len(users) != 0 {
			t.Errorf("v12 users: %v", pl["users"])
		}
		if ev, _ := pl["events"].(map[string]any); ev["m.room.tombstone"] != json.Number("150") {
			t.Errorf("v12 tombstone level: %v", pl["events"])
		}
		v11 := mustCreate(map[string]any{"room_version": "11"})
		if ev, _ := powerLevels(t, alice, v11)["events"].(map[string]any); ev["m.room.tombstone"] != json.Number("100") {
			t.Errorf("v11 tombstone level: %v", ev)
		}

		joinedBefore := len(must(alice.JoinedRooms(t.Context())).JoinedRooms)
		for name, body := range map[string]map[string]any{
			"override lists the creator": {"room_version": "12", "invite": []string{string(bob.UserID)},
				"power_level_content_override": map[string]any{"users": map[string]int{string(alice.UserID): 100}}},
			"override lists an additional creator": {"room_version": "12",
				"creation_content":             map[string]any{"additional_creators": []string{string(carol.UserID)}},
				"power_level_content_override": map[string]any{"users": map[string]int{string(carol.UserID): 50}}},
			"initial_state lists the creator": {"room_version": "12", "initial_state": []any{map[string]any{
				"type": "m.room.power_levels", "state_key": "", "content": map[string]any{"users": map[string]int{string(alice.UserID): 100}}}}},
			"trusted_private_chat invitee in override": {"room_version": "12", "preset": "trusted_private_chat",
				"invite":                       []string{string(bob.UserID)},
				"power_level_content_override": map[string]any{"users": map[string]int{string(bob.UserID): 100}}},
		} {
			if r := create(body); r.Status != 400 {
				t.Errorf("%s: %d %s, want 400", name, r.Status, r.Raw)
			}
		}
		if n := len(must(alice.JoinedRooms(t.Context())).JoinedRooms); n != joinedBefore {
			t.Errorf("refused createRoom calls made rooms: %d -> %d", joinedBefore, n)
		}
		// Listing another user is fine.
		withBob := mustCreate(map[string]any{"room_version": "12", "invite": []string{string(bob.UserID)},
			"power_level_content_override": map[string]any{"users": map[string]int{string(bob.UserID): 100}}})
		if users, _ := powerLevels(t, alice, withBob)["users"].(map[string]any); len(users) != 1 || users[string(bob.UserID)] != json.Number("100") {
			t.Errorf("override users: %v", users)
		}

		// trusted_private_chat: invitees join additional_creators, once.
		trusted := mustCreate(map[string]any{"room_version": "12", "preset": "trusted_private_chat", "is_direct": true,
			"invite":           []string{string(bob.UserID)},
			"creation_content": map[string]any{"additional_creators": []string{string(carol.UserID), string(bob.UserID)}}})
		if c := stateContent(t, alice, trusted, "m.room.create", ""); mustMarshal(c["additional_creators"]) != `["`+string(carol.UserID)+`","`+string(bob.UserID)+`"]` {
			t.Errorf("trusted_private_chat additional_creators: %v", c)
		}

		// A PUT listing a creator is 400, not an auth failure.
		additional := mustCreate(map[string]any{"room_version": "12", "preset": "public_chat",
			"creation_content": map[string]any{"additional_creators": []string{string(bob.UserID)}}})
		for _, u := range []id.UserID{alice.UserID, bob.UserID} {
			r := clientCall(t, alice, "PUT", roomPath(additional, "/state/m.room.power_levels/"), map[string]any{"users": map[string]int{string(u): 100}})
			if r.Status != 400 {
				t.Errorf("PUT power levels listing creator %s: %d %s", u, r.Status, r.Raw)
			}
		}
		if r := clientCall(t, alice, "PUT", roomPath(additional, "/state/m.room.power_levels/"), map[string]any{"users": map[string]int{string(carol.UserID): 100}}); r.Status != 200 {
			t.Errorf("PUT power levels listing a non-creator: %d %s", r.Status, r.Raw)
		}
	})
}

func mustMarshal(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// TestV12CreateEventNotSendable: a client cannot send an m.room.create
// event into an existing room: 400 (MSC4291), in v11 and v12 rooms alike.
func TestV12CreateEventNotSendable(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice")
		for _, v := range []string{"11", "12"} {
			r := clientCall(t, alice, "POST", "/_matrix/client/v3/createRoom", map[string]any{"room_version": v})
			room := id.RoomID(r.Body["room_id"].(string))
			before := stateContent(t, alice, room, "m.room.create", "")
			put := clientCall(t, alice, "PUT", roomPath(room, "/state/m.room.create/"), map[string]any{"room_version": v, "entropy": 100})
			if put.Status != 400 {
				t.Errorf("v%s: PUT m.room.create = %d %s, want 400", v, put.Status, put.Raw)
			}
			if after := stateContent(t, alice, room, "m.room.create", ""); mustMarshal(after) != mustMarshal(before) {
				t.Errorf("v%s: create event changed: %v", v, after)
			}
		}
	})
}

// TestV12UpgradeAdditionalCreators: an upgrade to v12 names the body's
// additional_creators in the new create event and drops them (and the
// upgrading user) from power levels users; other users keep their levels.
// An upgrade to a version without additional creators ignores the field.
func TestV12UpgradeAdditionalCreators(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		alice, bob, carol := srv.Register(t, "alice"), srv.Register(t, "bob"), srv.Register(t, "carol")
		r := clientCall(t, alice, "POST", "/_matrix/client/v3/createRoom", map[string]any{"room_version": "11", "preset": "public_chat"})
		room := id.RoomID(r.Body["room_id"].(string))
		joinRoom(t, bob, room)
		joinRoom(t, carol, room)
		if r := clientCall(t, alice, "PUT", roomPath(room, "/state/m.room.power_levels/"), map[string]any{
			"users": map[string]int{string(alice.UserID): 100, string(bob.UserID): 100, string(carol.UserID): 50}}); r.Status != 200 {
			t.Fatalf("power levels: %d %s", r.Status, r.Raw)
		}
		up := clientCall(t, alice, "POST", roomPath(room, "/upgrade"), map[string]any{"new_version": "12", "additional_creators": []string{string(bob.UserID)}})
		newRoom, _ := up.Body["replacement_room"].(string)
		if up.Status != 200 || newRoom == "" {
			t.Fatalf("upgrade = %d %s", up.Status, up.Raw)
		}
		if c := stateContent(t, alice, id.RoomID(newRoom), "m.room.create", ""); mustMarshal(c["additional_creators"]) != `["`+string(bob.UserID)+`"]` {
			t.Errorf("new create event: %v", c)
		}
		if users, _ := powerLevels(t, alice, id.RoomID(newRoom))["users"].(map[string]any); len(users) != 1 || users[string(carol.UserID)] != json.Number("50") {
			t.Errorf("new power levels users: %v", users)
		}
		// Bad additional_creators are refused before anything happens.
		if r := clientCall(t, alice, "POST", roomPath(id.RoomID(newRoom), "/upgrade"), map[string]any{"new_version": "12", "additional_creators": []string{"not-a-user"}}); r.Status != 400 {
			t.Errorf("upgrade with an invalid creator: %d %s", r.Status, r.Raw)
		}
		// To v11 the field is ignored.
		r = clientCall(t, alice, "POST", "/_matrix/client/v3/createRoom", map[string]any{"room_version": "10"})
		old := id.RoomID(r.Body["room_id"].(string))
		up = clientCall(t, alice, "POST", roomPath(old, "/upgrade"), map[string]any{"new_version": "11", "additional_creators": []string{string(bob.UserID)}})
		if up.Status != 200 {
			t.Fatalf("upgrade to v11 = %d %s", up.Status, up.Raw)
		}
		if c := stateContent(t, alice, id.RoomID(up.Body["replacement_room"].(string)), "m.room.create", ""); c["additional_creators"] != nil {
			t.Errorf("v11 create event: %v", c)
		}
	})
}

// TestV12InviteStateCreateEvent: the create event in an invitee's
// invite_state is the whole event (MSC4311), with origin_server_ts; the
// other entries stay stripped.
func TestV12InviteStateCreateEvent(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		r := clientCall(t, alice, "POST", "/_matrix/client/v3/createRoom", map[string]any{"room_version": "12", "preset": "public_chat", "name": "N"})
		room := r.Body["room_id"].(string)
		if r := clientCall(t, alice, "POST", roomPath(id.RoomID(room), "/invite"), map[string]any{"user_id": bob.UserID}); r.Status != 200 {
			t.Fatalf("invite: %d %s", r.Status, r.Raw)
		}
		resp, err := rawSync(t, bob, map[string]string{"timeout": "0"})
		if err != nil {
			t.Fatal(err)
		}
		rooms, _ := resp["rooms"].(map[string]any)
		invite, _ := rooms["invite"].(map[string]any)
		inv, _ := invite[room].(map[string]any)
		st, _ := inv["invite_state"].(map[string]any)
		events, _ := st["events"].([]any)
		found := false
		for _, e := range events {
			ev, _ := e.(map[string]any)
			switch ev["type"] {
			case "m.room.create":
				found = true
				if _, ok := ev["origin_server_ts"]; !ok || ev["sender"] != string(alice.UserID) {
					t.Errorf("create event in invite_state: %v", ev)
				}
			case "m.room.name":
				if _, ok := ev["origin_server_ts"]; ok {
					t.Errorf("name event not stripped: %v", ev)
				}
			}
		}
		if !found {
			t.Fatalf("no create event in invite_state: %v", inv)
		}
	})
}
