package tests

import (
	"encoding/json"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

// TestPushRulesFollowRoomUpgrade: when a room is upgraded (POST /upgrade or
// by hand: a new room, then a tombstone), its joined members' rules for it
// (a room rule; an override rule named after the room, as clients mute a
// room) are copied to the replacement room, and /sync shows the change
// (Complement TestPushRuleRoomUpgrade, which also waits for it in /sync).
// Members without such rules get none.
func TestPushRulesFollowRoomUpgrade(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		alice, alice2, bob := srv.Register(t, "alice"), srv.Register(t, "alice2"), srv.Register(t, "bob")
		roomRules := func(c *mautrix.Client) map[string]map[string]any {
			r := clientCall(t, c, "GET", "/_matrix/client/v3/pushrules/", nil)
			out := map[string]map[string]any{}
			for _, kind := range []string{"room", "override"} {
				for _, rule := range obj(r.Body["global"])[kind].([]any) {
					out[kind+"/"+obj(rule)["rule_id"].(string)] = obj(rule)
				}
			}
			return out
		}
		for _, manual := range []bool{false, true} {
			old := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: "10"}, alice2, bob)
			put := func(c *mautrix.Client, path string, body any) {
				if r := clientCall(t, c, "PUT", "/_matrix/client/v3/pushrules/global/"+path, body); r.Status != 200 {
					t.Fatalf("PUT %s = %d %s", path, r.Status, r.Raw)
				}
			}
			put(alice, "room/"+string(old), map[string]any{"actions": []string{"dont_notify"}})
			put(alice2, "room/"+string(old), map[string]any{"actions": []string{"dont_notify"}})
			put(alice2, "override/"+string(old), map[string]any{"actions": []string{},
				"conditions": []any{map[string]any{"kind": "event_match", "key": "room_id", "pattern": string(old)}}})
			since := map[*mautrix.Client]string{}
			for _, c := range []*mautrix.Client{alice, alice2} {
				since[c] = syncOnce(t, c, "", "", 0).NextBatch
			}

			var newRoom id.RoomID
			if manual {
				resp, err := alice.CreateRoom(t.Context(), &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: "11",
					CreationContent: map[string]any{"predecessor": map[string]any{"room_id": old}}})
				if err != nil {
					t.Fatal(err)
				}
				newRoom = resp.RoomID
				if r := clientCall(t, alice, "PUT", roomPath(old, "/state/m.room.tombstone/"), map[string]any{
					"body": "replaced", "replacement_room": newRoom}); r.Status != 200 {
					t.Fatalf("tombstone = %d %s", r.Status, r.Raw)
				}
			} else {
				r := upgradeRoom(t, alice, old, "11")
				newRoom = id.RoomID(r.Body["replacement_room"].(string))
			}
			// The copy follows the tombstone (a stream follower): /sync shows
			// it arrive as a change of m.push_rules.
			for _, c := range []*mautrix.Client{alice, alice2} {
				syncUntil(t, c, since[c], "", syncHasRoomPushRule(newRoom))
			}
			for _, c := range []*mautrix.Client{alice, alice2} {
				rules := roomRules(c)
				rule := rules["room/"+string(newRoom)]
				if rule == nil || rule["actions"].([]any)[0] != "dont_notify" || rules["room/"+string(old)] == nil {
					t.Fatalf("manual=%v: %s's room rules after the upgrade: %v", manual, c.UserID, rules)
				}
			}
			ov := roomRules(alice2)["override/"+string(newRoom)]
			if ov == nil || obj(ov["conditions"].([]any)[0])["pattern"] != string(newRoom) {
				t.Fatalf("manual=%v: alice2's override rule not moved: %v", manual, ov)
			}
			if rules := roomRules(bob); rules["room/"+string(newRoom)] != nil {
				t.Fatalf("bob got rules he never had: %v", rules)
			}
		}
	})
}

// syncHasRoomPushRule: the response carries m.push_rules with a room rule for room.
func syncHasRoomPushRule(room id.RoomID) func(*mautrix.RespSync) bool {
	return func(r *mautrix.RespSync) bool {
		for _, ev := range r.AccountData.Events {
			if ev.Type.Type != "m.push_rules" {
				continue
			}
			var c struct {
				Global struct {
					Room []struct {
						RuleID string `json:"rule_id"`
					} `json:"room"`
				} `json:"global"`
			}
			if json.Unmarshal(ev.Content.VeryRaw, &c) != nil {
				continue
			}
			for _, rule := range c.Global.Room {
				if rule.RuleID == string(room) {
					return true
				}
			}
		}
		return false
	}
}
