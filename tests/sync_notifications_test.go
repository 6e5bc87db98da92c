package tests

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

// notificationIDs pages through GET /notifications as c with the given
// page size and returns the event IDs, newest first.
func notificationIDs(t *testing.T, c *mautrix.Client, limit int) []id.EventID {
	t.Helper()
	var out []id.EventID
	from := ""
	for page := 0; page < 100; page++ {
		path := fmt.Sprintf("/_matrix/client/v3/notifications?limit=%d", limit)
		if from != "" {
			path += "&from=" + url.QueryEscape(from)
		}
		r := clientCall(t, c, "GET", path, nil)
		if r.Status != 200 {
			t.Fatalf("notifications: %d %s", r.Status, r.Raw)
		}
		list, _ := r.Body["notifications"].([]any)
		for _, n := range list {
			out = append(out, id.EventID(obj(obj(n)["event"])["event_id"].(string)))
		}
		next, _ := r.Body["next_token"].(string)
		if next == "" {
			return out
		}
		from = next
	}
	t.Fatal("notifications never end")
	return nil
}

// TestNotificationsOnlyWhileJoined: unread counts and GET /notifications
// cover only what was sent while the user was in the room (as Synapse, which
// records push actions for the members at send time): not a room's history
// from before they joined (hidden by joined history visibility, or shared),
// nor what was said while they were away.
func TestNotificationsOnlyWhileJoined(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		alice := srv.Register(t, "alice")
		for _, vis := range []event.HistoryVisibility{event.HistoryVisibilityJoined, event.HistoryVisibilityShared} {
			bob := srv.Register(t, "bob"+string(vis))
			room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", InitialState: []*event.Event{{
				Type: event.StateHistoryVisibility, StateKey: new(string),
				Content: event.Content{Parsed: &event.HistoryVisibilityEventContent{HistoryVisibility: vis}},
			}}})
			for i := 0; i < 30; i++ {
				sendText(t, alice, room, fmt.Sprint("before bob ", i))
			}
			joinRoom(t, bob, room)
			if c := syncCountsIn(syncOnce(t, bob, "", "", 0), room); c == nil || c.NotificationCount != 0 {
				t.Errorf("%s: bob's count right after joining: %+v, want 0", vis, c)
			}
			var want []id.EventID
			want = append(want, sendText(t, alice, room, "welcome"), sendText(t, alice, room, "again"))
			must(bob.LeaveRoom(ctx, room))
			for i := 0; i < 3; i++ {
				sendText(t, alice, room, fmt.Sprint("while bob is away ", i))
			}
			joinRoom(t, bob, room)
			want = append(want, sendText(t, alice, room, "welcome back"))
			slices.Reverse(want)

			if c := syncCountsIn(syncOnce(t, bob, "", "", 0), room); c == nil || c.NotificationCount != 3 {
				t.Errorf("%s: bob's count: %+v, want 3", vis, c)
			}
			for _, limit := range []int{1, 2, 20} {
				if got := notificationIDs(t, bob, limit); !slices.Equal(got, want) {
					t.Errorf("%s: notifications in pages of %d: %v, want %v", vis, limit, got, want)
				}
			}
		}
	})
}

// TestNotificationsPastQuietStretch: a room's scan per request is bounded;
// a notification behind a long stretch of events that notify no one is
// still reached by following next_token.
func TestNotificationsPastQuietStretch(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		room := shareRoom(t, alice, bob)
		old := sendText(t, alice, room, "old news")
		for i := 0; i < 320; i++ {
			sendText(t, bob, room, fmt.Sprint("talking to myself ", i)) // own events never notify
		}
		recent := sendText(t, alice, room, "recent")
		if got := notificationIDs(t, bob, 20); !slices.Equal(got, []id.EventID{recent, old}) {
			t.Errorf("notifications %v, want %v", got, []id.EventID{recent, old})
		}
	})
}
