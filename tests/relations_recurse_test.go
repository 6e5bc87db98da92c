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

// TestUnsignedMembership: every event served to a client carries
// unsigned.membership (v1.11, MSC4115), the requesting user's membership at
// that event, the event's own effect included — in /sync, /messages, /event,
// /context and /relations — for a user who was invited, joined, left, was
// banned and unbanned, and joined again.
func TestUnsignedMembership(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		room := shareRoom(t, alice) // shared history: bob sees it all once joined
		want := map[id.EventID]string{}
		var order []id.EventID
		add := func(ev id.EventID, m string) { want[ev] = m; order = append(order, ev) }
		memberEvent := func() id.EventID {
			t.Helper()
			s := syncOnce(t, alice, "", "", 0)
			evs := s.Rooms.Join[room].Timeline.Events
			for i := len(evs) - 1; i >= 0; i-- {
				if evs[i].Type == event.StateMember && evs[i].GetStateKey() == string(bob.UserID) {
					return evs[i].ID
				}
			}
			t.Fatal("bob's membership event not in alice's timeline")
			return ""
		}

		add(sendText(t, alice, room, "before bob"), "leave")
		must(alice.InviteUser(ctx, room, &mautrix.ReqInviteUser{UserID: bob.UserID}))
		add(memberEvent(), "invite")
		add(sendText(t, alice, room, "bob invited"), "invite")
		joinRoom(t, bob, room)
		add(memberEvent(), "join")
		add(sendText(t, alice, room, "bob joined"), "join")
		must(bob.LeaveRoom(ctx, room))
		add(memberEvent(), "leave")
		add(sendText(t, alice, room, "bob left"), "leave")
		joinRoom(t, bob, room)
		add(memberEvent(), "join")
		must(alice.BanUser(ctx, room, &mautrix.ReqBanUser{UserID: bob.UserID}))
		add(memberEvent(), "ban")
		banned := sendText(t, alice, room, "bob banned")
		add(banned, "ban")
		must(alice.UnbanUser(ctx, room, &mautrix.ReqUnbanUser{UserID: bob.UserID}))
		add(memberEvent(), "leave")
		add(sendText(t, alice, room, "bob unbanned"), "leave")
		joinRoom(t, bob, room)
		add(memberEvent(), "join")
		add(sendText(t, alice, room, "bob back"), "join")
		reaction := relate(t, alice, room, banned, "m.reference", "about the ban")
		add(reaction, "join")

		check := func(where string, evs []*event.Event, atLeast int) {
			t.Helper()
			n := 0
			for _, e := range evs {
				w, ok := want[e.ID]
				if !ok {
					continue
				}
				n++
				if string(e.Unsigned.Membership) != w {
					t.Errorf("%s: %s (%s %s): membership %q, want %q", where, e.ID, e.Type, e.Content.Raw["body"], e.Unsigned.Membership, w)
				}
			}
			if n < atLeast {
				t.Errorf("%s: %d of the events checked, want at least %d", where, n, atLeast)
			}
		}
		s := syncOnce(t, bob, "", `{"room":{"timeline":{"limit":100}}}`, 0)
		check("/sync", s.Rooms.Join[room].Timeline.Events, len(order))
		msgs := must(bob.Messages(ctx, room, "", "", mautrix.DirectionBackward, nil, 100))
		check("/messages", msgs.Chunk, len(order))
		for _, ev := range order {
			check("/event", []*event.Event{must(bob.GetEvent(ctx, room, ev))}, 1)
		}
		cx := must(bob.Context(ctx, room, banned, nil, 6))
		check("/context", append(append(cx.EventsBefore, cx.Event), cx.EventsAfter...), 7)
		rel := clientCall(t, bob, "GET", "/_matrix/client/v1/rooms/"+url.PathEscape(string(room))+"/relations/"+url.PathEscape(string(banned)), nil)
		if got := obj(obj(chunk(rel.Body)[0])["unsigned"])["membership"]; got != "join" {
			t.Errorf("/relations: membership %v, want join (%s)", got, rel.Raw)
		}
		// Alice was joined at every one of them.
		for _, e := range must(alice.Messages(ctx, room, "", "", mautrix.DirectionBackward, nil, 100)).Chunk {
			if _, ok := want[e.ID]; ok && e.Unsigned.Membership != event.MembershipJoin {
				t.Errorf("alice's /messages: %s membership %q, want join", e.ID, e.Unsigned.Membership)
			}
		}
		// /notifications too (bob is notified of what was sent while he was joined).
		notes := clientCall(t, bob, "GET", "/_matrix/client/v3/notifications", nil)
		if len(notes.Body["notifications"].([]any)) == 0 {
			t.Errorf("/notifications: none (%s)", notes.Raw)
		}
		for _, n := range notes.Body["notifications"].([]any) {
			if got := obj(obj(obj(n)["event"])["unsigned"])["membership"]; got != "join" {
				t.Errorf("/notifications: membership %v, want join", got)
			}
		}
		// An incremental /sync carries it too.
		next := sendText(t, alice, room, "after sync")
		inc := syncUntil(t, bob, s.NextBatch, "", func(r *mautrix.RespSync) bool { return syncHasEvent(r.Rooms.Join[room].Timeline.Events, next) })
		want[next] = "join"
		check("incremental /sync", inc.Rooms.Join[room].Timeline.Events, 1)
	})
}

// TestVersionsClaimV111: /versions announces v1.10 and v1.11 (with
// authenticated media still flagged for older clients), with or without an
// access token, valid or not (MSC4026: authentication is optional there).
func TestVersionsClaimV111(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice")
		for _, token := range []string{"", alice.AccessToken, "not-a-token"} {
			r := httpCall(t, srv.URL, "GET", "/_matrix/client/versions", token, nil)
			if r.Status != 200 {
				t.Fatalf("versions with token %q: %d %s", token, r.Status, r.Raw)
			}
			var got []string
			for _, v := range r.Body["versions"].([]any) {
				got = append(got, v.(string))
			}
			for _, v := range []string{"v1.9", "v1.10", "v1.11"} {
				if !slices.Contains(got, v) {
					t.Errorf("versions %v lack %s", got, v)
				}
			}
			if uf := obj(r.Body["unstable_features"]); uf["org.matrix.msc3916.stable"] != true {
				t.Errorf("unstable_features %v lack org.matrix.msc3916.stable", uf)
			}
		}
	})
}
