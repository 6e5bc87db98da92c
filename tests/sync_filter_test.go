package tests

import (
	"context"
	"net/url"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

// TestSyncFilterContainsURL: contains_url is accepted in every section of a
// sync filter, including those whose items have no content to look into
// (presence, typing, receipts): they have no url, so true drops them and
// false keeps them; never a 500. Account data is filtered on its content.
func TestSyncFilterContainsURL(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		room := shareRoom(t, alice, bob)
		msg := sendText(t, bob, room, "hello")
		for _, err := range []error{
			alice.SetAccountData(ctx, "org.example.global", map[string]any{"url": "mxc://x/y"}),
			alice.SetRoomAccountData(ctx, room, "org.example.room", map[string]any{"k": 1}),
			alice.SendReceipt(ctx, room, msg, event.ReceiptTypeRead, nil),
			bob.SetPresence(ctx, mautrix.ReqPresence{Presence: event.PresenceOnline}),
		} {
			if err != nil {
				t.Fatal(err)
			}
		}
		must(alice.UserTyping(ctx, room, true, 30*time.Second))

		sections := []struct {
			name   string
			filter func(containsURL string) string
			// present reports whether the section's items are in the answer.
			present func(body map[string]any) bool
		}{
			{"account_data", func(c string) string { return `{"account_data":{"contains_url":` + c + `}}` },
				func(b map[string]any) bool { return len(events(b, "account_data")) > 0 }},
			{"presence", func(c string) string { return `{"presence":{"contains_url":` + c + `}}` },
				func(b map[string]any) bool { return len(events(b, "presence")) > 0 }},
			{"room.account_data", func(c string) string { return `{"room":{"account_data":{"contains_url":` + c + `}}}` },
				func(b map[string]any) bool { return len(events(obj(joinedRoom(b, room)), "account_data")) > 0 }},
			{"room.ephemeral", func(c string) string { return `{"room":{"ephemeral":{"contains_url":` + c + `}}}` },
				func(b map[string]any) bool { return len(events(obj(joinedRoom(b, room)), "ephemeral")) > 0 }},
			{"room.timeline", func(c string) string { return `{"room":{"timeline":{"contains_url":` + c + `}}}` },
				func(b map[string]any) bool { return len(events(obj(joinedRoom(b, room)), "timeline")) > 0 }},
			{"room.state", func(c string) string { return `{"room":{"timeline":{"limit":1},"state":{"contains_url":` + c + `}}}` },
				func(b map[string]any) bool { return len(events(obj(joinedRoom(b, room)), "state")) > 0 }},
		}
		for _, sec := range sections {
			for _, c := range []string{"true", "false"} {
				resp := clientCall(t, alice, "GET", "/_matrix/client/v3/sync?filter="+url.QueryEscape(sec.filter(c)), nil)
				if resp.Status != 200 {
					t.Errorf("%s contains_url %s: status %d %s", sec.name, c, resp.Status, resp.Raw)
					continue
				}
				if got := sec.present(resp.Body); c == "false" && !got {
					t.Errorf("%s contains_url false dropped the section's items: %s", sec.name, resp.Raw)
				}
				if sec.name == "account_data" {
					types := map[string]bool{}
					for _, e := range events(resp.Body, "account_data") {
						types[obj(e)["type"].(string)] = true
					}
					// Only org.example.global has a url.
					if types["org.example.global"] != (c == "true") || types["m.push_rules"] == (c == "true") {
						t.Errorf("account_data contains_url %s: got types %v", c, types)
					}
				}
			}
		}
	})
}

// events is body[key].events.
func events(body map[string]any, key string) []any {
	l, _ := obj(body[key])["events"].([]any)
	return l
}

// joinedRoom is body.rooms.join[room].
func joinedRoom(body map[string]any, room id.RoomID) any {
	return obj(obj(body["rooms"])["join"])[string(room)]
}
