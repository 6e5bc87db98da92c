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

// threadReply sends a reply in root's thread as c.
func threadReply(t *testing.T, c *mautrix.Client, room id.RoomID, root id.EventID, body string) id.EventID {
	t.Helper()
	return must(c.SendMessageEvent(context.Background(), room, event.EventMessage, map[string]any{"msgtype": "m.text", "body": body,
		"m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": root}})).EventID
}

// TestThreadSummaryVisibility: /threads summarises a thread with the
// replies the user may see: a user who left sees neither the count nor the
// latest reply of what was said after.
func TestThreadSummaryVisibility(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		room := shareRoom(t, alice, bob)
		root := sendText(t, alice, room, "root")
		seen := threadReply(t, alice, room, root, "before bob left")
		must(bob.LeaveRoom(ctx, room))
		threadReply(t, alice, room, root, "after bob left")

		r := clientCall(t, bob, "GET", "/_matrix/client/v1/rooms/"+url.PathEscape(string(room))+"/threads", nil)
		if r.Status != 200 || len(chunk(r.Body)) != 1 {
			t.Fatalf("threads: %d %s", r.Status, r.Raw)
		}
		summary := obj(obj(obj(obj(chunk(r.Body)[0])["unsigned"])["m.relations"])["m.thread"])
		if summary["count"] != float64(1) || obj(summary["latest_event"])["event_id"] != string(seen) {
			t.Errorf("bob's thread summary: count %v, latest %v; want 1 and %s", summary["count"], obj(summary["latest_event"])["event_id"], seen)
		}
		// Alice, still in the room, sees both.
		r = clientCall(t, alice, "GET", "/_matrix/client/v1/rooms/"+url.PathEscape(string(room))+"/threads", nil)
		if summary := obj(obj(obj(obj(chunk(r.Body)[0])["unsigned"])["m.relations"])["m.thread"]); summary["count"] != float64(2) {
			t.Errorf("alice's thread summary: count %v, want 2", summary["count"])
		}
	})
}

// joinedHistoryRoom creates a room as creator whose history is visible to
// joined members only.
func joinedHistoryRoom(t *testing.T, creator *mautrix.Client) id.RoomID {
	t.Helper()
	return createRoom(t, creator, &mautrix.ReqCreateRoom{Preset: "public_chat", InitialState: []*event.Event{{
		Type: event.StateHistoryVisibility, StateKey: new(string),
		Content: event.Content{Parsed: &event.HistoryVisibilityEventContent{HistoryVisibility: event.HistoryVisibilityJoined}},
	}}})
}

// TestMembersAtClampedToVisibleHistory: GET /members?at= does not show a
// joined user the members at a point of a joined-history room before they
// joined: at is moved to the first point they may see.
func TestMembersAtClampedToVisibleHistory(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		alice, bob, carol := srv.Register(t, "alice"), srv.Register(t, "bob"), srv.Register(t, "carol")
		room := joinedHistoryRoom(t, alice)
		joinRoom(t, carol, room)
		early := syncOnce(t, alice, "", "", 0).NextBatch // carol is in the room here
		must(carol.LeaveRoom(ctx, room))
		joinRoom(t, bob, room)

		r := clientCall(t, bob, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(string(room))+"/members?at="+url.QueryEscape(early), nil)
		if r.Status != 200 {
			t.Fatalf("members at: %d %s", r.Status, r.Raw)
		}
		got := map[string]string{}
		for _, e := range chunk(r.Body) {
			got[obj(e)["state_key"].(string)] = obj(obj(e)["content"])["membership"].(string)
		}
		if got[string(carol.UserID)] == "join" || got[string(bob.UserID)] != "join" {
			t.Errorf("bob sees the members before his join: %v", got)
		}
		// Alice, there all along, sees them as they were.
		r = clientCall(t, alice, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(string(room))+"/members?at="+url.QueryEscape(early), nil)
		got = map[string]string{}
		for _, e := range chunk(r.Body) {
			got[obj(e)["state_key"].(string)] = obj(obj(e)["content"])["membership"].(string)
		}
		if got[string(carol.UserID)] != "join" {
			t.Errorf("alice's members at the early token: %v", got)
		}
	})
}
