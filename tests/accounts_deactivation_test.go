package tests

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

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
