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

// relate sends an event relating to parent with relType as c.
func relate(t *testing.T, c *mautrix.Client, room id.RoomID, parent id.EventID, relType, body string) id.EventID {
	t.Helper()
	return must(c.SendMessageEvent(context.Background(), room, event.EventMessage, map[string]any{"msgtype": "m.text", "body": body,
		"m.relates_to": map[string]any{"rel_type": relType, "event_id": parent}})).EventID
}

// chunkIDs are the event IDs of a /relations answer's chunk, in order.
func chunkIDs(body map[string]any) []id.EventID {
	var out []id.EventID
	for _, e := range chunk(body) {
		out = append(out, id.EventID(obj(e)["event_id"].(string)))
	}
	return out
}

// TestRelationsRecursion: /relations?recurse=true (v1.10, MSC3981) follows
// relations of relations up to 3 deep, with the filters applied to every hop,
// recursion_depth present exactly when recurse was given, pagination over
// the whole set, and history visibility applied to every indirect event.
func TestRelationsRecursion(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		room := shareRoom(t, alice, bob)
		root := sendText(t, alice, room, "root")
		d1 := relate(t, alice, room, root, "m.thread", "depth 1")
		d2 := relate(t, alice, room, d1, "m.reference", "depth 2")
		must(bob.LeaveRoom(ctx, room)) // bob sees d1 and d2, nothing later
		d3 := relate(t, alice, room, d2, "m.reference", "depth 3")
		d4 := relate(t, alice, room, d3, "m.reference", "depth 4")
		sendText(t, alice, room, "unrelated")

		base := "/_matrix/client/v1/rooms/" + url.PathEscape(string(room)) + "/relations/" + url.PathEscape(string(root))
		get := func(c *mautrix.Client, path string) rawResp {
			t.Helper()
			r := clientCall(t, c, "GET", path, nil)
			if r.Status != 200 {
				t.Fatalf("GET %s: %d %s", path, r.Status, r.Raw)
			}
			return r
		}
		for _, tc := range []struct {
			name, path string
			user       *mautrix.Client
			want       []id.EventID // newest first (dir=b)
			depth      any          // recursion_depth; nil: absent
		}{
			{"no recurse", base, alice, []id.EventID{d1}, nil},
			{"recurse=false", base + "?recurse=false", alice, []id.EventID{d1}, float64(1)},
			{"recurse=true", base + "?recurse=true", alice, []id.EventID{d3, d2, d1}, float64(3)},
			{"forward", base + "?recurse=true&dir=f", alice, []id.EventID{d1, d2, d3}, float64(3)},
			{"from depth 1", "/_matrix/client/v1/rooms/" + url.PathEscape(string(room)) + "/relations/" + url.PathEscape(string(d1)) + "?recurse=true", alice, []id.EventID{d4, d3, d2}, float64(3)},
			// Filters apply to every hop: d2 hangs off d1 (m.thread), so m.reference finds nothing.
			{"rel_type blocks the chain", base + "/m.reference?recurse=true", alice, nil, float64(3)},
			{"rel_type m.thread", base + "/m.thread?recurse=true", alice, []id.EventID{d1}, float64(3)},
			{"event type", base + "/m.thread/m.room.message?recurse=true", alice, []id.EventID{d1}, float64(3)},
			// Bob left after d2: d3 is hidden from him though it is related.
			{"visibility", base + "?recurse=true", bob, []id.EventID{d2, d1}, float64(3)},
		} {
			r := get(tc.user, tc.path)
			if got := chunkIDs(r.Body); !slices.Equal(got, tc.want) {
				t.Errorf("%s: chunk %v, want %v", tc.name, got, tc.want)
			}
			depth, present := r.Body["recursion_depth"]
			if (tc.depth == nil) == present || (present && depth != tc.depth) {
				t.Errorf("%s: recursion_depth %v (present %v), want %v", tc.name, depth, present, tc.depth)
			}
		}

		// Pagination runs over the recursive set.
		p1 := get(alice, base+"?recurse=true&limit=2")
		next, _ := p1.Body["next_batch"].(string)
		if got := chunkIDs(p1.Body); !slices.Equal(got, []id.EventID{d3, d2}) || next == "" {
			t.Fatalf("page 1: %v next %q", got, next)
		}
		p2 := get(alice, base+"?recurse=true&limit=2&from="+url.QueryEscape(next))
		if got := chunkIDs(p2.Body); !slices.Equal(got, []id.EventID{d1}) {
			t.Errorf("page 2: %v, want [%s]", got, d1)
		}

		for _, bad := range []string{"?recurse=yes", "?recurse=1", "?recurse="} {
			if r := clientCall(t, alice, "GET", base+bad, nil); r.Status != 400 || r.errcode() != "M_INVALID_PARAM" {
				t.Errorf("%s: %d %s, want 400 M_INVALID_PARAM", bad, r.Status, r.Raw)
			}
		}
	})
}
