package tests

import (
	"context"
	"net/url"
	"slices"
	"testing"

	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

// TestRelationsTo: /relations stops at the `to` token (relations.yaml), a
// /sync token or one of its own, in both directions, as /messages does.
func TestRelationsTo(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		alice := srv.Register(t, "alice")
		room := shareRoom(t, alice)
		root := sendText(t, alice, room, "root")
		r1 := relate(t, alice, room, root, "m.reference", "one")
		r2 := relate(t, alice, room, root, "m.reference", "two")
		sync, err := alice.SyncRequest(ctx, 0, "", "", false, "")
		if err != nil {
			t.Fatal(err)
		}
		mid := url.QueryEscape(sync.NextBatch)
		r3 := relate(t, alice, room, root, "m.reference", "three")
		r4 := relate(t, alice, room, root, "m.reference", "four")

		base := "/_matrix/client/v1/rooms/" + url.PathEscape(string(room)) + "/relations/" + url.PathEscape(string(root))
		get := func(path string) rawResp {
			t.Helper()
			r := clientCall(t, alice, "GET", path, nil)
			if r.Status != 200 {
				t.Fatalf("GET %s: %d %s", path, r.Status, r.Raw)
			}
			return r
		}
		for _, tc := range []struct {
			name, query string
			want        []id.EventID
		}{
			{"no to", "", []id.EventID{r4, r3, r2, r1}},
			{"backwards to a sync token", "?to=" + mid, []id.EventID{r4, r3}},
			{"forwards to a sync token", "?dir=f&to=" + mid, []id.EventID{r1, r2}},
			{"recursive", "?recurse=true&to=" + mid, []id.EventID{r4, r3}},
		} {
			r := get(base + tc.query)
			if got := chunkIDs(r.Body); !slices.Equal(got, tc.want) {
				t.Errorf("%s: chunk %v, want %v", tc.name, got, tc.want)
			}
			if nb, has := r.Body["next_batch"]; has {
				t.Errorf("%s: next_batch %v though everything up to `to` was returned", tc.name, nb)
			}
		}

		// Paging with a fixed `to`: the last page ends there, without next_batch.
		p1 := get(base + "?limit=1&to=" + mid)
		next, _ := p1.Body["next_batch"].(string)
		if got := chunkIDs(p1.Body); !slices.Equal(got, []id.EventID{r4}) || next == "" {
			t.Fatalf("page 1: %v next %q", got, next)
		}
		p2 := get(base + "?limit=1&to=" + mid + "&from=" + url.QueryEscape(next))
		next2, _ := p2.Body["next_batch"].(string)
		if got := chunkIDs(p2.Body); !slices.Equal(got, []id.EventID{r3}) {
			t.Errorf("page 2: %v, want [%s]", got, r3)
		}
		if next2 != "" {
			if p3 := get(base + "?limit=1&to=" + mid + "&from=" + url.QueryEscape(next2)); len(chunkIDs(p3.Body)) != 0 {
				t.Errorf("page 3 went past `to`: %v", chunkIDs(p3.Body))
			}
		}

		for _, bad := range []string{"garbage", "s", "tx_1"} {
			if r := clientCall(t, alice, "GET", base+"?to="+bad, nil); r.Status != 400 || r.errcode() != "M_INVALID_PARAM" {
				t.Errorf("to=%s: %d %s, want 400 M_INVALID_PARAM", bad, r.Status, r.Raw)
			}
		}
	})
}
