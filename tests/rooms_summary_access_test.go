package tests

import (
	"context"
	"net/url"
	"slices"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

// TestSummaryAndHierarchyAccess: a restricted room is summarised (and listed
// in a space's hierarchy) only for users who meet one of its allow
// conditions; knockable rooms are summarised for anyone, anonymous callers
// included; a private room for no stranger (space_hierarchy.yaml,
// room_summary.yaml, MSC3266).
func TestSummaryAndHierarchyAccess(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		alice, bob, carol := srv.Register(t, "alice"), srv.Register(t, "bob"), srv.Register(t, "carol")
		// Bob is in the allowed room; Carol is not.
		allowedRoom := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"}, bob)
		withJoinRule := func(content map[string]any) id.RoomID {
			return createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat", InitialState: []*event.Event{{
				Type: event.StateJoinRules, StateKey: new(string), Content: event.Content{Raw: content},
			}}})
		}
		allow := []any{map[string]any{"type": "m.room_membership", "room_id": string(allowedRoom)}}
		restricted := withJoinRule(map[string]any{"join_rule": "restricted", "allow": allow})
		knock := withJoinRule(map[string]any{"join_rule": "knock"})
		knockRestricted := withJoinRule(map[string]any{"join_rule": "knock_restricted", "allow": allow})
		private := withJoinRule(map[string]any{"join_rule": "invite"})

		summary := func(c *mautrix.Client, room id.RoomID) rawResp {
			token := ""
			if c != nil {
				token = c.AccessToken
			}
			return httpCall(t, srv.URL, "GET", "/_matrix/client/v1/room_summary/"+url.PathEscape(string(room)), token, nil)
		}
		cases := []struct {
			who    string
			c      *mautrix.Client
			room   id.RoomID
			name   string
			status int
		}{
			{"bob", bob, restricted, "restricted", 200},
			{"carol", carol, restricted, "restricted", 404},
			{"anonymous", nil, restricted, "restricted", 404},
			{"carol", carol, knock, "knock", 200},
			{"anonymous", nil, knock, "knock", 200},
			{"carol", carol, knockRestricted, "knock_restricted", 200},
			{"anonymous", nil, knockRestricted, "knock_restricted", 200},
			{"carol", carol, private, "invite", 404},
		}
		for _, tc := range cases {
			r := summary(tc.c, tc.room)
			if r.Status != tc.status {
				t.Errorf("summary of the %s room for %s: %d %s, want %d", tc.name, tc.who, r.Status, r.Raw, tc.status)
				continue
			}
			if r.Status != 200 {
				continue
			}
			if _, has := r.Body["membership"]; has == (tc.c == nil) {
				t.Errorf("summary of the %s room for %s: membership %v (absent only when anonymous)", tc.name, tc.who, r.Body["membership"])
			}
			if tc.name == "restricted" || tc.name == "knock_restricted" {
				if ids, _ := r.Body["allowed_room_ids"].([]any); len(ids) != 1 || ids[0] != string(allowedRoom) {
					t.Errorf("summary of the %s room: allowed_room_ids %v", tc.name, r.Body["allowed_room_ids"])
				}
			}
		}

		// A public space with all of them as children.
		space := must(alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", CreationContent: map[string]any{"type": "m.space"}})).RoomID
		for _, child := range []id.RoomID{restricted, knock, private} {
			must(alice.SendStateEvent(ctx, space, event.StateSpaceChild, string(child), map[string]any{"via": []string{"localhost"}}))
		}
		listed := func(c *mautrix.Client) []id.RoomID {
			var out []id.RoomID
			for _, r := range must(c.Hierarchy(ctx, space, &mautrix.ReqHierarchy{})).Rooms {
				out = append(out, r.RoomID)
			}
			return out
		}
		if got := listed(bob); !slices.Contains(got, restricted) || !slices.Contains(got, knock) || slices.Contains(got, private) {
			t.Errorf("bob's hierarchy %v: want the restricted and knock rooms, not the private one", got)
		}
		if got := listed(carol); slices.Contains(got, restricted) || !slices.Contains(got, knock) || slices.Contains(got, private) {
			t.Errorf("carol's hierarchy %v: want the knock room only", got)
		}
	})
}
