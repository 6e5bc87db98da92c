package tests

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

// TestPutStateUnchanged: a state PUT whose content equals the current
// event's, by the same sender, returns the existing event ID and adds no
// event; a different content or another sender makes a new event.
func TestPutStateUnchanged(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		alice := srv.Register(t, "alice")
		bob := srv.Register(t, "bob")
		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat",
			PowerLevelOverride: &event.PowerLevelsEventContent{Users: map[id.UserID]int{"@alice:localhost": 100, "@bob:localhost": 100}}}, bob)
		topic := func(c *mautrix.Client, raw map[string]any) id.EventID {
			return must(c.SendStateEvent(ctx, room, event.StateTopic, "", raw)).EventID
		}
		first := topic(alice, map[string]any{"topic": "hello", "n": 1})
		count := func() int {
			return len(must(alice.Messages(ctx, room, "", "", mautrix.DirectionBackward, nil, 200)).Chunk)
		}
		before := count()
		// Same content with the keys in another order: the same event.
		if again := topic(alice, map[string]any{"n": 1, "topic": "hello"}); again != first {
			t.Fatalf("unchanged state PUT made a new event %s (first %s)", again, first)
		}
		if n := count(); n != before {
			t.Fatalf("unchanged state PUT added events: %d -> %d", before, n)
		}
		if changed := topic(alice, map[string]any{"topic": "hello", "n": 2}); changed == first {
			t.Fatal("changed content returned the old event")
		}
		byBob := topic(bob, map[string]any{"topic": "hello", "n": 2})
		if byBob == first || count() != before+2 {
			t.Fatalf("same content from another sender must be a new event (count %d, want %d)", count(), before+2)
		}
	})
}

// TestDeactivationLeavesRooms: deactivating an account leaves its joined
// rooms, rejects its pending invites and withdraws its knocks.
func TestDeactivationLeavesRooms(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		owner := srv.Register(t, "owner")
		dana := srv.Register(t, "dana")
		joined := shareRoom(t, owner, dana)
		invited := createRoom(t, owner, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{dana.UserID}})
		knocked := createRoom(t, owner, &mautrix.ReqCreateRoom{Preset: "private_chat", RoomVersion: "11"})
		must(owner.SendStateEvent(ctx, knocked, event.StateJoinRules, "", &event.JoinRulesEventContent{JoinRule: event.JoinRuleKnock}))
		must(dana.KnockRoom(ctx, knocked.String(), &mautrix.ReqKnockRoom{}))

		url := dana.BuildClientURL("v3", "account", "deactivate")
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader("{}"))
		req.Header.Set("Authorization", "Bearer "+dana.AccessToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var body struct {
			Session string `json:"session"`
		}
		err = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusUnauthorized || body.Session == "" {
			t.Fatalf("deactivate without auth: want 401 with a UIA session, got %d %v", resp.StatusCode, err)
		}
		session := body.Session
		if _, err := dana.MakeRequest(ctx, http.MethodPost, url, map[string]any{"auth": map[string]any{
			"type": "m.login.password", "session": session, "password": "password-dana",
			"identifier": map[string]any{"type": "m.id.user", "user": "dana"},
		}}, nil); err != nil {
			t.Fatalf("deactivate: %v", err)
		}
		for _, room := range []id.RoomID{joined, invited, knocked} {
			var member event.MemberEventContent
			if err := owner.StateEvent(ctx, room, event.StateMember, dana.UserID.String(), &member); err != nil {
				t.Fatalf("member event of dana in %s: %v", room, err)
			}
			if member.Membership != event.MembershipLeave {
				t.Errorf("dana's membership in %s after deactivation: %s, want leave", room, member.Membership)
			}
		}
		if m := must(owner.JoinedMembers(ctx, joined)); len(m.Joined) != 1 {
			t.Errorf("joined members after deactivation: %v", m.Joined)
		}
	})
}

// TestMessagesFilterIsInlineJSON: the spec (message_pagination.yaml) makes
// the filter of /messages and /context "a JSON RoomEventFilter", not a stored
// filter ID: an ID, or anything else that is not a filter object, is
// M_BAD_JSON (400), never a 500.
func TestMessagesFilterIsInlineJSON(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		alice := srv.Register(t, "alice")
		room := createRoom(t, alice, nil)
		ev := sendText(t, alice, room, "hi")
		filterID := must(alice.CreateFilter(ctx, &mautrix.Filter{Room: &mautrix.RoomFilter{Timeline: &mautrix.FilterPart{Limit: 5}}})).FilterID
		base := "/_matrix/client/v3/rooms/" + url.PathEscape(room.String())
		for _, f := range []string{filterID, "abc", "[]", `{"limit": "x"}`, "{"} {
			for _, path := range []string{base + "/messages?dir=b&filter=", base + "/context/" + url.PathEscape(ev.String()) + "?filter="} {
				r := clientCall(t, alice, http.MethodGet, path+url.QueryEscape(f), nil)
				if r.Status != http.StatusBadRequest || r.errcode() != "M_BAD_JSON" {
					t.Errorf("%s with filter %q: %d %s, want 400 M_BAD_JSON", path, f, r.Status, r.Raw)
				}
			}
		}
		if r := clientCall(t, alice, http.MethodGet, base+"/messages?dir=b&filter="+url.QueryEscape(`{"limit":1}`), nil); r.Status != http.StatusOK ||
			len(r.Body["chunk"].([]any)) != 1 {
			t.Errorf("inline filter: %d %s", r.Status, r.Raw)
		}
	})
}
