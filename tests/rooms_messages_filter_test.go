package tests

import (
	"context"
	"net/http"
	"net/url"
	"testing"

	"maunium.net/go/mautrix"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

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
