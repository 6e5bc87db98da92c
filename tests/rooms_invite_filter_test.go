package tests

import (
	"context"
	"net/url"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

// TestInviteFilterGlobs: a user's org.matrix.msc4155.invite_permission_config
// blocks (403) or silently drops invites from users and servers matched by
// globs, allowed_* winning, user rules before server rules, null lists
// ignored; in createRoom's invite list a filtered invitee is left out.
func TestInviteFilterGlobs(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		bob, eve := srv.Register(t, "bob"), srv.Register(t, "eve-1")
		n := 0
		withFilter := func(cfg map[string]any) *mautrix.Client {
			n++
			alice := srv.Register(t, "alice"+string(rune('a'+n)))
			if cfg != nil {
				must(struct{}{}, alice.SetAccountData(ctx, "org.matrix.msc4155.invite_permission_config", cfg))
			}
			return alice
		}
		invite := func(from *mautrix.Client, to *mautrix.Client) rawResp {
			room := createRoom(t, from, &mautrix.ReqCreateRoom{Preset: "private_chat"})
			return clientCall(t, from, "POST", roomPath(room, "/invite"), map[string]any{"user_id": to.UserID})
		}
		invited := func(c *mautrix.Client) int {
			return len(syncOnce(t, c, "", "", 0).Rooms.Invite)
		}
		for _, tc := range []struct {
			name    string
			cfg     map[string]any
			from    *mautrix.Client
			status  int
			seen    bool
			errcode string
		}{
			{"no rules", map[string]any{}, bob, 200, true, ""},
			{"user blocked", map[string]any{"blocked_users": []string{string(bob.UserID)}}, bob, 403, false, "ORG.MATRIX.MSC4155.INVITE_BLOCKED"},
			{"user ignored", map[string]any{"ignored_users": []string{string(bob.UserID)}}, bob, 200, false, ""},
			{"server blocked", map[string]any{"blocked_servers": []string{"localhost"}}, bob, 403, false, "ORG.MATRIX.MSC4155.INVITE_BLOCKED"},
			{"server ignored", map[string]any{"ignored_servers": []string{"local*"}}, bob, 200, false, ""},
			{"server glob", map[string]any{"blocked_servers": []string{"loc?lhost"}}, bob, 403, false, "ORG.MATRIX.MSC4155.INVITE_BLOCKED"},
			{"user glob", map[string]any{"blocked_users": []string{"@eve-?*"}}, eve, 403, false, "ORG.MATRIX.MSC4155.INVITE_BLOCKED"},
			{"user glob no match", map[string]any{"blocked_users": []string{"@eve-?*"}}, bob, 200, true, ""},
			{"case-insensitive", map[string]any{"blocked_users": []string{"@BOB:LOCALHOST"}}, bob, 403, false, "ORG.MATRIX.MSC4155.INVITE_BLOCKED"},
			{"allowed user on a blocked server", map[string]any{"allowed_users": []string{string(bob.UserID)}, "blocked_servers": []string{"localhost"}}, bob, 200, true, ""},
			{"blocked user on an allowed server", map[string]any{"blocked_users": []string{string(bob.UserID)}, "allowed_servers": []string{"localhost"}}, bob, 403, false, "ORG.MATRIX.MSC4155.INVITE_BLOCKED"},
			{"allowed beats ignored and blocked", map[string]any{"ignored_users": []string{string(bob.UserID)}, "blocked_users": []string{string(bob.UserID)}, "allowed_users": []string{string(bob.UserID)}}, bob, 200, true, ""},
			{"null lists", map[string]any{"allowed_users": nil, "ignored_users": nil, "blocked_users": nil, "allowed_servers": nil, "ignored_servers": nil, "blocked_servers": nil}, bob, 200, true, ""},
			{"bad entries", map[string]any{"blocked_users": []any{5, nil}, "blocked_servers": "localhost"}, bob, 200, true, ""},
		} {
			alice := withFilter(tc.cfg)
			r := invite(tc.from, alice)
			if r.Status != tc.status || r.errcode() != tc.errcode {
				t.Errorf("%s: invite = %d %s", tc.name, r.Status, r.Raw)
			}
			if got := invited(alice) == 1; got != tc.seen {
				t.Errorf("%s: invite seen %v, want %v", tc.name, got, tc.seen)
			}
		}

		// createRoom: the room is made, the blocked invitee left out.
		alice := withFilter(map[string]any{"blocked_users": []string{string(bob.UserID)}})
		carol := srv.Register(t, "carol")
		room := createRoom(t, bob, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{alice.UserID, carol.UserID}})
		if invited(alice) != 0 || invited(carol) != 1 {
			t.Errorf("createRoom invites: alice %d carol %d", invited(alice), invited(carol))
		}
		// A state PUT invite is the same invite.
		r := clientCall(t, bob, "PUT", roomPath(room, "/state/m.room.member/"+url.PathEscape(string(alice.UserID))), map[string]any{"membership": "invite"})
		if r.Status != 403 {
			t.Errorf("member PUT invite of a blocking user: %d %s", r.Status, r.Raw)
		}
		if _, err := alice.JoinRoomByID(ctx, room); err == nil {
			t.Error("alice joined a private room she was never invited to")
		}
	})
}
