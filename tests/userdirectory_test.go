package tests

import (
	"context"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

// The user directory finds users who share a room with the searcher or sit
// in public rooms, by user ID or display name, and never a stranger in a
// private room.
func TestUserDirectorySearch(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		carol, dave := srv.Register(t, "carol"), srv.Register(t, "dave")
		erin := srv.Register(t, "erin")
		must(struct{}{}, bob.SetDisplayName(ctx, "Bobby Tables"))
		must(struct{}{}, carol.SetDisplayName(ctx, "Bobcat Stranger"))
		must(struct{}{}, dave.SetDisplayName(ctx, "Bob Public"))
		must(struct{}{}, erin.SetDisplayName(ctx, "Élodie Ünïcode"))

		// alice and bob share a private room; erin too.
		private := must(alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{bob.UserID, erin.UserID}})).RoomID
		must(bob.JoinRoomByID(ctx, private))
		must(erin.JoinRoomByID(ctx, private))
		// carol is alone in a private room; dave alone in a public one.
		must(carol.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"}))
		must(dave.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"}))

		ids := func(resp *mautrix.RespSearchUserDirectory) map[id.UserID]string {
			out := map[id.UserID]string{}
			for _, u := range resp.Results {
				// The spec's field is display_name; mautrix v0.32 reads
				// "displayname" (a client quirk), so it lands in Extra.
				name, _ := u.Extra["display_name"].(string)
				out[u.UserID] = name + "|"
			}
			return out
		}
		res := must(alice.SearchUserDirectory(ctx, "bob", 10))
		got := ids(res)
		if got[bob.UserID] != "Bobby Tables|" || got[dave.UserID] != "Bob Public|" || len(got) != 2 || res.Limited {
			t.Errorf(`search "bob": %+v`, res)
		}
		if _, ok := got[carol.UserID]; ok {
			t.Error("a stranger in a private room was found")
		}
		// Case-insensitive, on display names and user IDs, Unicode included.
		for term, want := range map[string]id.UserID{"TABLES": bob.UserID, "@Bob:": bob.UserID, "élodie": erin.UserID, "ÜNÏ": erin.UserID} {
			if got := ids(must(alice.SearchUserDirectory(ctx, term, 10))); len(got) != 1 || got[want] == "" {
				t.Errorf("search %q: %v", term, got)
			}
		}
		if got := ids(must(alice.SearchUserDirectory(ctx, "carol", 10))); len(got) != 0 {
			t.Errorf(`search "carol": %v`, got)
		}
		// Wildcards are literal.
		if got := ids(must(alice.SearchUserDirectory(ctx, "%", 10))); len(got) != 0 {
			t.Errorf(`search "%%": %v`, got)
		}
		// carol sees dave (public room), not bob, and never herself
		// (her display name matches; Complement counts the results).
		if got := ids(must(carol.SearchUserDirectory(ctx, "bob", 10))); len(got) != 1 || got[dave.UserID] == "" {
			t.Errorf(`carol's search "bob": %v`, got)
		}
		// limit and limited.
		res = must(alice.SearchUserDirectory(ctx, "bob", 1))
		if len(res.Results) != 1 || !res.Limited || res.Results[0].UserID != dave.UserID && res.Results[0].UserID != bob.UserID {
			t.Errorf("limit 1: %+v", res)
		}

		// Bad input.
		for _, tc := range []struct {
			body    any
			status  int
			errcode string
		}{
			{map[string]any{"search_term": "bob", "limit": 0}, 400, "M_INVALID_PARAM"},
			{map[string]any{"search_term": "bob", "limit": -3}, 400, "M_INVALID_PARAM"},
			{map[string]any{"search_term": "bob", "limit": "ten"}, 400, "M_BAD_JSON"},
			{map[string]any{"search_term": "bob", "limit": 1.5}, 400, "M_BAD_JSON"},
			{map[string]any{"search_term": 7}, 400, "M_BAD_JSON"},
			{map[string]any{"limit": 5}, 400, "M_MISSING_PARAM"},
			{map[string]any{"search_term": string(make([]byte, 300))}, 400, "M_BAD_JSON"},
			{map[string]any{"search_term": stringOf('x', 300)}, 400, "M_INVALID_PARAM"},
			{"not json", 400, "M_NOT_JSON"},
			{map[string]any{"search_term": "bob", "limit": 100000}, 200, ""},
		} {
			r := clientCall(t, alice, "POST", "/_matrix/client/v3/user_directory/search", tc.body)
			if r.Status != tc.status || r.errcode() != tc.errcode {
				t.Errorf("search %v: %d %s, want %d %s", tc.body, r.Status, r.Raw, tc.status, tc.errcode)
			}
		}
		r := httpCall(t, srv.URL, "POST", "/_matrix/client/v3/user_directory/search", "", map[string]any{"search_term": "bob"})
		if r.Status != 401 || r.errcode() != "M_MISSING_TOKEN" {
			t.Errorf("unauthenticated search: %d %s", r.Status, r.Raw)
		}
	})
}

func stringOf(c byte, n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = c
	}
	return string(b)
}
