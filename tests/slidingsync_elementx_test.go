package tests

import (
	"fmt"
	"slices"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

// elementXRoomList is the request matrix-rust-sdk's RoomListService sends
// (crates/matrix-sdk-ui/src/room_list_service/mod.rs, ruma's v5 types):
// conn_id "room-list", one list "all_rooms" with DEFAULT_REQUIRED_STATE and
// timeline_limit 1, and the account_data, receipts (rooms ["*"]) and typing
// extensions. The extensions the SDK enables only when the server
// advertises them (thread subscriptions, MSC4306) or on request (profiles)
// are sent too: unknown extensions must be ignored.
func elementXRoomList(txnID string) map[string]any {
	rs := [][]string{{"m.room.name", ""}, {"m.room.encryption", ""}, {"m.room.member", "$LAZY"},
		{"m.room.member", "$ME"}, {"m.room.topic", ""}, {"m.room.avatar", ""}, {"m.room.canonical_alias", ""},
		{"m.room.power_levels", ""}, {"org.matrix.msc3401.call.member", "*"}, {"m.room.join_rules", ""},
		{"m.room.tombstone", ""}, {"m.room.create", ""}, {"m.room.history_visibility", ""},
		{"io.element.functional_members", ""}, {"m.space.parent", "*"}, {"m.space.child", "*"}, {"m.beacon_info", "*"}}
	return map[string]any{
		"conn_id": "room-list",
		"txn_id":  txnID,
		"lists": map[string]any{"all_rooms": map[string]any{
			"ranges": [][]int{{0, 19}}, "timeline_limit": 1, "required_state": rs, "filters": map[string]any{}}},
		"extensions": map[string]any{
			"account_data": map[string]any{"enabled": true},
			"receipts":     map[string]any{"enabled": true, "rooms": []string{"*"}},
			"typing":       map[string]any{"enabled": true},
			"io.element.msc4308.thread_subscriptions": map[string]any{"enabled": true, "limit": 10},
			"org.matrix.msc4262.profiles":             map[string]any{"enabled": true},
		},
	}
}

// TestSlidingSyncElementXRoomList sends Element X's room-list request and
// checks every room field matrix-rust-sdk reads (ruma's v5 Response).
func TestSlidingSyncElementXRoomList(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		if err := alice.SetDisplayName(t.Context(), "Alice A"); err != nil {
			t.Fatal(err)
		}
		named := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Named", Invite: []id.UserID{bob.UserID}}, bob)
		dm := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "trusted_private_chat", IsDirect: true, Invite: []id.UserID{bob.UserID}}, bob)
		ev := sendText(t, alice, dm, fmt.Sprintf("hi @%s", bob.UserID.Localpart()))
		sendText(t, alice, named, "latest")
		if r := clientCall(t, bob, "POST", fmt.Sprintf("/_matrix/client/v3/rooms/%s/receipt/m.read/%s", dm, ev), map[string]any{}); r.Status != 200 {
			t.Fatalf("receipt: %d %s", r.Status, r.Raw)
		}
		invitedTo := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Invite", Invite: []id.UserID{bob.UserID}})

		resp := slidingSync(t, bob, "", 0, elementXRoomList("t1"))
		if resp["txn_id"] != "t1" {
			t.Errorf("txn_id not echoed: %v", resp["txn_id"])
		}
		if c := obj(obj(resp["lists"])["all_rooms"])["count"]; c != float64(3) {
			t.Errorf("all_rooms count = %v, want 3", c)
		}
		exts := obj(resp["extensions"])
		for _, k := range []string{"io.element.msc4308.thread_subscriptions", "org.matrix.msc4262.profiles"} {
			if _, ok := exts[k]; ok {
				t.Errorf("an extension we do not serve answered: %s", k)
			}
		}
		rooms := ssRooms(resp)
		rn, rd, ri := obj(rooms[string(named)]), obj(rooms[string(dm)]), obj(rooms[string(invitedTo)])
		if rn == nil || rd == nil || ri == nil {
			t.Fatalf("rooms = %v", keysOf(rooms))
		}
		if rn["name"] != "Named" || rn["heroes"] != nil || rn["initial"] != true {
			t.Errorf("named room: name=%v heroes=%v initial=%v", rn["name"], rn["heroes"], rn["initial"])
		}
		if b := ssTimelineBodies(rn); !slices.Equal(b, []string{"latest"}) || rn["limited"] != true || rn["prev_batch"] == nil {
			t.Errorf("named room timeline=%v limited=%v prev_batch=%v", b, rn["limited"], rn["prev_batch"])
		}
		for _, f := range []string{"joined_count", "invited_count", "notification_count", "highlight_count", "bump_stamp"} {
			if _, ok := rn[f].(float64); !ok {
				t.Errorf("named room: %s = %v", f, rn[f])
			}
		}
		if rd["name"] != nil || rd["is_dm"] != nil && rd["is_dm"] != false && rd["is_dm"] != true {
			t.Errorf("dm: name=%v is_dm=%v", rd["name"], rd["is_dm"])
		}
		heroes := asList(rd["heroes"])
		if len(heroes) != 1 || obj(heroes[0])["user_id"] != string(alice.UserID) || obj(heroes[0])["displayname"] != "Alice A" {
			t.Errorf("dm heroes = %v, want alice with her display name", heroes)
		}
		// $ME: bob's own membership is in required_state; $LAZY: the sender's.
		members := map[string]bool{}
		for _, e := range asList(rd["required_state"]) {
			if obj(e)["type"] == "m.room.member" {
				members[obj(e)["state_key"].(string)] = true
			}
		}
		if !members[string(bob.UserID)] || !members[string(alice.UserID)] {
			t.Errorf("dm required_state members = %v, want bob ($ME) and alice ($LAZY)", members)
		}
		if len(asList(ri["invite_state"])) == 0 || ri["membership"] != "invite" {
			t.Errorf("invite: invite_state=%v membership=%v", ri["invite_state"], ri["membership"])
		}
		if rc := obj(obj(exts["receipts"])["rooms"])[string(dm)]; rc == nil {
			t.Errorf("receipts extension lacks the dm's receipt: %v", exts["receipts"])
		}
		if obj(exts["account_data"])["global"] == nil {
			t.Errorf("account_data extension has no global data (m.push_rules): %v", exts["account_data"])
		}

		// Incremental, with pos and timeout as query parameters as the SDK sends them.
		sendText(t, alice, named, "next")
		inc := slidingSync(t, bob, resp["pos"].(string), 1000, elementXRoomList("t2"))
		if inc["txn_id"] != "t2" {
			t.Errorf("txn_id not echoed on the incremental answer: %v", inc["txn_id"])
		}
		r := obj(ssRooms(inc)[string(named)])
		if b := ssTimelineBodies(r); !slices.Equal(b, []string{"next"}) || r["num_live"] != float64(1) || r["initial"] != nil {
			t.Errorf("incremental: timeline=%v num_live=%v initial=%v", b, r["num_live"], r["initial"])
		}
		if r["bump_stamp"].(float64) <= rn["bump_stamp"].(float64) {
			t.Errorf("bump_stamp did not grow: %v -> %v", rn["bump_stamp"], r["bump_stamp"])
		}
	})
}

// TestSlidingSyncExtensionScope: the room-scoped extensions' lists and
// rooms narrow them (absent: all; "*": all; []: none).
func TestSlidingSyncExtensionScope(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		var rooms []id.RoomID
		for i := range 3 {
			room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: fmt.Sprintf("r%d", i), Invite: []id.UserID{bob.UserID}}, bob)
			ev := sendText(t, alice, room, "m")
			if r := clientCall(t, bob, "POST", fmt.Sprintf("/_matrix/client/v3/rooms/%s/receipt/m.read/%s", room, ev), map[string]any{}); r.Status != 200 {
				t.Fatalf("receipt: %d %s", r.Status, r.Raw)
			}
			if r := clientCall(t, bob, "PUT", fmt.Sprintf("/_matrix/client/v3/user/%s/rooms/%s/account_data/x.note", bob.UserID, room), map[string]any{"n": i}); r.Status != 200 {
				t.Fatalf("room account data: %d %s", r.Status, r.Raw)
			}
			rooms = append(rooms, room)
		}
		// rooms[2] is the most recent: list "top" holds it, list "second" rooms[1];
		// rooms[0] comes by subscription only.
		list := func(from int) map[string]any {
			return map[string]any{"ranges": [][]int{{from, from}}, "timeline_limit": 0, "required_state": [][]string{}}
		}
		body := func(ext map[string]any) map[string]any {
			return map[string]any{
				"lists":              map[string]any{"top": list(0), "second": list(1)},
				"room_subscriptions": map[string]any{string(rooms[0]): map[string]any{"timeline_limit": 0, "required_state": [][]string{}}},
				"extensions":         ext,
			}
		}
		got := func(resp map[string]any, ext string) []id.RoomID {
			var out []id.RoomID
			for _, r := range rooms {
				if obj(obj(obj(resp["extensions"])[ext])["rooms"])[string(r)] != nil {
					out = append(out, r)
				}
			}
			return out
		}
		resp := slidingSync(t, bob, "", 0, body(map[string]any{
			"receipts":     map[string]any{"enabled": true},                                                // all
			"account_data": map[string]any{"enabled": true, "lists": []string{"top"}, "rooms": []string{}}, // rooms[2]
		}))
		if len(ssRooms(resp)) != 3 {
			t.Fatalf("rooms = %v", keysOf(ssRooms(resp)))
		}
		if g := got(resp, "receipts"); len(g) != 3 {
			t.Errorf("receipts with no scope cover %v, want all 3", g)
		}
		if g := got(resp, "account_data"); !slices.Equal(g, []id.RoomID{rooms[2]}) {
			t.Errorf("account_data lists [top] rooms [] covers %v, want %v", g, rooms[2])
		}
		resp = slidingSync(t, bob, "", 0, body(map[string]any{
			"receipts":     map[string]any{"enabled": true, "lists": []string{}, "rooms": []string{string(rooms[0])}},
			"account_data": map[string]any{"enabled": true, "lists": []string{"*"}, "rooms": []string{}},
		}))
		if g := got(resp, "receipts"); !slices.Equal(g, []id.RoomID{rooms[0]}) {
			t.Errorf("receipts lists [] rooms [sub] covers %v, want %v", g, rooms[0])
		}
		if g := got(resp, "account_data"); !slices.Equal(g, []id.RoomID{rooms[1], rooms[2]}) {
			t.Errorf("account_data lists [*] rooms [] covers %v, want the two listed rooms", g)
		}
		if r := clientCall(t, bob, "POST", slidingPath, body(map[string]any{"typing": map[string]any{"enabled": true, "lists": manyRoomIDs(300)}})); r.Status != 400 || r.errcode() != "M_INVALID_PARAM" {
			t.Errorf("300 extension lists: %d %s", r.Status, r.Raw)
		}
		if r := clientCall(t, bob, "POST", slidingPath, body(map[string]any{"typing": map[string]any{"enabled": true, "rooms": "nope"}})); r.Status != 400 {
			t.Errorf("extension rooms not a list: %d %s", r.Status, r.Raw)
		}
	})
}

// TestSlidingSyncCountsFollowOwnReceipt: reading a room (on any device)
// changes its counts, and a continuing connection is sent the room with the
// new counts although nothing else happened in it (Element X's badge).
func TestSlidingSyncCountsFollowOwnReceipt(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{bob.UserID}}, bob)
		other := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{bob.UserID}}, bob)
		body := elementXRoomList("")
		resp := slidingSync(t, bob, "", 0, body)
		sendText(t, alice, room, "one")
		last := sendText(t, alice, room, "two")
		resp = slidingSync(t, bob, resp["pos"].(string), 0, body)
		if r := obj(ssRooms(resp)[string(room)]); r["notification_count"] != float64(2) {
			t.Fatalf("after two messages: notification_count = %v", r["notification_count"])
		}
		if r := clientCall(t, bob, "POST", fmt.Sprintf("/_matrix/client/v3/rooms/%s/receipt/m.read/%s", room, last), map[string]any{}); r.Status != 200 {
			t.Fatalf("receipt: %d %s", r.Status, r.Raw)
		}
		resp = slidingSync(t, bob, resp["pos"].(string), 1000, body)
		r := obj(ssRooms(resp)[string(room)])
		if r == nil || r["notification_count"] != float64(0) || r["highlight_count"] != float64(0) {
			t.Fatalf("after bob read the room: %v", r)
		}
		if r["initial"] != nil || len(asList(r["timeline"])) != 0 {
			t.Errorf("a counts update resent the room: initial=%v timeline=%v", r["initial"], r["timeline"])
		}
		if ssRooms(resp)[string(other)] != nil {
			t.Errorf("a room nobody read was sent")
		}
		// Once sent, not again.
		again := slidingSync(t, bob, resp["pos"].(string), 0, body)
		if ssRooms(again)[string(room)] != nil {
			t.Errorf("the counts update was sent twice")
		}
	})
}
