package tests

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"maunium.net/go/mautrix/pushrules"

	"github.com/myelin-chat/myelin/homeserver/testserver"
	"github.com/myelin-chat/myelin/internal/config"
)

// escapeAll percent-encodes every byte but unreserved ones, as browser
// clients do (encodeURIComponent, and "!" too): "!room:server" becomes
// "%21room%3Aserver".
func escapeAll(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-_.~", c) >= 0 {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// TestPercentEncodedPathIDs: room, user, event and push rule IDs that arrive
// percent-encoded in the path are decoded before use, on the typing,
// receipt, read marker, presence and push rule endpoints.
func TestPercentEncodedPathIDs(t *testing.T) {
	presenceOn := testserver.Options{Configure: func(c *config.Config) { c.Presence.Enabled = true }}
	forEachBackendWith(t, presenceOn, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		room := shareRoom(t, alice, bob)
		ev := sendText(t, bob, room, "hello")
		roomPath := "/_matrix/client/v3/rooms/" + escapeAll(room.String())
		alicePresence := "/_matrix/client/v3/presence/" + escapeAll(alice.UserID.String()) + "/status"
		calls := []struct {
			method, path string
			body         any
		}{
			{"PUT", roomPath + "/typing/" + escapeAll(alice.UserID.String()), map[string]any{"typing": true, "timeout": 30000}},
			{"POST", roomPath + "/receipt/m.read/" + escapeAll(ev.String()), map[string]any{}},
			{"POST", roomPath + "/read_markers", map[string]any{"m.fully_read": ev}},
			{"PUT", alicePresence, map[string]any{"presence": "unavailable", "status_msg": "away"}},
			{"PUT", "/_matrix/client/v3/pushrules/global/content/" + escapeAll("cake:lie"), map[string]any{"pattern": "cake", "actions": []string{"notify"}}},
		}
		for _, c := range calls {
			if r := clientCall(t, alice, c.method, c.path, c.body); r.Status != http.StatusOK {
				t.Errorf("%s %s = %d %s", c.method, c.path, r.Status, r.Raw)
			}
		}

		// Each write landed under the decoded ID. Bob, who shares the room,
		// reads alice's presence through the encoded path (before her /sync
		// sets her online).
		if r := clientCall(t, bob, "GET", alicePresence, nil); r.Status != http.StatusOK || r.Body["presence"] != "unavailable" || r.Body["status_msg"] != "away" {
			t.Errorf("GET %s = %d %s", alicePresence, r.Status, r.Raw)
		}
		// Her typing, receipt and read marker are in the room in her sync.
		resp := syncOnce(t, alice, "", "", 0)
		if typing := syncTypingIn(resp, room); len(typing) != 1 || typing[0] != alice.UserID {
			t.Errorf("typing in %s = %v, want [%s]", room, typing, alice.UserID)
		}
		if !syncHasReceipt(resp, room, ev, "m.read", alice.UserID) {
			t.Errorf("alice's m.read receipt on %s missing from sync", ev)
		}
		fullyRead := false
		if jr := resp.Rooms.Join[room]; jr != nil {
			for _, e := range jr.AccountData.Events {
				fullyRead = fullyRead || e.Type.Type == "m.fully_read" && e.Content.Raw["event_id"] == ev.String()
			}
		}
		if !fullyRead {
			t.Errorf("m.fully_read marker on %s missing from room account data", ev)
		}
		// mautrix sends ":" unescaped: the same rule either way.
		if rule, err := alice.GetPushRule(ctx, "global", pushrules.ContentRule, "cake:lie"); err != nil || rule.Pattern != "cake" {
			t.Errorf("push rule cake:lie = %+v, %v", rule, err)
		}
	})
}
