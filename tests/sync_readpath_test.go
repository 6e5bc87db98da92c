package tests

import (
	"context"
	"net/url"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

// Read-path cases Complement's csapi suite checks (TestArchivedRoomsHistory,
// TestLeaveEventVisibility, TestMembersLocal, TestSync, TestRoomForget,
// TestInviteFromIgnoredUsersDoesNotAppearInSync, TestGetRoomMembersAtPoint,
// TestRoomImageRoundtrip), each reduced to what the spec asks.

// rawRoom digs rooms.<section>.<room> out of a raw /sync answer (nil if absent).
func rawRoom(resp map[string]any, section string, room id.RoomID) map[string]any {
	rooms, _ := resp["rooms"].(map[string]any)
	sec, _ := rooms[section].(map[string]any)
	r, _ := sec[string(room)].(map[string]any)
	return r
}

// rawEvents is <part>.events of a raw room (nil if absent, [] if empty).
func rawEvents(room map[string]any, part string) []any {
	p, _ := room[part].(map[string]any)
	evs, _ := p["events"].([]any)
	return evs
}

// TestSyncLeftRoomTimelineLimitZero: a timeline limit of 0 gives an empty
// timeline (the spec's limit is a maximum, 0 included); the state of a left
// room is then the state when the user left, their leave included.
func TestSyncLeftRoomTimelineLimitZero(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		room := shareRoom(t, alice, bob)
		sendText(t, alice, room, "before")
		must(alice.SendStateEvent(ctx, room, event.NewEventType("a.madeup.test.state"), "", map[string]any{"my_key": "before"}))
		must(bob.LeaveRoom(ctx, room))
		sendText(t, alice, room, "after")
		must(alice.SendStateEvent(ctx, room, event.NewEventType("a.madeup.test.state"), "", map[string]any{"my_key": "after"}))

		resp := must(rawSync(t, bob, map[string]string{"timeout": "0",
			"filter": `{"room":{"timeline":{"limit":0},"include_leave":true}}`}))
		left := rawRoom(resp, "leave", room)
		if left == nil {
			t.Fatalf("room missing from rooms.leave: %v", resp["rooms"])
		}
		tl, _ := left["timeline"].(map[string]any)
		if evs, ok := tl["events"].([]any); !ok || len(evs) != 0 {
			t.Errorf("timeline with limit 0: %v, want an empty events array", left["timeline"])
		}
		foundLeave := false
		for _, e := range rawEvents(left, "state") {
			ev := e.(map[string]any)
			content, _ := ev["content"].(map[string]any)
			switch ev["type"] {
			case "a.madeup.test.state":
				if content["my_key"] != "before" {
					t.Errorf("state from after bob left: %v", ev)
				}
			case "m.room.member":
				if ev["state_key"] == string(bob.UserID) {
					foundLeave = content["membership"] == "leave"
				}
			}
		}
		if !foundLeave {
			t.Errorf("bob's leave not in the state: %v", left["state"])
		}

		// A joined room with limit 0: no events, and limited since some were left out.
		resp = must(rawSync(t, alice, map[string]string{"timeout": "0", "filter": `{"room":{"timeline":{"limit":0}}}`}))
		joined := rawRoom(resp, "join", room)
		tl, _ = joined["timeline"].(map[string]any)
		if evs, ok := tl["events"].([]any); !ok || len(evs) != 0 || tl["limited"] != true {
			t.Errorf("joined room timeline with limit 0: %v, want no events and limited", joined["timeline"])
		}
	})
}

// TestSyncNewlyLeftRoomIncremental: an incremental sync after the user left
// gives the leave in the timeline and no state (nothing changed before it
// that the client does not have), even with history_visibility joined.
func TestSyncNewlyLeftRoomIncremental(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", InitialState: []*event.Event{{
			Type: event.StateHistoryVisibility, StateKey: new(string),
			Content: event.Content{Raw: map[string]any{"history_visibility": "joined"}},
		}}}, bob)
		filter := `{"room":{"include_leave":true}}`
		since := syncOnce(t, alice, "", filter, 0).NextBatch
		must(alice.LeaveRoom(ctx, room))

		resp := must(rawSync(t, alice, map[string]string{"timeout": "0", "filter": filter, "since": since}))
		left := rawRoom(resp, "leave", room)
		if left == nil {
			t.Fatalf("room missing from rooms.leave: %v", resp["rooms"])
		}
		if st := rawEvents(left, "state"); len(st) != 0 {
			t.Errorf("state of a newly left room in an incremental sync: %v, want none", st)
		}
		tl := rawEvents(left, "timeline")
		if len(tl) != 1 {
			t.Fatalf("timeline: %v, want alice's leave alone", tl)
		}
		ev := tl[0].(map[string]any)
		if ev["type"] != "m.room.member" || ev["sender"] != string(alice.UserID) ||
			ev["content"].(map[string]any)["membership"] != "leave" {
			t.Errorf("timeline event %v, want alice's leave", ev)
		}
	})
}

// TestSyncNewlyJoinedRoomLimited: a room joined since the token is new to
// the client: its timeline is marked limited, so the client knows there is
// history before it to paginate (as Synapse does).
func TestSyncNewlyJoinedRoomLimited(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		room := shareRoom(t, alice)
		sendText(t, alice, room, "one")
		filter := `{"room":{"timeline":{"limit":10,"types":["m.room.message"]},"state":{"types":[]}}}`
		since := syncOnce(t, bob, "", filter, 0).NextBatch
		sendText(t, alice, room, "two")
		joinRoom(t, bob, room)
		resp := syncOnce(t, bob, since, filter, 0)
		jr, ok := resp.Rooms.Join[room]
		if !ok {
			t.Fatalf("newly joined room missing")
		}
		for _, e := range jr.Timeline.Events {
			if e.Type != event.EventMessage {
				t.Errorf("filtered timeline has %s", e.Type)
			}
		}
		if !jr.Timeline.Limited {
			t.Errorf("newly joined room's timeline not limited: %d events", len(jr.Timeline.Events))
		}
	})
}

// presenceOf reports whether a sync answer carries presence for user.
func presenceOf(resp *mautrix.RespSync, user id.UserID) bool {
	for _, e := range resp.Presence.Events {
		if e.Sender == user {
			return true
		}
	}
	return false
}

// TestSyncPresenceOfNewMembers: an incremental sync tells the user the
// presence of users they newly share a room with (set before the since
// token), both when someone joins their room and when they join a room;
// the next sync does not repeat it.
func TestSyncPresenceOfNewMembers(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		alice, bob, carol := srv.Register(t, "alice"), srv.Register(t, "bob"), srv.Register(t, "carol")
		for _, c := range []*mautrix.Client{bob, carol} {
			if err := c.SetPresence(ctx, mautrix.ReqPresence{Presence: event.PresenceOnline}); err != nil {
				t.Fatal(err)
			}
		}
		room := shareRoom(t, alice)
		carolsRoom := shareRoom(t, carol)

		aliceSince := syncOnce(t, alice, "", "", 0).NextBatch
		joinRoom(t, bob, room)
		resp := syncOnce(t, alice, aliceSince, "", 0)
		if !presenceOf(resp, bob.UserID) {
			t.Errorf("alice does not see the presence of bob, who joined her room")
		}
		if again := syncOnce(t, alice, resp.NextBatch, "", 0); presenceOf(again, bob.UserID) {
			t.Errorf("bob's presence repeated in the next sync")
		}

		aliceSince = resp.NextBatch
		joinRoom(t, alice, carolsRoom)
		resp = syncOnce(t, alice, aliceSince, "", 0)
		if !presenceOf(resp, carol.UserID) {
			t.Errorf("alice does not see the presence of carol, whose room she joined")
		}
	})
}

// TestSyncIgnoredUsers: invites from users in m.ignored_user_list are not
// shown (initial and incremental sync), and their messages are left out of
// the timeline and /messages while their state events stay.
func TestSyncIgnoredUsers(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		alice, bob, chris := srv.Register(t, "alice"), srv.Register(t, "bob"), srv.Register(t, "chris")
		shared := shareRoom(t, bob, alice)
		if err := alice.SetAccountData(ctx, "m.ignored_user_list", map[string]any{
			"ignored_users": map[string]any{string(bob.UserID): map[string]any{}}}); err != nil {
			t.Fatal(err)
		}
		since := syncOnce(t, alice, "", "", 0).NextBatch

		bobRoom := must(bob.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{alice.UserID}})).RoomID
		chrisRoom := must(chris.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{alice.UserID}})).RoomID
		msg := sendText(t, bob, shared, "ignore me")
		topic := must(bob.SendStateEvent(ctx, shared, event.StateTopic, "", map[string]any{"topic": "still shown"})).EventID

		for name, s := range map[string]string{"incremental": since, "initial": ""} {
			resp := syncOnce(t, alice, s, "", 0)
			if _, ok := resp.Rooms.Invite[bobRoom]; ok {
				t.Errorf("%s sync shows the invite of ignored bob", name)
			}
			if _, ok := resp.Rooms.Invite[chrisRoom]; !ok {
				t.Errorf("%s sync lacks chris's invite", name)
			}
			tl := resp.Rooms.Join[shared].Timeline.Events
			if syncHasEvent(tl, msg) {
				t.Errorf("%s sync shows ignored bob's message", name)
			}
			if !syncHasEvent(tl, topic) {
				t.Errorf("%s sync lacks ignored bob's state event", name)
			}
		}
		// /messages leaves them out the same way.
		page := must(alice.Messages(ctx, shared, "", "", mautrix.DirectionBackward, nil, 100))
		if syncHasEvent(page.Chunk, msg) || !syncHasEvent(page.Chunk, topic) {
			t.Errorf("/messages shows ignored bob's message or lacks his state event")
		}
	})
}

// TestRoomForgottenHidden: a forgotten room is gone from initial syncs (with
// include_leave too), an incremental sync from before the leave still shows
// the leave, and its history can no longer be read (403 even without dir).
func TestRoomForgottenHidden(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		room := shareRoom(t, alice, bob)
		sendText(t, alice, room, "hello")
		beforeLeave := syncOnce(t, alice, "", "", 0).NextBatch
		must(alice.LeaveRoom(ctx, room))
		must(alice.ForgetRoom(ctx, room))
		sendText(t, bob, room, "after")

		filter := `{"room":{"include_leave":true}}`
		resp := must(rawSync(t, alice, map[string]string{"timeout": "0", "filter": filter}))
		for _, sec := range []string{"join", "invite", "leave", "knock"} {
			if rawRoom(resp, sec, room) != nil {
				t.Errorf("forgotten room in rooms.%s of an initial sync", sec)
			}
		}
		resp = must(rawSync(t, alice, map[string]string{"timeout": "0", "filter": filter, "since": beforeLeave}))
		if rawRoom(resp, "leave", room) == nil {
			t.Errorf("the leave of a forgotten room missing from an incremental sync from before it")
		}

		base := "/_matrix/client/v3/rooms/" + url.PathEscape(string(room))
		for _, path := range []string{"/messages", "/messages?dir=b", "/members", "/state"} {
			r := clientCall(t, alice, "GET", base+path, nil)
			if r.Status != 403 || r.errcode() != "M_FORBIDDEN" {
				t.Errorf("GET %s of a forgotten room: %d %s, want 403 M_FORBIDDEN", path, r.Status, r.Raw)
			}
		}
		// Not in the room at all and no dir: still the access answer first.
		carol := srv.Register(t, "carol")
		if r := clientCall(t, carol, "GET", base+"/messages", nil); r.Status != 403 {
			t.Errorf("GET /messages without dir by a stranger: %d %s, want 403", r.Status, r.Raw)
		}
		// In the room, no dir: the parameter is required.
		if r := clientCall(t, bob, "GET", base+"/messages", nil); r.Status != 400 || r.errcode() != "M_INVALID_PARAM" {
			t.Errorf("GET /messages without dir by a member: %d %s, want 400 M_INVALID_PARAM", r.Status, r.Raw)
		}
	})
}

// TestMembersAtPrevBatch: /members?at=<a sync's prev_batch> gives the members
// at that point, not the current ones and not none.
func TestMembersAtPrevBatch(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		room := shareRoom(t, alice)
		sendText(t, alice, room, "Hello world!")
		resp := syncOnce(t, alice, "", "", 0)
		at := resp.Rooms.Join[room].Timeline.PrevBatch
		joinRoom(t, bob, room)
		sendText(t, bob, room, "Hello back")

		r := clientCall(t, alice, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(string(room))+"/members?at="+url.QueryEscape(at), nil)
		if r.Status != 200 {
			t.Fatalf("members at %s: %d %s", at, r.Status, r.Raw)
		}
		chunk, _ := r.Body["chunk"].([]any)
		var members []string
		for _, e := range chunk {
			members = append(members, e.(map[string]any)["state_key"].(string))
		}
		if len(members) != 1 || members[0] != string(alice.UserID) {
			t.Errorf("members at %s: %v, want alice alone", at, members)
		}
	})
}

// TestMessagesFilteredEnd: /messages with a filter that drops events still
// gives an end token with the events it returns (clients page on with it;
// the next page is empty and has none).
func TestMessagesFilteredEnd(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		alice := srv.Register(t, "alice")
		room := shareRoom(t, alice)
		sendText(t, alice, room, "test")
		must(alice.SendMessageEvent(ctx, room, event.EventMessage, map[string]any{
			"msgtype": "m.file", "body": "test.png", "url": "mxc://example.org/abc"}))
		base := "/_matrix/client/v3/rooms/" + url.PathEscape(string(room)) + "/messages?dir=b&filter=" +
			url.QueryEscape(`{"contains_url":true}`)
		r := clientCall(t, alice, "GET", base, nil)
		chunk, _ := r.Body["chunk"].([]any)
		end, _ := r.Body["end"].(string)
		if r.Status != 200 || len(chunk) != 1 || end == "" {
			t.Fatalf("filtered /messages: %d %s, want one event and an end token", r.Status, r.Raw)
		}
		r = clientCall(t, alice, "GET", base+"&from="+url.QueryEscape(end), nil)
		chunk, _ = r.Body["chunk"].([]any)
		if _, has := r.Body["end"]; r.Status != 200 || len(chunk) != 0 || has {
			t.Errorf("the page after the last: %d %s, want no events and no end", r.Status, r.Raw)
		}
	})
}

// TestSyncTimelineLimitedAlwaysSent: every timeline says whether it is
// limited, false included (clients and Complement read the key).
func TestSyncTimelineLimitedAlwaysSent(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice")
		room := shareRoom(t, alice)
		resp := must(rawSync(t, alice, map[string]string{"timeout": "0"}))
		tl, _ := rawRoom(resp, "join", room)["timeline"].(map[string]any)
		if limited, ok := tl["limited"].(bool); !ok || limited {
			t.Errorf("timeline of a small room: %v, want limited false", tl)
		}
	})
}

// TestSyncFullStateHasEndState: an initial sync whose timeline, filtered and
// limited, ends before later events still gives the state the room ends
// with: a state event shown in the timeline that a filtered event follows is
// in the state too, and so is a state event the filter hides (Synapse's union
// of the state at both ends of the timeline; Complement's
// TestSyncOmitsStateChangeOnFilteredEvents, where the name event came from a
// fork of the DAG).
func TestSyncFullStateHasEndState(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		alice := srv.Register(t, "alice")
		room := must(alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})).RoomID
		oldName := must(alice.SendStateEvent(ctx, room, event.StateRoomName, "", map[string]any{"name": "S1"})).EventID
		sendText(t, alice, room, "between")
		name := must(alice.SendStateEvent(ctx, room, event.StateRoomName, "", map[string]any{"name": "S2"})).EventID
		hidden := must(alice.SendStateEvent(ctx, room, event.NewEventType("please_filter_me"), "", map[string]any{"k": "v"})).EventID
		must(alice.SendMessageEvent(ctx, room, event.NewEventType("please_filter_me"), map[string]any{"body": "E5"}))

		resp := must(rawSync(t, alice, map[string]string{"timeout": "0",
			"filter": `{"room":{"timeline":{"not_types":["please_filter_me"],"limit":1}}}`}))
		joined := rawRoom(resp, "join", room)
		if tl := rawEvents(joined, "timeline"); len(tl) != 1 || tl[0].(map[string]any)["event_id"] != string(name) {
			t.Fatalf("timeline: %v, want the name event alone", joined["timeline"])
		}
		inState := map[string]int{}
		for i, e := range rawEvents(joined, "state") {
			inState[e.(map[string]any)["event_id"].(string)] = i + 1
		}
		// Both ends' events of the name slot, the older first (as Synapse;
		// Complement's TestKnocking reads the first match).
		if inState[string(oldName)] == 0 || inState[string(oldName)] > inState[string(name)] {
			t.Errorf("the name at the timeline's start %s missing or after the end's: %v", oldName, joined["state"])
		}
		// A complete timeline carries its state changes alone: the later of
		// two topics is not repeated in the state (Complement's TestKnocking).
		small := must(alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})).RoomID
		must(alice.SendStateEvent(ctx, small, event.StateTopic, "", map[string]any{"topic": "T1"}))
		t2 := must(alice.SendStateEvent(ctx, small, event.StateTopic, "", map[string]any{"topic": "T2"})).EventID
		full := rawRoom(must(rawSync(t, alice, map[string]string{"timeout": "0", "filter": `{"room":{"timeline":{"limit":50}}}`})), "join", small)
		for _, e := range rawEvents(full, "state") {
			if e.(map[string]any)["event_id"] == string(t2) {
				t.Errorf("a complete timeline's state change repeated in the state: %v", full["state"])
			}
		}
		if inState[string(name)] == 0 || inState[string(hidden)] == 0 {
			t.Errorf("state lacks the name event %v or the filtered state event %v: %v", inState[string(name)], inState[string(hidden)], joined["state"])
		}
	})
}

// TestSyncInitialShowsBansAndKicks: without include_leave an initial sync
// still lists a room the user was banned or kicked from under leave (as
// Synapse; Complement's TestUnbanViaInvite), never one they left themselves.
func TestSyncInitialShowsBansAndKicks(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		banned, kicked, left := shareRoom(t, alice, bob), shareRoom(t, alice, bob), shareRoom(t, alice, bob)
		must(alice.BanUser(ctx, banned, &mautrix.ReqBanUser{UserID: bob.UserID}))
		must(alice.KickUser(ctx, kicked, &mautrix.ReqKickUser{UserID: bob.UserID}))
		must(bob.LeaveRoom(ctx, left))
		resp := must(rawSync(t, bob, map[string]string{"timeout": "0"}))
		for room, want := range map[id.RoomID]string{banned: "ban", kicked: "leave"} {
			r := rawRoom(resp, "leave", room)
			found := false
			for _, e := range rawEvents(r, "timeline") {
				ev := e.(map[string]any)
				content, _ := ev["content"].(map[string]any)
				found = found || (ev["type"] == "m.room.member" && ev["state_key"] == string(bob.UserID) && content["membership"] == want)
			}
			if !found {
				t.Errorf("room %s (%s) in the initial sync: %v", room, want, r)
			}
		}
		if rawRoom(resp, "leave", left) != nil {
			t.Errorf("a room bob left himself is in the initial sync without include_leave")
		}
	})
}
