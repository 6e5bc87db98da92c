package tests

import (
	"context"
	"slices"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

// Room subscriptions are remembered by the connection (matrix-js-sdk sends
// each once, then omits it) until unsubscribe_rooms; re-sending them
// (matrix-rust-sdk sends all every time) changes nothing unless the config
// changed.

// subsList is Element Web's room list: the latest event and little state.
func subsList() map[string]any {
	return map[string]any{"all": map[string]any{"ranges": [][]int{{0, 19}}, "timeline_limit": 1,
		"required_state": [][]string{{"m.room.create", ""}, {"m.room.member", "$ME"}}}}
}

// subsBody is a request with the list and the given subscriptions.
func subsBody(subs map[string]any, extra map[string]any) map[string]any {
	body := map[string]any{"lists": subsList()}
	if subs != nil {
		body["room_subscriptions"] = subs
	}
	for k, v := range extra {
		body[k] = v
	}
	return body
}

func openRoomSub(limit int, state ...[]string) map[string]any {
	if len(state) == 0 {
		state = [][]string{{"*", "*"}}
	}
	return map[string]any{"timeline_limit": limit, "required_state": state}
}

func ssStateTypes(room map[string]any) []string {
	var out []string
	for _, e := range asList(room["required_state"]) {
		out = append(out, obj(e)["type"].(string))
	}
	slices.Sort(out)
	return out
}

func setTopic(t *testing.T, c *mautrix.Client, room id.RoomID, topic string) {
	t.Helper()
	if _, err := c.SendStateEvent(context.Background(), room, event.StateTopic, "", map[string]any{"topic": topic}); err != nil {
		t.Fatal(err)
	}
}

func TestSlidingSyncSubscriptionPersists(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		room := shareRoom(t, alice, bob)
		sub := map[string]any{string(room): openRoomSub(10)}
		first := slidingSync(t, bob, "", 0, subsBody(sub, nil))
		if obj(ssRooms(first)[string(room)])["initial"] != true {
			t.Fatalf("subscribed room not sent initially: %v", keysOf(ssRooms(first)))
		}

		// The next requests omit the subscription, as matrix-js-sdk does.
		setTopic(t, alice, room, "new topic")
		for _, b := range []string{"m1", "m2", "m3"} {
			sendText(t, alice, room, b)
		}
		r := obj(ssRooms(slidingSync(t, bob, first["pos"].(string), 0, subsBody(nil, nil)))[string(room)])
		if got := ssTimelineBodies(r); !slices.Equal(got, []string{"m1", "m2", "m3"}) || r["limited"] == true {
			t.Errorf("timeline without re-sending the subscription = %v (limited %v), want all 3 messages", got, r["limited"])
		}
		if !slices.Contains(ssStateTypes(r), "m.room.topic") {
			t.Errorf("required_state %v lacks the topic change (the subscription's [*,*])", ssStateTypes(r))
		}
	})
}

func TestSlidingSyncUnsubscribeRooms(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		room := shareRoom(t, alice, bob)
		sub := map[string]any{string(room): openRoomSub(10)}
		p1 := slidingSync(t, bob, "", 0, subsBody(sub, nil))["pos"].(string)

		// Unsubscribing alone sends nothing: the config only shrank.
		unsub := map[string]any{"unsubscribe_rooms": []string{string(room)}}
		resp := slidingSync(t, bob, p1, 0, subsBody(nil, unsub))
		if r := ssRooms(resp)[string(room)]; r != nil {
			t.Errorf("unsubscribing resent the room: %v", r)
		}
		p2 := resp["pos"].(string)
		for _, b := range []string{"m1", "m2", "m3"} {
			sendText(t, alice, room, b)
		}
		// A retry of p1 (as if the unsubscribing answer was lost) still has
		// the subscription: each pos keeps the subscriptions it was issued with.
		r := obj(ssRooms(slidingSync(t, bob, p1, 0, subsBody(nil, nil)))[string(room)])
		if got := ssTimelineBodies(r); !slices.Equal(got, []string{"m1", "m2", "m3"}) {
			t.Errorf("retry of the pos before unsubscribing: timeline %v, want all 3", got)
		}
		r = obj(ssRooms(slidingSync(t, bob, p2, 0, subsBody(nil, nil)))[string(room)])
		if got := ssTimelineBodies(r); !slices.Equal(got, []string{"m3"}) || r["limited"] != true {
			t.Errorf("after unsubscribe_rooms: timeline %v limited %v, want the list's [m3] limited", got, r["limited"])
		}
	})
}

func TestSlidingSyncResentSubscriptionIsHarmless(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		room := shareRoom(t, alice, bob)
		sendText(t, alice, room, "hello")
		state := [][]string{{"m.room.create", ""}, {"m.room.topic", ""}, {"m.room.member", "$LAZY"}}
		sub := map[string]any{string(room): openRoomSub(10, state...)}
		pos := slidingSync(t, bob, "", 0, subsBody(sub, nil))["pos"].(string)

		// matrix-rust-sdk re-sends the same subscription every time, here
		// also with its required_state in another order.
		reordered := map[string]any{string(room): openRoomSub(10, state[2], state[1], state[0])}
		for i, s := range []map[string]any{sub, reordered} {
			resp := slidingSync(t, bob, pos, 0, subsBody(s, nil))
			if r := ssRooms(resp)[string(room)]; r != nil {
				t.Errorf("re-send %d of an unchanged subscription resent the room: %v", i, r)
			}
			pos = resp["pos"].(string)
		}
		sendText(t, alice, room, "later")
		r := obj(ssRooms(slidingSync(t, bob, pos, 0, subsBody(sub, nil)))[string(room)])
		if r["initial"] == true || r["expanded_timeline"] == true || !slices.Equal(ssTimelineBodies(r), []string{"later"}) {
			t.Errorf("new message with the re-sent subscription: initial=%v expanded=%v timeline=%v",
				r["initial"], r["expanded_timeline"], ssTimelineBodies(r))
		}
	})
}

func TestSlidingSyncChangedSubscriptionResends(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		room := shareRoom(t, alice, bob)
		setTopic(t, alice, room, "the topic")
		for _, b := range []string{"m1", "m2", "m3", "m4"} {
			sendText(t, alice, room, b)
		}
		small := map[string]any{string(room): openRoomSub(2, []string{"m.room.create", ""})}
		resp := slidingSync(t, bob, "", 0, subsBody(small, nil))
		if got := ssTimelineBodies(obj(ssRooms(resp)[string(room)])); !slices.Equal(got, []string{"m3", "m4"}) {
			t.Fatalf("initial timeline = %v", got)
		}

		// A larger required_state sends the newly wanted state, and no events.
		wider := map[string]any{string(room): openRoomSub(2, []string{"m.room.create", ""}, []string{"m.room.topic", ""})}
		resp = slidingSync(t, bob, resp["pos"].(string), 0, subsBody(wider, nil))
		r := obj(ssRooms(resp)[string(room)])
		if r == nil || !slices.Equal(ssStateTypes(r), []string{"m.room.topic"}) || len(asList(r["timeline"])) != 0 || r["initial"] == true {
			t.Errorf("widened required_state: room %v state %v timeline %v", r != nil, ssStateTypes(r), ssTimelineBodies(r))
		}

		// A larger timeline_limit resends the latest events, expanded.
		longer := map[string]any{string(room): openRoomSub(4, []string{"m.room.create", ""}, []string{"m.room.topic", ""})}
		resp = slidingSync(t, bob, resp["pos"].(string), 0, subsBody(longer, nil))
		r = obj(ssRooms(resp)[string(room)])
		if got := ssTimelineBodies(r); !slices.Equal(got, []string{"m1", "m2", "m3", "m4"}) || r["expanded_timeline"] != true || r["limited"] != true {
			t.Errorf("larger timeline_limit: timeline %v expanded %v limited %v (repeated events come as a limited batch)",
				got, r["expanded_timeline"], r["limited"])
		}
		if len(asList(r["required_state"])) != 0 {
			t.Errorf("larger timeline_limit resent state %v", ssStateTypes(r))
		}

		// Dropped and given again: the client has had every event since, so
		// no event is resent (state the list did not cover may be).
		pos := slidingSync(t, bob, resp["pos"].(string), 0, subsBody(nil, map[string]any{"unsubscribe_rooms": []string{string(room)}}))["pos"].(string)
		sendText(t, alice, room, "m5")
		pos = slidingSync(t, bob, pos, 0, subsBody(nil, nil))["pos"].(string)
		resp = slidingSync(t, bob, pos, 0, subsBody(longer, nil))
		if r := obj(ssRooms(resp)[string(room)]); len(asList(r["timeline"])) != 0 || r["expanded_timeline"] == true {
			t.Errorf("re-subscribing after a gapless sync resent events: %v expanded %v", ssTimelineBodies(r), r["expanded_timeline"])
		}
	})
}
