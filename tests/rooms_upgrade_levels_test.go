package tests

import (
	"encoding/json"
	"net/url"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

// Power levels the server computes in a room upgrade must stay within
// canonical JSON's integers, ±(2^53−1), and be integers in rooms that require
// them (issue 8, item 5).

const maxCanonicalInt = 1<<53 - 1

func roomPath(room id.RoomID, rest string) string {
	return "/_matrix/client/v3/rooms/" + url.PathEscape(string(room)) + rest
}

// upgradeRoom upgrades room to version as c and returns the answer.
func upgradeRoom(t testing.TB, c *mautrix.Client, room id.RoomID, version string) rawResp {
	return clientCall(t, c, "POST", roomPath(room, "/upgrade"), map[string]any{"new_version": version})
}

// powerLevels reads a room's power levels with numbers kept exact.
func powerLevels(t testing.TB, c *mautrix.Client, room id.RoomID) map[string]any {
	r := clientCall(t, c, "GET", roomPath(room, "/state/m.room.power_levels/"), nil)
	if r.Status != 200 {
		t.Fatalf("power levels of %s: %d %s", room, r.Status, r.Raw)
	}
	dec := json.NewDecoder(strings.NewReader(r.Raw))
	dec.UseNumber()
	var pl map[string]any
	if err := dec.Decode(&pl); err != nil {
		t.Fatal(err)
	}
	return pl
}

// levelsValid checks that every level is an integer JSON number in the
// canonical range and returns the levels by name ("users.@a:b", "events.x", "ban").
func levelsValid(t testing.TB, pl map[string]any) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	check := func(name string, v any) {
		n, ok := v.(json.Number)
		if !ok {
			t.Errorf("power level %s = %#v, not a number", name, v)
			return
		}
		i, err := n.Int64()
		if err != nil || i > maxCanonicalInt || i < -maxCanonicalInt {
			t.Errorf("power level %s = %s, outside ±(2^53-1)", name, n)
			return
		}
		out[name] = i
	}
	for k, v := range pl {
		switch k {
		case "users", "events", "notifications":
			m, _ := v.(map[string]any)
			for kk, vv := range m {
				check(k+"."+kk, vv)
			}
		default:
			check(k, v)
		}
	}
	return out
}

// TestUpgradeFromV12ToEarlierVersions: the creator of a v12 room, whose power
// is unlimited there, gets a valid finite level in the new room, enough to run it.
func TestUpgradeFromV12ToEarlierVersions(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		for _, version := range []string{"11", "10", "1"} {
			old := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: "12"}, bob)
			pl := powerLevels(t, alice, old)
			pl["users"] = map[string]any{string(bob.UserID): 150}
			if r := clientCall(t, alice, "PUT", roomPath(old, "/state/m.room.power_levels/"), pl); r.Status != 200 {
				t.Fatalf("v12 power levels: %d %s", r.Status, r.Raw)
			}
			r := upgradeRoom(t, alice, old, version)
			if r.Status != 200 {
				t.Errorf("upgrade of a v12 room to v%s: %d %s", version, r.Status, r.Raw)
				continue
			}
			newRoom := id.RoomID(r.Body["replacement_room"].(string))
			levels := levelsValid(t, powerLevels(t, alice, newRoom))
			mine := levels["users."+string(alice.UserID)]
			for name, l := range levels {
				if !strings.HasPrefix(name, "users.") && l > mine || strings.HasPrefix(name, "users.") && name != "users."+string(alice.UserID) && l > mine {
					t.Errorf("v%s: alice's level %d is below %s = %d", version, mine, name, l)
				}
			}
			if levels["users."+string(bob.UserID)] != 150 {
				t.Errorf("v%s: bob's level not carried: %v", version, levels)
			}
			// She can still administer the new room.
			if r := clientCall(t, alice, "PUT", roomPath(newRoom, "/state/m.room.topic/"), map[string]any{"topic": "new"}); r.Status != 200 {
				t.Errorf("v%s: alice setting the topic: %d %s", version, r.Status, r.Raw)
			}
		}
	})
}

// TestUpgradeLevelsStayValid: string levels of old room versions become
// integers when upgrading to a version that requires them, a users_default at
// the top of the range does not overflow the old room's lock-down, and the
// lock-down never lowers a level.
func TestUpgradeLevelsStayValid(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice")

		// v9 allows levels as strings.
		old := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat", RoomVersion: "9"})
		pl := powerLevels(t, alice, old)
		pl["state_default"] = "60"
		pl["users"] = map[string]any{string(alice.UserID): "100", "@x:localhost": " 20"}
		if r := clientCall(t, alice, "PUT", roomPath(old, "/state/m.room.power_levels/"), pl); r.Status != 200 {
			t.Fatalf("string power levels in v9: %d %s", r.Status, r.Raw)
		}
		if r := upgradeRoom(t, alice, old, "10"); r.Status != 200 {
			t.Errorf("upgrade of a v9 room with string levels: %d %s", r.Status, r.Raw)
		} else {
			levels := levelsValid(t, powerLevels(t, alice, id.RoomID(r.Body["replacement_room"].(string))))
			if levels["state_default"] != 60 || levels["users.@x:localhost"] != 20 {
				t.Errorf("string levels not carried as integers: %v", levels)
			}
		}

		// An announcement room: events_default above what the lock-down would set.
		old = createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat", RoomVersion: "10"})
		pl = powerLevels(t, alice, old)
		pl["events_default"] = 100
		if r := clientCall(t, alice, "PUT", roomPath(old, "/state/m.room.power_levels/"), pl); r.Status != 200 {
			t.Fatalf("announcement levels: %d %s", r.Status, r.Raw)
		}
		if r := upgradeRoom(t, alice, old, "11"); r.Status != 200 {
			t.Errorf("upgrade of an announcement room: %d %s", r.Status, r.Raw)
		} else if got := levelsValid(t, powerLevels(t, alice, old))["events_default"]; got != 100 {
			t.Errorf("old room's events_default after the upgrade = %d, want 100 kept", got)
		}

		// users_default at the top of the range: the lock-down cannot go above it.
		r := clientCall(t, alice, "POST", "/_matrix/client/v3/createRoom", map[string]any{"room_version": "10",
			"power_level_content_override": map[string]any{"users_default": maxCanonicalInt, "users": map[string]any{string(alice.UserID): maxCanonicalInt}}})
		if r.Status != 200 {
			t.Fatalf("room with users_default 2^53-1: %d %s", r.Status, r.Raw)
		}
		old = id.RoomID(r.Body["room_id"].(string))
		if r := upgradeRoom(t, alice, old, "11"); r.Status != 200 {
			t.Errorf("upgrade with users_default 2^53-1: %d %s", r.Status, r.Raw)
		}
	})
}
