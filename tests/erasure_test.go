package tests

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

// deactivate deactivates c's account (password UIA), with or without erase.
func deactivate(t *testing.T, c *mautrix.Client, localpart string, erase bool) {
	t.Helper()
	ctx := context.Background()
	url := c.BuildClientURL("v3", "account", "deactivate")
	r := clientCall(t, c, http.MethodPost, "/_matrix/client/v3/account/deactivate", map[string]any{"erase": erase})
	session, _ := r.Body["session"].(string)
	if r.Status != http.StatusUnauthorized || session == "" {
		t.Fatalf("deactivate without auth: %d %s", r.Status, r.Raw)
	}
	if _, err := c.MakeRequest(ctx, http.MethodPost, url, map[string]any{"erase": erase, "auth": map[string]any{
		"type": "m.login.password", "session": session, "password": "password-" + localpart,
		"identifier": map[string]any{"type": "m.id.user", "user": localpart},
	}}, nil); err != nil {
		t.Fatalf("deactivate %s (erase %v): %v", localpart, erase, err)
	}
}

// TestErasure: alice (deactivated with erase) and dave (deactivated without)
// each sent a message and an image in a room bob was in. Bob still sees
// both; carol, who joins afterwards, sees alice's events redacted in
// /messages, /sync, sliding sync, /event and /context, and search finds
// nothing of hers; alice's image (and its blob) is gone, dave's is not.
func TestErasure(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		alice, bob, carol, dave := srv.Register(t, "alice"), srv.Register(t, "bob"), srv.Register(t, "carol"), srv.Register(t, "dave")
		if err := alice.SetDisplayName(ctx, "Alice Confidential"); err != nil {
			t.Fatal(err)
		}
		room := shareRoom(t, alice, bob, dave)

		type sent struct {
			msg, img id.EventID
			mxc      id.ContentURIString
			sum      string
		}
		send := func(c *mautrix.Client, word string) sent {
			body := []byte("\x89PNG fake image of " + word)
			up := must(c.UploadBytes(ctx, body, "image/png"))
			sum := sha256.Sum256(body)
			msg := must(c.SendText(ctx, room, "the secret word is "+word))
			img := must(c.SendMessageEvent(ctx, room, event.EventMessage, &event.MessageEventContent{
				MsgType: event.MsgImage, Body: word + ".png", URL: up.ContentURI.CUString()}))
			return sent{msg.EventID, img.EventID, up.ContentURI.CUString(), hex.EncodeToString(sum[:])}
		}
		a, d := send(alice, "xyzzyalice"), send(dave, "plughdave")
		download := func(s sent) int {
			return clientCall(t, bob, "GET", "/_matrix/client/v1/media/download/"+strings.TrimPrefix(string(s.mxc), "mxc://"), nil).Status
		}
		thumb := func(s sent) int {
			return clientCall(t, bob, "GET", "/_matrix/client/v1/media/thumbnail/"+strings.TrimPrefix(string(s.mxc), "mxc://")+"?width=32&height=32", nil).Status
		}
		if download(a) != 200 || download(d) != 200 {
			t.Fatalf("downloads before deactivation: %d %d", download(a), download(d))
		}
		_ = thumb(a) // a fake PNG has no thumbnail; a row would be erased too
		blob := func(sum string) bool {
			_, err := os.Stat(filepath.Join(srv.Config.DataDir, "media", "sha256", sum[:2], sum[2:4], sum))
			return err == nil
		}
		if !blob(a.sum) || !blob(d.sum) {
			t.Fatal("blobs missing before deactivation")
		}

		deactivate(t, dave, "dave", false)
		deactivate(t, alice, "alice", true)
		must(carol.JoinRoom(ctx, room.String(), nil))

		// content of an event as a reader gets it from /event
		eventContent := func(c *mautrix.Client, ev id.EventID) string {
			r := clientCall(t, c, "GET", "/_matrix/client/v3/rooms/"+room.String()+"/event/"+ev.String(), nil)
			if r.Status != 200 {
				t.Fatalf("/event %s: %d %s", ev, r.Status, r.Raw)
			}
			return gjson.Get(r.Raw, "content").Raw
		}
		messages := func(c *mautrix.Client) string {
			r := clientCall(t, c, "GET", "/_matrix/client/v3/rooms/"+room.String()+"/messages?dir=b&limit=100", nil)
			if r.Status != 200 {
				t.Fatalf("/messages: %d %s", r.Status, r.Raw)
			}
			return r.Raw
		}
		chunkContent := func(raw string, ev id.EventID) string {
			for _, e := range gjson.Get(raw, "chunk").Array() {
				if e.Get("event_id").Str == ev.String() {
					return e.Get("content").Raw
				}
			}
			t.Fatalf("%s not in %s", ev, raw)
			return ""
		}

		// Bob was in the room when they were sent: both as sent. (Alice's
		// join, with her display name, came before bob's: he sees it erased.)
		bm := messages(bob)
		for _, want := range []string{"xyzzyalice", "plughdave"} {
			if !strings.Contains(bm, want) {
				t.Errorf("bob's /messages lacks %q", want)
			}
		}
		if n := len(resultIDs(mustSearch(t, bob, map[string]any{"search_term": "xyzzyalice"}, ""))); n != 2 {
			t.Errorf("bob's search for alice's word: %d results, want 2 (text and image)", n)
		}

		// Carol joined after: alice's events redacted, dave's intact.
		cm := messages(carol)
		for _, ev := range []id.EventID{a.msg, a.img} {
			if c := chunkContent(cm, ev); c != "{}" {
				t.Errorf("carol's /messages: alice's %s has content %s, want {}", ev, c)
			}
			if c := eventContent(carol, ev); c != "{}" {
				t.Errorf("carol's /event: alice's %s has content %s, want {}", ev, c)
			}
		}
		if strings.Contains(cm, "xyzzyalice") || strings.Contains(cm, "Alice Confidential") {
			t.Errorf("carol's /messages shows erased content: %s", cm)
		}
		if !strings.Contains(chunkContent(cm, d.msg), "plughdave") || !strings.Contains(eventContent(carol, d.img), "plughdave") {
			t.Error("carol's /messages: dave's (not erased) events lost their content")
		}
		ctxResp := clientCall(t, carol, "GET", "/_matrix/client/v3/rooms/"+room.String()+"/context/"+a.img.String()+"?limit=10", nil)
		if ctxResp.Status != 200 || strings.Contains(ctxResp.Raw, "xyzzyalice") || !strings.Contains(ctxResp.Raw, "plughdave") {
			t.Errorf("carol's /context: %d %s", ctxResp.Status, ctxResp.Raw)
		}
		sync, err := rawSync(t, carol, map[string]string{"filter": `{"room":{"timeline":{"limit":100}}}`})
		if err != nil {
			t.Fatal(err)
		}
		syncJSON, _ := json.Marshal(sync)
		rawS := gjson.GetBytes(syncJSON, "rooms.join."+gjson.Escape(room.String())).Raw
		if rawS == "" || strings.Contains(rawS, "xyzzyalice") || strings.Contains(rawS, "Alice Confidential") || !strings.Contains(rawS, "plughdave") {
			t.Errorf("carol's /sync: %s", rawS)
		}
		ss := slidingSync(t, carol, "", 0, map[string]any{"lists": map[string]any{"all": map[string]any{
			"ranges": [][]int{{0, 9}}, "timeline_limit": 50, "required_state": [][]string{{"m.room.member", "*"}}}}})
		ssJSON, _ := json.Marshal(ssRooms(ss)[room.String()])
		if len(ssJSON) < 10 || strings.Contains(string(ssJSON), "xyzzyalice") || strings.Contains(string(ssJSON), "Alice Confidential") ||
			!strings.Contains(string(ssJSON), "plughdave") {
			t.Errorf("carol's sliding sync: %s", ssJSON)
		}
		if n := len(resultIDs(mustSearch(t, carol, map[string]any{"search_term": "xyzzyalice"}, ""))); n != 0 {
			t.Errorf("carol's search for alice's word: %d results, want 0", n)
		}
		if n := len(resultIDs(mustSearch(t, carol, map[string]any{"search_term": "plughdave"}, ""))); n != 2 {
			t.Errorf("carol's search for dave's word: %d results, want 2", n)
		}

		// Media: alice's gone (row, blob, thumbnail), dave's kept.
		if s := download(a); s != 404 {
			t.Errorf("alice's image after erasure: %d, want 404", s)
		}
		if s := thumb(a); s != 404 {
			t.Errorf("alice's thumbnail after erasure: %d, want 404", s)
		}
		if blob(a.sum) {
			t.Error("alice's blob still on disk")
		}
		if s := download(d); s != 200 || !blob(d.sum) {
			t.Errorf("dave's image after deactivation without erase: %d (blob %v)", s, blob(d.sum))
		}
	})
}
