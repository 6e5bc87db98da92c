package tests

import (
	"fmt"
	"net/url"
	"strings"
	"testing"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

// TestAccountDataIsBounded: every initial /sync loads and sends all of a
// user's account data (30 entries of 9 MB made one initial sync peak at 2 GB
// of memory). An entry over 1 MiB, and entries past 8 MiB in all, are refused
// with M_TOO_LARGE and not stored; replacing an entry with one of the same
// size, or emptying one to make room, still works.
func TestAccountDataIsBounded(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice")
		room := shareRoom(t, alice)
		global := func(typ string) string {
			return "/_matrix/client/v3/user/" + url.PathEscape(alice.UserID.String()) + "/account_data/" + typ
		}
		perRoom := "/_matrix/client/v3/user/" + url.PathEscape(alice.UserID.String()) + "/rooms/" + url.PathEscape(string(room)) + "/account_data/x.room"
		blob := func(n int) map[string]string { return map[string]string{"v": strings.Repeat("v", n)} }
		want413 := func(what string, r rawResp) {
			t.Helper()
			if r.Status != 413 || r.errcode() != "M_TOO_LARGE" {
				t.Errorf("%s: %d %.200s, want 413 M_TOO_LARGE", what, r.Status, r.Raw)
			}
		}
		want413("a 1.5 MB entry", clientCall(t, alice, "PUT", global("x.huge"), blob(1_500_000)))
		if r := clientCall(t, alice, "GET", global("x.huge"), nil); r.Status != 404 {
			t.Errorf("the refused entry was stored: %d", r.Status)
		}
		for i := range 8 {
			if r := clientCall(t, alice, "PUT", global(fmt.Sprintf("x.big%d", i)), blob(1_000_000)); r.Status != 200 {
				t.Fatalf("entry %d of 1 MB: %d %.200s", i, r.Status, r.Raw)
			}
		}
		want413("a ninth 1 MB entry", clientCall(t, alice, "PUT", global("x.big8"), blob(1_000_000)))
		want413("a 1 MB room entry past the total", clientCall(t, alice, "PUT", perRoom, blob(1_000_000)))
		if r := clientCall(t, alice, "PUT", global("x.big3"), blob(1_000_000)); r.Status != 200 {
			t.Errorf("replacing an entry with one of the same size: %d %.200s", r.Status, r.Raw)
		}
		if r := clientCall(t, alice, "PUT", global("x.big0"), map[string]string{}); r.Status != 200 {
			t.Fatalf("emptying an entry: %d", r.Status)
		}
		if r := clientCall(t, alice, "PUT", perRoom, blob(1_000_000)); r.Status != 200 {
			t.Errorf("a room entry once there is room: %d %.200s", r.Status, r.Raw)
		}
	})
}

// TestRoomTagsAreBounded: a tag's content (the whole body) is kept in the
// room's m.tag account data, which /sync sends: a room's tags past 64 KiB are
// refused with M_TOO_LARGE and nothing changes; ordinary tags and removing
// tags still work.
func TestRoomTagsAreBounded(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice")
		room := shareRoom(t, alice)
		tags := "/_matrix/client/v3/user/" + url.PathEscape(alice.UserID.String()) + "/rooms/" + url.PathEscape(string(room)) + "/tags"
		if r := clientCall(t, alice, "PUT", tags+"/u.work", map[string]any{"order": 0.5}); r.Status != 200 {
			t.Fatalf("ordinary tag: %d %s", r.Status, r.Raw)
		}
		r := clientCall(t, alice, "PUT", tags+"/u.big", map[string]any{"order": 1, "junk": strings.Repeat("j", 1_000_000)})
		if r.Status != 413 || r.errcode() != "M_TOO_LARGE" {
			t.Errorf("a 1 MB tag: %d %.200s, want 413 M_TOO_LARGE", r.Status, r.Raw)
		}
		n := 0
		for ; n < 1000; n++ {
			if r := clientCall(t, alice, "PUT", tags+"/"+fmt.Sprintf("u.%0250d", n), map[string]any{"order": 0.1}); r.Status != 200 {
				break
			}
		}
		if n == 1000 {
			t.Error("1000 tags of 255 bytes on one room were accepted")
		}
		got := clientCall(t, alice, "GET", tags, nil)
		if strings.Contains(got.Raw, "jjjj") || !strings.Contains(got.Raw, "u.work") {
			t.Errorf("tags after refused changes: %.200s", got.Raw)
		}
		if r := clientCall(t, alice, "DELETE", tags+"/u.work", nil); r.Status != 200 {
			t.Errorf("removing a tag at the bound: %d %s", r.Status, r.Raw)
		}
	})
}
