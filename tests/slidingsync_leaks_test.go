package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

// secretRoom is a room with history_visibility joined and a custom state
// event no outsider may see.
func secretRoom(t *testing.T, alice *mautrix.Client, extra ...*event.Event) id.RoomID {
	t.Helper()
	ctx := context.Background()
	room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat", RoomVersion: "11",
		InitialState: append([]*event.Event{{Type: event.StateHistoryVisibility, StateKey: new(string),
			Content: event.Content{Parsed: &event.HistoryVisibilityEventContent{HistoryVisibility: event.HistoryVisibilityJoined}}}}, extra...)})
	must(alice.SendStateEvent(ctx, room, event.NewEventType("com.example.secret"), "", map[string]any{"secret": "hunter2"}))
	return room
}

// noStateLeak fails if raw carries any of the room's state beyond the
// user's own membership events.
func noStateLeak(t *testing.T, what string, user id.UserID, raw any) {
	t.Helper()
	b, _ := json.Marshal(raw)
	if strings.Contains(string(b), "hunter2") || strings.Contains(string(b), "com.example.secret") {
		t.Errorf("%s leaks the secret state: %s", what, b)
	}
	for _, field := range []string{"required_state", "heroes", "joined_count", "invited_count", "name"} {
		if m, ok := raw.(map[string]any); ok && m[field] != nil {
			t.Errorf("%s carries %s: %v", what, field, m[field])
		}
	}
}

// TestSlidingSyncRetiredInviteLeaksNoState: a user who never joined (a
// rejected invite, a withdrawn knock) sees only their own membership event.
func TestSlidingSyncRetiredInviteLeaksNoState(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		room := secretRoom(t, alice)
		must(alice.InviteUser(ctx, room, &mautrix.ReqInviteUser{UserID: bob.UserID}))
		body := allRoomsList(10, [][]string{{"*", "*"}})
		first := slidingSync(t, bob, "", 0, body)
		if r := obj(ssRooms(first)[string(room)]); r["membership"] != "invite" {
			t.Fatalf("invite not listed: %v", r)
		}
		must(bob.LeaveRoom(ctx, room))
		next := slidingSync(t, bob, first["pos"].(string), 0, body)
		r := obj(ssRooms(next)[string(room)])
		if r == nil || r["membership"] != "leave" {
			t.Fatalf("the rejection was not sent: %v", next["rooms"])
		}
		noStateLeak(t, "rejected invite", bob.UserID, r)
		tl := asList(r["timeline"])
		if len(tl) != 1 || obj(tl[0])["state_key"] != string(bob.UserID) || obj(obj(tl[0])["content"])["membership"] != "leave" {
			t.Errorf("timeline is not just bob's leave: %v", tl)
		}

		// A fresh connection subscribing to the room gets nothing.
		sub := slidingSync(t, bob, "", 0, map[string]any{"conn_id": "sub", "room_subscriptions": map[string]any{
			string(room): map[string]any{"timeline_limit": 10, "required_state": [][]string{{"*", "*"}}}}})
		if r := ssRooms(sub)[string(room)]; r != nil {
			t.Errorf("subscription to a rejected invite answered: %v", r)
		}
		noStateLeak(t, "subscription", bob.UserID, sub)
		// Nor does a fresh list (a room left by themselves, never sent).
		fresh := slidingSync(t, bob, "", 0, map[string]any{"conn_id": "fresh", "lists": body["lists"]})
		noStateLeak(t, "fresh list", bob.UserID, fresh)

		// A knock refused by a ban: the ban is sent, nothing else.
		carol := srv.Register(t, "carol")
		knocked := secretRoom(t, alice, &event.Event{Type: event.StateJoinRules, StateKey: new(string),
			Content: event.Content{Parsed: &event.JoinRulesEventContent{JoinRule: event.JoinRuleKnock}}})
		must(carol.KnockRoom(ctx, knocked.String(), &mautrix.ReqKnockRoom{}))
		cf := slidingSync(t, carol, "", 0, body)
		if r := obj(ssRooms(cf)[string(knocked)]); r["membership"] != "knock" {
			t.Fatalf("knock not listed: %v", r)
		}
		must(alice.BanUser(ctx, knocked, &mautrix.ReqBanUser{UserID: carol.UserID}))
		cn := slidingSync(t, carol, cf["pos"].(string), 0, body)
		r = obj(ssRooms(cn)[string(knocked)])
		if r == nil || r["membership"] != "ban" {
			t.Fatalf("the refusal was not sent: %v", cn["rooms"])
		}
		noStateLeak(t, "refused knock", carol.UserID, r)
	})
}

// TestSyncIncludeLeaveRetiredKnockLeaksNoState: GET /sync with include_leave
// shows a withdrawn knock or rejected invite as the membership event only.
func TestSyncIncludeLeaveRetiredKnockLeaksNoState(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		alice, bob, carol := srv.Register(t, "alice"), srv.Register(t, "bob"), srv.Register(t, "carol")
		knocked := secretRoom(t, alice, &event.Event{Type: event.StateJoinRules, StateKey: new(string),
			Content: event.Content{Parsed: &event.JoinRulesEventContent{JoinRule: event.JoinRuleKnock}}})
		must(carol.KnockRoom(ctx, knocked.String(), &mautrix.ReqKnockRoom{}))
		since := must(rawSync(t, carol, map[string]string{}))["next_batch"].(string)
		must(carol.LeaveRoom(ctx, knocked))
		invited := secretRoom(t, alice)
		must(alice.InviteUser(ctx, invited, &mautrix.ReqInviteUser{UserID: bob.UserID}))
		must(bob.LeaveRoom(ctx, invited))

		for _, tc := range []struct {
			who   *mautrix.Client
			room  id.RoomID
			query map[string]string
		}{
			{carol, knocked, map[string]string{"filter": `{"room":{"include_leave":true}}`}},
			{carol, knocked, map[string]string{"since": since}},
			{carol, knocked, map[string]string{"filter": `{"room":{"include_leave":true}}`, "use_state_after": "true"}},
			{bob, invited, map[string]string{"filter": `{"room":{"include_leave":true}}`}},
		} {
			resp := must(rawSync(t, tc.who, tc.query))
			lr := obj(obj(obj(resp["rooms"])["leave"])[string(tc.room)])
			if lr == nil {
				t.Fatalf("%v: the room is not in rooms.leave: %v", tc.query, resp["rooms"])
			}
			noStateLeak(t, "left room", tc.who.UserID, lr)
			if evs := asList(obj(lr["state"])["events"]); len(evs) != 0 {
				t.Errorf("%v: state of a never-joined room: %v", tc.query, evs)
			}
			tl := asList(obj(lr["timeline"])["events"])
			if len(tl) != 1 || obj(tl[0])["state_key"] != string(tc.who.UserID) {
				t.Errorf("%v: timeline is not just the own leave: %v", tc.query, tl)
			}
		}
	})
}

// TestLeftRoomStateIsAtTheLeave: a user who joined and left sees the state
// as it was when their join ended, in both sync paths, also after a later
// invite they rejected.
func TestLeftRoomStateIsAtTheLeave(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", Topic: "before"}, bob)
		body := allRoomsList(10, [][]string{{"*", "*"}})
		first := slidingSync(t, bob, "", 0, body)
		must(bob.LeaveRoom(ctx, room))
		must(alice.SendStateEvent(ctx, room, event.StateTopic, "", &event.TopicEventContent{Topic: "after the leave"}))
		must(alice.SendStateEvent(ctx, room, event.NewEventType("com.example.secret"), "", map[string]any{"secret": "hunter2"}))
		check := func(what string, raw any, whole bool) {
			t.Helper()
			b, _ := json.Marshal(raw)
			if strings.Contains(string(b), "hunter2") || strings.Contains(string(b), "after the leave") {
				t.Errorf("%s shows state from after the leave: %s", what, b)
			}
			if whole && !strings.Contains(string(b), `"before"`) {
				t.Errorf("%s lacks the state at the leave: %s", what, b)
			}
		}
		run := func(stage string) {
			next := slidingSync(t, bob, first["pos"].(string), 0, body)
			check(stage+": sliding sync", ssRooms(next)[string(room)], false) // a delta
			sub := slidingSync(t, bob, "", 0, map[string]any{"conn_id": "sub", "room_subscriptions": map[string]any{
				string(room): map[string]any{"timeline_limit": 10, "required_state": [][]string{{"*", "*"}}}}})
			check(stage+": subscription", ssRooms(sub)[string(room)], true)
			for _, sa := range []string{"false", "true"} {
				resp := must(rawSync(t, bob, map[string]string{"filter": `{"room":{"include_leave":true}}`, "use_state_after": sa}))
				check(stage+": /sync use_state_after="+sa, obj(obj(resp["rooms"])["leave"])[string(room)], true)
			}
		}
		run("left")
		// Invited again and rejected: still the state at the first leave.
		must(alice.InviteUser(ctx, room, &mautrix.ReqInviteUser{UserID: bob.UserID}))
		must(bob.LeaveRoom(ctx, room))
		run("rejected re-invite")
	})
}

// TestSlidingSyncSpacesFilter: a list filtered on spaces (named many times
// over) holds the spaces' children only; more than 50 spaces is refused.
func TestSlidingSyncSpacesFilter(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		alice := srv.Register(t, "alice")
		space := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat", CreationContent: map[string]any{"type": "m.space"}})
		child := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat"})
		other := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat"})
		must(alice.SendStateEvent(ctx, space, event.StateSpaceChild, string(child), map[string]any{"via": []string{"localhost"}}))
		spaces := make([]string, 5000)
		for i := range spaces {
			spaces[i] = string(space)
		}
		lists := map[string]any{}
		for i := range 20 {
			lists[fmt.Sprint("l", i)] = map[string]any{"ranges": [][]int{{0, 9}}, "timeline_limit": 0, "filters": map[string]any{"spaces": spaces}}
		}
		resp := slidingSync(t, alice, "", 0, map[string]any{"lists": lists})
		rooms := ssRooms(resp)
		if rooms[string(child)] == nil || rooms[string(other)] != nil || rooms[string(space)] != nil {
			t.Errorf("spaces filter returned %v, want only %s", keysOf(rooms), child)
		}
		tooMany := make([]string, 51)
		for i := range tooMany {
			tooMany[i] = fmt.Sprintf("!s%d:localhost", i)
		}
		r := clientCall(t, alice, "POST", slidingPath, map[string]any{"lists": map[string]any{"a": map[string]any{
			"ranges": [][]int{{0, 9}}, "filters": map[string]any{"spaces": tooMany}}}})
		if r.Status != 400 || r.errcode() != "M_INVALID_PARAM" {
			t.Errorf("51 spaces: %d %s, want 400 M_INVALID_PARAM", r.Status, r.Raw)
		}
	})
}
