package tests

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

const slidingPath = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync"

// slidingSync posts one sliding sync request (pos "" starts a connection)
// and requires a 200.
func slidingSync(t testing.TB, c *mautrix.Client, pos string, timeoutMS int, body any) map[string]any {
	t.Helper()
	path := slidingPath + fmt.Sprintf("?timeout=%d", timeoutMS)
	if pos != "" {
		path += "&pos=" + pos
	}
	r := clientCall(t, c, "POST", path, body)
	if r.Status != 200 {
		t.Fatalf("sliding sync: %d %s", r.Status, r.Raw)
	}
	return r.Body
}

func ssRooms(resp map[string]any) map[string]any { return obj(resp["rooms"]) }

func ssTimelineBodies(room map[string]any) []string {
	var out []string
	for _, e := range asList(room["timeline"]) {
		if b, ok := obj(obj(e)["content"])["body"].(string); ok {
			out = append(out, b)
		}
	}
	return out
}

func asList(v any) []any { l, _ := v.([]any); return l }

func allRoomsList(limit int, requiredState any) map[string]any {
	return map[string]any{"lists": map[string]any{"all": map[string]any{
		"ranges": [][]int{{0, 19}}, "timeline_limit": limit, "required_state": requiredState}}}
}

func TestSlidingSyncListsAndIncremental(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		older := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Older"}, bob)
		newer := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"}, bob)
		sendText(t, alice, newer, "n1")
		sendText(t, alice, older, "o1") // older is now the most recent
		body := allRoomsList(5, [][]string{{"m.room.create", ""}, {"m.room.name", ""}})

		resp := slidingSync(t, bob, "", 0, body)
		if got := obj(obj(resp["lists"])["all"])["count"]; got != float64(2) {
			t.Fatalf("list count = %v, want 2", got)
		}
		rooms := ssRooms(resp)
		ro, rn := obj(rooms[string(older)]), obj(rooms[string(newer)])
		if ro == nil || rn == nil {
			t.Fatalf("rooms missing: %v", resp["rooms"])
		}
		if ro["initial"] != true || ro["name"] != "Older" || ro["joined_count"] != float64(2) {
			t.Errorf("older room: initial=%v name=%v joined=%v", ro["initial"], ro["name"], ro["joined_count"])
		}
		if ro["bump_stamp"].(float64) <= rn["bump_stamp"].(float64) {
			t.Errorf("bump_stamp of the room with the latest message is not larger: %v vs %v", ro["bump_stamp"], rn["bump_stamp"])
		}
		if b := ssTimelineBodies(ro); !slices.Contains(b, "o1") {
			t.Errorf("older timeline %v lacks o1", b)
		}
		// unsigned.membership (MSC4115): bob's membership at each event, as in /sync.
		for _, field := range []string{"timeline", "required_state"} {
			evs := asList(ro[field])
			if len(evs) == 0 {
				t.Errorf("older room has no %s", field)
			}
			for _, e := range evs {
				// Events from before bob was invited: "leave" (never joined).
				// bob's own membership events carry the membership they set.
				want := "leave"
				if obj(obj(e)["content"])["body"] == "o1" {
					want = "join"
				} else if obj(e)["type"] == "m.room.member" && obj(e)["state_key"] == string(bob.UserID) {
					want = obj(obj(e)["content"])["membership"].(string)
				}
				if m := obj(obj(e)["unsigned"])["membership"]; m != want {
					t.Errorf("%s event %v: unsigned.membership = %v, want %s", field, obj(e)["type"], m, want)
				}
			}
		}
		if rn["heroes"] == nil || rn["name"] != nil {
			t.Errorf("unnamed room: heroes=%v name=%v", rn["heroes"], rn["name"])
		}
		var types []string
		for _, e := range asList(ro["required_state"]) {
			types = append(types, obj(e)["type"].(string))
		}
		slices.Sort(types)
		if !slices.Equal(types, []string{"m.room.create", "m.room.name"}) {
			t.Errorf("required_state types = %v", types)
		}
		if rn["notification_count"] == nil {
			t.Errorf("no notification_count: %v", rn)
		}

		// A range of one: the most recent room only; the count stays 2.
		one := slidingSync(t, bob, "", 0, map[string]any{"conn_id": "one", "lists": map[string]any{"top": map[string]any{
			"ranges": [][]int{{0, 0}}, "timeline_limit": 1, "required_state": [][]string{}}}})
		if r := ssRooms(one); len(r) != 1 || r[string(older)] == nil {
			t.Errorf("range [0,0] returned %v, want only %s", keysOf(r), older)
		}

		// Incremental: only the new event, once.
		pos := resp["pos"].(string)
		sendText(t, alice, newer, "n2")
		inc := slidingSync(t, bob, pos, 0, body)
		rooms = ssRooms(inc)
		if len(rooms) != 1 || rooms[string(newer)] == nil {
			t.Fatalf("incremental rooms = %v, want only %s", keysOf(rooms), newer)
		}
		rn = obj(rooms[string(newer)])
		if b := ssTimelineBodies(rn); !slices.Equal(b, []string{"n2"}) || rn["initial"] == true || rn["num_live"] != float64(1) {
			t.Errorf("incremental room: timeline=%v initial=%v num_live=%v", b, rn["initial"], rn["num_live"])
		}
		// A retry (response never processed) with the previous pos gives the same delta again.
		retry := slidingSync(t, bob, pos, 0, body)
		if obj(ssRooms(retry)[string(newer)]) == nil {
			t.Errorf("a retry with the same pos lost the update: %v", retry["rooms"])
		}
		again := slidingSync(t, bob, inc["pos"].(string), 0, body)
		if len(ssRooms(again)) != 0 {
			t.Errorf("the event was delivered twice: %v", again["rooms"])
		}
		// Using a newer pos acknowledged the older one: it is gone.
		if r := clientCall(t, bob, "POST", slidingPath+"?pos="+pos, body); r.Status != 400 || r.errcode() != "M_UNKNOWN_POS" {
			t.Errorf("an acknowledged older pos: %d %s", r.Status, r.Raw)
		}
	})
}

func keysOf(m map[string]any) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func TestSlidingSyncLongPollWakes(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		room := shareRoom(t, alice, bob)
		body := allRoomsList(3, [][]string{})
		pos := slidingSync(t, bob, "", 0, body)["pos"].(string)
		done := make(chan map[string]any, 1)
		go func() { done <- slidingSync(t, bob, pos, 20000, body) }()
		time.Sleep(200 * time.Millisecond)
		sendText(t, alice, room, "wake")
		select {
		case resp := <-done:
			if b := ssTimelineBodies(obj(ssRooms(resp)[string(room)])); !slices.Equal(b, []string{"wake"}) {
				t.Errorf("woken response timeline = %v", b)
			}
		case <-time.After(15 * time.Second):
			t.Fatal("long-poll did not wake on a send")
		}
	})
}

func TestSlidingSyncInvitesAndLazyMembers(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		alice, bob, carol := srv.Register(t, "alice"), srv.Register(t, "bob"), srv.Register(t, "carol")
		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Lazy"}, carol)
		sendText(t, carol, room, "from carol")
		if _, err := alice.InviteUser(ctx, room, &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
			t.Fatal(err)
		}
		inv := slidingSync(t, bob, "", 0, map[string]any{"lists": map[string]any{"invites": map[string]any{
			"ranges": [][]int{{0, 9}}, "timeline_limit": 5, "required_state": [][]string{}, "filters": map[string]any{"is_invite": true}}}})
		r := obj(ssRooms(inv)[string(room)])
		if r == nil || r["membership"] != "invite" || len(asList(r["invite_state"])) == 0 || r["timeline"] != nil {
			t.Fatalf("invite room = %v", r)
		}
		foundName := false
		for _, e := range asList(r["invite_state"]) {
			foundName = foundName || obj(e)["type"] == "m.room.name"
		}
		if !foundName {
			t.Errorf("invite_state lacks the room name: %v", r["invite_state"])
		}

		// $LAZY: only the timeline's senders' member events; "*" wildcard for the rest.
		resp := slidingSync(t, alice, "", 0, allRoomsList(1, [][]string{{"m.room.member", "$LAZY"}, {"m.room.name", "*"}}))
		r = obj(ssRooms(resp)[string(room)])
		var members []string
		sawName := false
		for _, e := range asList(r["required_state"]) {
			switch obj(e)["type"] {
			case "m.room.member":
				members = append(members, obj(e)["state_key"].(string))
			case "m.room.name":
				sawName = true
			}
		}
		// The last event is alice's invite of bob: sender alice, target bob.
		slices.Sort(members)
		want := []string{alice.UserID.String(), bob.UserID.String()}
		slices.Sort(want)
		if !slices.Equal(members, want) || !sawName {
			t.Errorf("lazy required_state members = %v (want %v), name=%v", members, want, sawName)
		}
		// Everything: ["*","*"] includes carol's membership too.
		all := slidingSync(t, alice, "", 0, allRoomsList(1, [][]string{{"*", "*"}}))
		n := 0
		for _, e := range asList(obj(ssRooms(all)[string(room)])["required_state"]) {
			if obj(e)["type"] == "m.room.member" {
				n++
			}
		}
		if n != 3 {
			t.Errorf("[*,*] returned %d member events, want 3", n)
		}
	})
}

func TestSlidingSyncHistoryVisibility(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", InitialState: []*event.Event{{
			Type: event.StateHistoryVisibility, Content: event.Content{Parsed: &event.HistoryVisibilityEventContent{HistoryVisibility: event.HistoryVisibilityJoined}}}}})
		sendText(t, alice, room, "secret before bob")
		if _, err := bob.JoinRoomByID(ctx, room); err != nil {
			t.Fatal(err)
		}
		sendText(t, alice, room, "after bob")
		resp := slidingSync(t, bob, "", 0, allRoomsList(20, [][]string{}))
		b := ssTimelineBodies(obj(ssRooms(resp)[string(room)]))
		if slices.Contains(b, "secret before bob") || !slices.Contains(b, "after bob") {
			t.Errorf("joined-visibility timeline for a new joiner = %v", b)
		}
	})
}

func TestSlidingSyncToDeviceAndE2EE(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		shareRoom(t, alice, bob)
		ext := func(since string) map[string]any {
			td := map[string]any{"enabled": true}
			if since != "" {
				td["since"] = since
			}
			return map[string]any{"lists": map[string]any{}, "extensions": map[string]any{"to_device": td, "e2ee": map[string]any{"enabled": true}}}
		}
		first := slidingSync(t, bob, "", 0, ext(""))
		e2ee := obj(obj(first["extensions"])["e2ee"])
		if e2ee["device_one_time_keys_count"] == nil || e2ee["device_unused_fallback_key_types"] == nil {
			t.Errorf("e2ee extension = %v", e2ee)
		}
		_, err := alice.SendToDevice(ctx, event.ToDeviceRoomKeyRequest, &mautrix.ReqSendToDevice{Messages: map[id.UserID]map[id.DeviceID]*event.Content{
			bob.UserID: {bob.DeviceID: {Raw: map[string]any{"action": "request_cancellation", "request_id": "r1", "requesting_device_id": "X"}}}}})
		if err != nil {
			t.Fatal(err)
		}
		dev := newTestDevice(alice.UserID.String(), alice.DeviceID.String())
		keysMustCall(t, alice, "POST", "/_matrix/client/v3/keys/upload", map[string]any{"device_keys": dev.deviceKeys(t)})

		pos := first["pos"].(string)
		since := obj(obj(first["extensions"])["to_device"])["next_batch"].(string)
		second := slidingSync(t, bob, pos, 0, ext(since))
		td := obj(obj(second["extensions"])["to_device"])
		if len(asList(td["events"])) != 1 {
			t.Fatalf("to_device = %v, want one message", td)
		}
		changed := asList(obj(obj(obj(second["extensions"])["e2ee"])["device_lists"])["changed"])
		if !slices.Contains(changed, any(alice.UserID.String())) {
			t.Errorf("device_lists.changed = %v, want alice", changed)
		}
		// Acknowledged by since: not delivered again.
		third := slidingSync(t, bob, second["pos"].(string), 0, ext(td["next_batch"].(string)))
		if n := len(asList(obj(obj(third["extensions"])["to_device"])["events"])); n != 0 {
			t.Errorf("to-device message delivered again after acknowledgement (%d)", n)
		}
		// Acknowledged means deleted: a new connection without since does not see it.
		fresh := slidingSync(t, bob, "", 0, ext(""))
		if n := len(asList(obj(obj(fresh["extensions"])["to_device"])["events"])); n != 0 {
			t.Errorf("acknowledged to-device message delivered to a new connection (%d)", n)
		}
	})
}

func manyRoomIDs(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("!r%d:localhost", i)
	}
	return out
}

func TestSlidingSyncBadInput(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		bob := srv.Register(t, "bob")
		other := srv.Register(t, "other")
		pos := slidingSync(t, bob, "", 0, allRoomsList(1, [][]string{}))["pos"].(string)
		otherPos := slidingSync(t, other, "", 0, allRoomsList(1, [][]string{}))["pos"].(string)
		manyLists := map[string]any{}
		for i := range 101 {
			manyLists[fmt.Sprint("l", i)] = map[string]any{"timeline_limit": 1, "required_state": [][]string{}}
		}
		cases := []struct {
			name, query string
			body        any
			status      int
			errcode     string
		}{
			{"unknown pos", "?pos=12345", map[string]any{}, 400, "M_UNKNOWN_POS"},
			{"garbage pos", "?pos=abc", map[string]any{}, 400, "M_UNKNOWN_POS"},
			{"another user's pos", "?pos=" + otherPos, map[string]any{}, 400, "M_UNKNOWN_POS"},
			{"another conn's pos", "?pos=" + pos, map[string]any{"conn_id": "other"}, 400, "M_UNKNOWN_POS"},
			{"reversed range", "", map[string]any{"lists": map[string]any{"a": map[string]any{"ranges": [][]int{{5, 1}}, "timeline_limit": 1}}}, 400, "M_INVALID_PARAM"},
			{"negative range", "", map[string]any{"lists": map[string]any{"a": map[string]any{"ranges": [][]int{{-1, 1}}, "timeline_limit": 1}}}, 400, "M_INVALID_PARAM"},
			{"three-element range", "", map[string]any{"lists": map[string]any{"a": map[string]any{"ranges": [][]int{{0, 1, 2}}, "timeline_limit": 1}}}, 400, "M_INVALID_PARAM"},
			{"ranges wrong type", "", `{"lists":{"a":{"ranges":"0-5","timeline_limit":1}}}`, 400, "M_BAD_JSON"},
			{"timeline_limit string", "", `{"lists":{"a":{"timeline_limit":"5"}}}`, 400, "M_BAD_JSON"},
			{"negative timeline_limit", "", `{"lists":{"a":{"timeline_limit":-1}}}`, 400, "M_INVALID_PARAM"},
			{"required_state wrong shape", "", `{"lists":{"a":{"timeline_limit":1,"required_state":[["only-type"]]}}}`, 400, "M_BAD_JSON"},
			{"required_state number", "", `{"lists":{"a":{"timeline_limit":1,"required_state":5}}}`, 400, "M_BAD_JSON"},
			{"lists not an object", "", `{"lists":[1]}`, 400, "M_BAD_JSON"},
			{"too many lists", "", map[string]any{"lists": manyLists}, 400, "M_INVALID_PARAM"},
			{"subscription not a room ID", "", `{"room_subscriptions":{"nope":{"timeline_limit":1}}}`, 400, "M_INVALID_PARAM"},
			{"unsubscribe not a room ID", "", `{"unsubscribe_rooms":["nope"]}`, 400, "M_INVALID_PARAM"},
			{"unsubscribe not a list", "", `{"unsubscribe_rooms":"!a:b"}`, 400, "M_BAD_JSON"},
			{"unsubscribe too many", "", map[string]any{"unsubscribe_rooms": manyRoomIDs(101)}, 400, "M_INVALID_PARAM"},
			{"bad timeout", "?timeout=-5", map[string]any{}, 400, "M_INVALID_PARAM"},
			{"bad set_presence", "?set_presence=dancing", map[string]any{}, 400, "M_INVALID_PARAM"},
			{"not JSON", "", "{nope", 400, "M_NOT_JSON"},
			{"to_device since garbage", "", `{"extensions":{"to_device":{"enabled":true,"since":"xyz"}}}`, 400, "M_INVALID_PARAM"},
		}
		for _, tc := range cases {
			r := clientCall(t, bob, "POST", slidingPath+tc.query, tc.body)
			if r.Status != tc.status || r.errcode() != tc.errcode {
				t.Errorf("%s: %d %s, want %d %s", tc.name, r.Status, r.Raw, tc.status, tc.errcode)
			}
		}
		if r := httpCall(t, srv.URL, "POST", slidingPath, "", map[string]any{}); r.Status != 401 {
			t.Errorf("unauthenticated: %d", r.Status)
		}
		v := httpCall(t, srv.URL, "GET", "/_matrix/client/versions", "", nil)
		if obj(v.Body["unstable_features"])["org.matrix.simplified_msc3575"] != true {
			t.Errorf("versions does not advertise sliding sync: %s", v.Raw)
		}
	})
}
