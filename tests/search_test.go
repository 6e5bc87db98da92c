package tests

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/homeserver/testserver"
	"github.com/myelin-chat/myelin/internal/config"
)

// POST /search (room_events): what Complement's TestSearch checks, and
// visibility, redaction, encrypted rooms, filters, bad input and restarts.

// searchRoomEvents runs a room_events search with the given criteria and
// next_batch ("" for none); it returns the answer's room_events object.
func searchRoomEvents(t testing.TB, c *mautrix.Client, criteria map[string]any, nextBatch string) (rawResp, gjson.Result) {
	t.Helper()
	path := "/_matrix/client/v3/search"
	if nextBatch != "" {
		path += "?next_batch=" + url.QueryEscape(nextBatch)
	}
	r := clientCall(t, c, "POST", path, map[string]any{"search_categories": map[string]any{"room_events": criteria}})
	return r, gjson.Get(r.Raw, "search_categories.room_events")
}

// mustSearch is searchRoomEvents expecting 200.
func mustSearch(t testing.TB, c *mautrix.Client, criteria map[string]any, nextBatch string) gjson.Result {
	t.Helper()
	r, re := searchRoomEvents(t, c, criteria, nextBatch)
	if r.Status != 200 {
		t.Fatalf("search %v: %d %s", criteria, r.Status, r.Raw)
	}
	return re
}

// resultIDs are the event IDs of the results, in order.
func resultIDs(re gjson.Result) []string {
	var out []string
	for _, r := range re.Get("results").Array() {
		out = append(out, r.Get("result.event_id").Str)
	}
	return out
}

func inRooms(rooms ...id.RoomID) map[string]any {
	return map[string]any{"rooms": rooms}
}

func privateRoom(t testing.TB, c *mautrix.Client) id.RoomID {
	return createRoom(t, c, &mautrix.ReqCreateRoom{Preset: "private_chat"})
}

func TestSearchByBody(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice")
		room := privateRoom(t, alice)
		ev := sendText(t, alice, room, "hello, world")
		sendText(t, alice, room, "something else")
		re := mustSearch(t, alice, map[string]any{"keys": []string{"content.body"}, "search_term": "hello", "filter": inRooms(room)}, "")
		if re.Get("count").Int() != 1 || !slices.Equal(resultIDs(re), []string{ev.String()}) {
			t.Fatalf("want exactly %s: %s", ev, re.Raw)
		}
		res := re.Get("results.0")
		if res.Get("result.room_id").Str != room.String() || res.Get("result.type").Str != "m.room.message" ||
			res.Get("result.content.body").Str != "hello, world" || res.Get("rank").Float() <= 0 {
			t.Fatalf("result: %s", res.Raw)
		}
		// The one renderer: unsigned as /messages serves it.
		if res.Get("result.unsigned.membership").Str != "join" || !res.Get("result.unsigned.age").Exists() {
			t.Fatalf("result unsigned: %s", res.Raw)
		}
		if !slices.ContainsFunc(re.Get("highlights").Array(), func(h gjson.Result) bool { return h.Str == "hello" }) {
			t.Fatalf("highlights: %s", re.Get("highlights").Raw)
		}
		// Prefixes match, and the whole word is a highlight.
		re = mustSearch(t, alice, map[string]any{"search_term": "HEL", "filter": inRooms(room)}, "")
		if !slices.Equal(resultIDs(re), []string{ev.String()}) ||
			!slices.ContainsFunc(re.Get("highlights").Array(), func(h gjson.Result) bool { return h.Str == "hello" }) {
			t.Fatalf("prefix search: %s", re.Raw)
		}
		// Every word is required; a word matching nothing finds nothing.
		if re := mustSearch(t, alice, map[string]any{"search_term": "hello nothinglikethis"}, ""); re.Get("count").Int() != 0 || len(resultIDs(re)) != 0 {
			t.Fatalf("all words required: %s", re.Raw)
		}
		// Punctuation is not query syntax.
		if re := mustSearch(t, alice, map[string]any{"search_term": `"hello* (world)-`}, ""); !slices.Equal(resultIDs(re), []string{ev.String()}) {
			t.Fatalf("punctuation: %s", re.Raw)
		}
	})
}

func TestSearchNamesAndTopics(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice")
		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Aardvark club", Topic: "Burrowing mammals"})
		msg := sendText(t, alice, room, "aardvark burrowing today")
		re := mustSearch(t, alice, map[string]any{"search_term": "aardvark", "keys": []string{"content.name"}}, "")
		if re.Get("count").Int() != 1 || re.Get("results.0.result.type").Str != "m.room.name" {
			t.Fatalf("name search: %s", re.Raw)
		}
		re = mustSearch(t, alice, map[string]any{"search_term": "burrowing", "keys": []string{"content.topic"}}, "")
		if re.Get("count").Int() != 1 || re.Get("results.0.result.type").Str != "m.room.topic" {
			t.Fatalf("topic search: %s", re.Raw)
		}
		// Keys default to all three.
		re = mustSearch(t, alice, map[string]any{"search_term": "aardvark"}, "")
		if re.Get("count").Int() != 2 || !slices.Contains(resultIDs(re), msg.String()) {
			t.Fatalf("all keys: %s", re.Raw)
		}
	})
}

func TestSearchContext(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice")
		if err := alice.SetDisplayName(context.Background(), "Alice Liddell"); err != nil {
			t.Fatal(err)
		}
		room := privateRoom(t, alice)
		for i := 1; i <= 7; i++ {
			sendText(t, alice, room, fmt.Sprintf("Message number %d", i))
		}
		re := mustSearch(t, alice, map[string]any{
			"keys": []string{"content.body"}, "search_term": "Message 4", "order_by": "recent",
			"filter":        map[string]any{"limit": 1, "rooms": []id.RoomID{room}},
			"event_context": map[string]any{"before_limit": 2, "after_limit": 2, "include_profile": true},
		}, "")
		if re.Get("count").Int() != 1 || !re.Get("next_batch").Exists() || re.Get("results.0.result.content.body").Str != "Message number 4" {
			t.Fatalf("search: %s", re.Raw)
		}
		c := re.Get("results.0.context")
		bodies := func(path string) []string {
			var out []string
			for _, e := range c.Get(path).Array() {
				out = append(out, e.Get("content.body").Str)
			}
			return out
		}
		if b := bodies("events_before"); !slices.Equal(b, []string{"Message number 3", "Message number 2"}) {
			t.Fatalf("events_before %v", b)
		}
		if a := bodies("events_after"); !slices.Equal(a, []string{"Message number 5", "Message number 6"}) {
			t.Fatalf("events_after %v", a)
		}
		if c.Get("start").Str == "" || c.Get("end").Str == "" {
			t.Fatalf("context tokens: %s", c.Raw)
		}
		if dn := c.Get("profile_info").Get(gjson.Escape(alice.UserID.String())).Get("displayname").Str; dn != "Alice Liddell" {
			t.Fatalf("profile_info: %s", c.Get("profile_info").Raw)
		}
		// The start token continues in /messages.
		r := clientCall(t, alice, "GET", roomPath(room, "/messages?dir=b&limit=1&from="+url.QueryEscape(c.Get("start").Str)), nil)
		if got := gjson.Get(r.Raw, "chunk.0.content.body").Str; got != "Message number 1" {
			t.Fatalf("/messages from the context's start: %d %s", r.Status, r.Raw)
		}
	})
}

func TestSearchBackPagination(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice")
		room := privateRoom(t, alice)
		ids := make([]string, 20)
		for i := range ids {
			ids[i] = sendText(t, alice, room, fmt.Sprintf("Message number %d", i)).String()
		}
		for _, order := range []string{"recent", "rank"} {
			criteria := map[string]any{"keys": []string{"content.body"}, "search_term": "Message", "order_by": order,
				"filter": map[string]any{"limit": 10, "rooms": []id.RoomID{room}}}
			var seen []string
			next := ""
			for page := 0; ; page++ {
				re := mustSearch(t, alice, criteria, next)
				if re.Get("count").Int() != 20 {
					t.Fatalf("%s page %d: count %s", order, page, re.Get("count").Raw)
				}
				got := resultIDs(re)
				seen = append(seen, got...)
				next = re.Get("next_batch").Str
				if page < 2 && (len(got) != 10 || next == "") {
					t.Fatalf("%s page %d: %d results, next_batch %q", order, page, len(got), next)
				}
				if page == 2 {
					if len(got) != 0 || re.Get("next_batch").Exists() {
						t.Fatalf("%s page 3: %s", order, re.Raw)
					}
					break
				}
			}
			if order == "recent" {
				want := slices.Clone(ids)
				slices.Reverse(want)
				if !slices.Equal(seen, want) {
					t.Fatalf("recent order: %v, want %v", seen, want)
				}
			} else {
				slices.Sort(seen)
				want := slices.Clone(ids)
				slices.Sort(want)
				if !slices.Equal(seen, want) {
					t.Fatalf("rank pages: each result once, got %v", seen)
				}
			}
			// A token of the other ordering is refused.
			re := mustSearch(t, alice, criteria, "")
			other := map[string]any{}
			for k, v := range criteria {
				other[k] = v
			}
			other["order_by"] = map[string]string{"recent": "rank", "rank": "recent"}[order]
			if r, _ := searchRoomEvents(t, alice, other, re.Get("next_batch").Str); r.Status != 400 || r.errcode() != "M_INVALID_PARAM" {
				t.Fatalf("token of another order: %d %s", r.Status, r.Raw)
			}
		}
	})
}

func TestSearchUpgradedRoom(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice")
		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat", RoomVersion: "8"})
		before := sendText(t, alice, room, "Message before upgrade")
		r := upgradeRoom(t, alice, room, "9")
		if r.Status != 200 {
			t.Fatalf("upgrade: %d %s", r.Status, r.Raw)
		}
		newRoom := id.RoomID(r.Body["replacement_room"].(string))
		after := sendText(t, alice, newRoom, "Message after upgrade")
		re := mustSearch(t, alice, map[string]any{"keys": []string{"content.body"}, "search_term": "upgrade",
			"filter": inRooms(room, newRoom)}, "")
		got := resultIDs(re)
		slices.Sort(got)
		want := []string{before.String(), after.String()}
		slices.Sort(want)
		if re.Get("count").Int() != 2 || !slices.Equal(got, want) {
			t.Fatalf("across the upgrade: %s", re.Raw)
		}
	})
}

func TestSearchRedactedEvents(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice")
		room := privateRoom(t, alice)
		redacted := sendText(t, alice, room, "This message is going to be redacted")
		visible := sendText(t, alice, room, "This message is not going to be redacted")
		if n := searchIndexRows(t, srv, redacted); n != 1 {
			t.Fatalf("index rows of the event before its redaction: %d", n)
		}
		must(alice.RedactEvent(context.Background(), room, redacted, mautrix.ReqRedact{Reason: "testing"}))
		// The redaction removed the event's row, not only hid it.
		if n := searchIndexRows(t, srv, redacted); n != 0 {
			t.Fatalf("index rows of a redacted event: %d", n)
		}
		for _, order := range []string{"rank", "recent"} {
			re := mustSearch(t, alice, map[string]any{"keys": []string{"content.body"}, "order_by": order,
				"search_term": "redacted", "filter": inRooms(room)}, "")
			if !slices.Equal(resultIDs(re), []string{visible.String()}) || re.Get("count").Int() != 1 {
				t.Fatalf("%s: %s", order, re.Raw)
			}
		}
	})
}

// searchIndexRows counts the search index rows of an event.
func searchIndexRows(t *testing.T, srv *testserver.Server, ev id.EventID) int {
	t.Helper()
	key := "rowid" // SQLite's FTS5 table
	if strings.HasPrefix(srv.Config.Database.URL, "postgres") {
		key = "stream_pos"
	}
	var n int
	if err := srv.DB.QueryRow(context.Background(), `SELECT COUNT(*) FROM event_search WHERE `+key+
		` = (SELECT stream_pos FROM events WHERE event_id = $1)`, ev.String()).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// A user finds only what they may see: not what was sent before they joined
// a room with joined history, nor after they left, nor in rooms they are not in.
func TestSearchVisibility(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		ctx := context.Background()
		room := createRoom(t, bob, &mautrix.ReqCreateRoom{Preset: "public_chat", InitialState: []*event.Event{{
			Type: event.StateHistoryVisibility, Content: event.Content{Raw: map[string]any{"history_visibility": "joined"}}}}})
		sendText(t, bob, room, "zebra before alice joined")
		joinRoom(t, alice, room)
		during := sendText(t, bob, room, "zebra while alice is here")
		must(alice.LeaveRoom(ctx, room))
		sendText(t, bob, room, "zebra after alice left")
		other := privateRoom(t, bob)
		sendText(t, bob, other, "zebra in a room alice never joined")

		for _, order := range []string{"rank", "recent"} {
			re := mustSearch(t, alice, map[string]any{"search_term": "zebra", "order_by": order}, "")
			if !slices.Equal(resultIDs(re), []string{during.String()}) || re.Get("count").Int() != 1 {
				t.Fatalf("%s: alice sees %s", order, re.Raw)
			}
			// Naming the rooms in the filter changes nothing.
			re = mustSearch(t, alice, map[string]any{"search_term": "zebra", "order_by": order, "filter": inRooms(room, other)}, "")
			if !slices.Equal(resultIDs(re), []string{during.String()}) || re.Get("count").Int() != 1 {
				t.Fatalf("%s with rooms named: alice sees %s", order, re.Raw)
			}
		}
		// Context stops at what alice may see too.
		re := mustSearch(t, alice, map[string]any{"search_term": "zebra", "event_context": map[string]any{"before_limit": 5, "after_limit": 5}}, "")
		for _, e := range append(re.Get("results.0.context.events_before").Array(), re.Get("results.0.context.events_after").Array()...) {
			if b := e.Get("content.body").Str; strings.Contains(b, "before alice") || strings.Contains(b, "after alice") {
				t.Fatalf("context shows a hidden event: %s", e.Raw)
			}
		}
		// Bob sees all four.
		if re := mustSearch(t, bob, map[string]any{"search_term": "zebra"}, ""); re.Get("count").Int() != 4 {
			t.Fatalf("bob: %s", re.Raw)
		}
	})
}

// Events of encrypted rooms are not searchable, even in plain text.
func TestSearchSkipsEncryptedRooms(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice")
		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat", InitialState: []*event.Event{{
			Type: event.StateEncryption, Content: event.Content{Raw: map[string]any{"algorithm": "m.megolm.v1.aes-sha2"}}}}})
		sendText(t, alice, room, "plaintext okapi")
		plain := privateRoom(t, alice)
		want := sendText(t, alice, plain, "plaintext okapi")
		if re := mustSearch(t, alice, map[string]any{"search_term": "okapi"}, ""); !slices.Equal(resultIDs(re), []string{want.String()}) {
			t.Fatalf("search: %s", re.Raw)
		}
	})
}

func TestSearchFiltersGroupsAndState(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		r1 := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "first", Invite: []id.UserID{bob.UserID}}, bob)
		r2 := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"}, bob)
		a1 := sendText(t, alice, r1, "walrus one")
		b1 := sendText(t, bob, r1, "walrus two")
		a2 := sendText(t, alice, r2, "walrus three")
		ids := func(re gjson.Result) []string { out := resultIDs(re); slices.Sort(out); return out }
		sorted := func(evs ...id.EventID) []string {
			var out []string
			for _, e := range evs {
				out = append(out, e.String())
			}
			slices.Sort(out)
			return out
		}
		cases := []struct {
			filter map[string]any
			want   []string
		}{
			{map[string]any{"senders": []id.UserID{bob.UserID}}, sorted(b1)},
			{map[string]any{"not_senders": []id.UserID{bob.UserID}}, sorted(a1, a2)},
			{map[string]any{"not_rooms": []id.RoomID{r1}}, sorted(a2)},
			{map[string]any{"types": []string{"m.room.*"}}, sorted(a1, b1, a2)},
			{map[string]any{"not_types": []string{"m.room.message"}}, nil},
		}
		for _, c := range cases {
			re := mustSearch(t, alice, map[string]any{"search_term": "walrus", "filter": c.filter}, "")
			if got := ids(re); !slices.Equal(got, c.want) || int(re.Get("count").Int()) != len(c.want) {
				t.Fatalf("filter %v: got %v (count %d), want %v", c.filter, got, re.Get("count").Int(), c.want)
			}
		}
		re := mustSearch(t, alice, map[string]any{"search_term": "walrus", "order_by": "recent", "include_state": true,
			"groupings": map[string]any{"group_by": []map[string]string{{"key": "room_id"}, {"key": "sender"}}}}, "")
		g1 := re.Get("groups.room_id").Get(gjson.Escape(r1.String()))
		if got := g1.Get("results").Array(); len(got) != 2 || g1.Get("order").Int() != 2 {
			t.Fatalf("room_id group: %s", re.Get("groups").Raw)
		}
		if got := re.Get("groups.sender").Get(gjson.Escape(bob.UserID.String())).Get("results").Array(); len(got) != 1 || got[0].Str != b1.String() {
			t.Fatalf("sender group: %s", re.Get("groups").Raw)
		}
		st := re.Get("state").Get(gjson.Escape(r1.String())).Array()
		if !slices.ContainsFunc(st, func(e gjson.Result) bool {
			return e.Get("type").Str == "m.room.name" && e.Get("content.name").Str == "first"
		}) {
			t.Fatalf("state of %s: %s", r1, re.Get("state").Raw)
		}
		// A group's next_batch pages within the group.
		re = mustSearch(t, alice, map[string]any{"search_term": "walrus", "order_by": "recent", "filter": map[string]any{"limit": 1},
			"groupings": map[string]any{"group_by": []map[string]string{{"key": "room_id"}}}}, "")
		tok := re.Get("groups.room_id").Get(gjson.Escape(r2.String())).Get("next_batch").Str
		if !slices.Equal(resultIDs(re), []string{a2.String()}) || tok == "" {
			t.Fatalf("group page: %s", re.Raw)
		}
		re = mustSearch(t, alice, map[string]any{"search_term": "walrus", "order_by": "recent", "filter": map[string]any{"limit": 1},
			"groupings": map[string]any{"group_by": []map[string]string{{"key": "room_id"}}}}, tok)
		if len(resultIDs(re)) != 0 || re.Get("count").Int() != 1 {
			t.Fatalf("next page of r2's group: %s", re.Raw)
		}
	})
}

func TestSearchBadInput(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice")
		room := privateRoom(t, alice)
		sendText(t, alice, room, "hello")
		cases := []struct {
			name    string
			body    any
			query   string
			errcode string
		}{
			{"not JSON", "{", "", "M_NOT_JSON"},
			{"no categories", map[string]any{}, "", "M_MISSING_PARAM"},
			{"no search_term", map[string]any{"search_categories": map[string]any{"room_events": map[string]any{}}}, "", "M_MISSING_PARAM"},
			{"search_term a number", map[string]any{"search_categories": map[string]any{"room_events": map[string]any{"search_term": 5}}}, "", "M_BAD_JSON"},
			{"search_term too long", map[string]any{"search_categories": map[string]any{"room_events": map[string]any{"search_term": strings.Repeat("a ", 600)}}}, "", "M_INVALID_PARAM"},
			{"order_by", map[string]any{"search_categories": map[string]any{"room_events": map[string]any{"search_term": "x", "order_by": "oldest"}}}, "", "M_INVALID_PARAM"},
			{"keys", map[string]any{"search_categories": map[string]any{"room_events": map[string]any{"search_term": "x", "keys": []string{"content.url"}}}}, "", "M_INVALID_PARAM"},
			{"group_by", map[string]any{"search_categories": map[string]any{"room_events": map[string]any{"search_term": "x",
				"groupings": map[string]any{"group_by": []map[string]string{{"key": "type"}}}}}}, "", "M_INVALID_PARAM"},
			{"filter rooms", map[string]any{"search_categories": map[string]any{"room_events": map[string]any{"search_term": "x",
				"filter": map[string]any{"rooms": []string{"not_a_room_id"}}}}}, "", "M_INVALID_PARAM"},
			{"filter senders", map[string]any{"search_categories": map[string]any{"room_events": map[string]any{"search_term": "x",
				"filter": map[string]any{"senders": []string{"not_a_sender_id"}}}}}, "", "M_INVALID_PARAM"},
			{"filter limit", map[string]any{"search_categories": map[string]any{"room_events": map[string]any{"search_term": "x",
				"filter": map[string]any{"limit": -1}}}}, "", "M_BAD_JSON"},
			{"filter not an object", map[string]any{"search_categories": map[string]any{"room_events": map[string]any{"search_term": "x",
				"filter": []int{1}}}}, "", "M_BAD_JSON"},
			{"context limit", map[string]any{"search_categories": map[string]any{"room_events": map[string]any{"search_term": "x",
				"event_context": map[string]any{"before_limit": -1}}}}, "", "M_INVALID_PARAM"},
			{"next_batch", map[string]any{"search_categories": map[string]any{"room_events": map[string]any{"search_term": "x"}}}, "?next_batch=garbage!", "M_INVALID_PARAM"},
		}
		for _, c := range cases {
			r := clientCall(t, alice, "POST", "/_matrix/client/v3/search"+c.query, c.body)
			if r.Status != 400 || r.errcode() != c.errcode {
				t.Errorf("%s: %d %s, want 400 %s", c.name, r.Status, r.Raw, c.errcode)
			}
		}
		// Limits beyond the cap are capped; a term with no words finds nothing.
		re := mustSearch(t, alice, map[string]any{"search_term": "hello", "filter": map[string]any{"limit": 100000}}, "")
		if re.Get("count").Int() != 1 {
			t.Fatalf("large limit: %s", re.Raw)
		}
		if re := mustSearch(t, alice, map[string]any{"search_term": "!!! ..."}, ""); re.Get("count").Int() != 0 || !re.Get("results").IsArray() {
			t.Fatalf("no words: %s", re.Raw)
		}
		// Whatever a client types is words, never query syntax or a 500.
		for _, term := range []string{"中文 ١٢٣ ǅx", "NEAR(a b) AND OR NOT", "a:* & !b | (c)", "\"\" * ^ -x", "ﬁ ß İ", strings.Repeat("x", 999)} {
			if r, re := searchRoomEvents(t, alice, map[string]any{"search_term": term}, ""); r.Status != 200 || !re.Get("results").IsArray() {
				t.Errorf("term %q: %d %s", term, r.Status, r.Raw)
			}
		}
		// No room_events category: an empty answer.
		if r := clientCall(t, alice, "POST", "/_matrix/client/v3/search", map[string]any{"search_categories": map[string]any{}}); r.Status != 200 {
			t.Fatalf("no category: %d %s", r.Status, r.Raw)
		}
	})
}

// The index is in the store: it survives a restart, and the migration that
// created it indexes the events stored before it.
func TestSearchAcrossRestartAndBackfill(t *testing.T) {
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			defer recoverMust(t)
			dir := t.TempDir()
			var dbURL string
			conf := testserver.Options{Configure: func(c *config.Config) {
				c.DataDir = dir
				if dbURL == "" {
					dbURL = c.Database.URL
				}
				c.Database.URL = dbURL
			}}
			restart := func(srv *testserver.Server, alice *mautrix.Client, prepare func(*testserver.Server)) (*testserver.Server, *mautrix.Client) {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				if prepare != nil {
					prepare(srv)
				}
				if err := srv.Shutdown(ctx); err != nil {
					t.Fatal(err)
				}
				srv2 := testserver.Start(t, backend, conf)
				c := srv2.Client(t)
				c.SetCredentials(alice.UserID, alice.AccessToken)
				c.DeviceID = alice.DeviceID
				return srv2, c
			}
			srv := testserver.Start(t, backend, conf)
			alice := srv.Register(t, "alice")
			room := privateRoom(t, alice)
			first := sendText(t, alice, room, "capybara before the restart")
			// Neither a redacted event nor one of an encrypted room is (re)indexed.
			gone := sendText(t, alice, room, "capybara to be redacted")
			must(alice.RedactEvent(context.Background(), room, gone, mautrix.ReqRedact{}))
			secret := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat", InitialState: []*event.Event{{
				Type: event.StateEncryption, Content: event.Content{Raw: map[string]any{"algorithm": "m.megolm.v1.aes-sha2"}}}}})
			sendText(t, alice, secret, "capybara in an encrypted room")
			srv, alice = restart(srv, alice, nil)
			second := sendText(t, alice, room, "capybara after the restart")
			re := mustSearch(t, alice, map[string]any{"search_term": "capybara", "order_by": "recent"}, "")
			if !slices.Equal(resultIDs(re), []string{second.String(), first.String()}) {
				t.Fatalf("after a restart: %s", re.Raw)
			}
			// Drop the index and run its migration again: it indexes what is stored.
			srv, alice = restart(srv, alice, func(s *testserver.Server) {
				ctx := context.Background()
				must(s.DB.Exec(ctx, `DROP TABLE event_search`))
				must(s.DB.Exec(ctx, `DELETE FROM schema_migrations WHERE version = 100`))
			})
			re = mustSearch(t, alice, map[string]any{"search_term": "capybara", "order_by": "recent"}, "")
			if !slices.Equal(resultIDs(re), []string{second.String(), first.String()}) {
				t.Fatalf("after the migration's backfill: %s", re.Raw)
			}
			_ = srv
		})
	}
}

// With more separate spans of visible history than a query names (the ranges
// merge past 16), each result is still checked: paging finds exactly what the
// user saw.
func TestSearchManyVisibleSpans(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		ctx := context.Background()
		room := createRoom(t, bob, &mautrix.ReqCreateRoom{Preset: "public_chat", InitialState: []*event.Event{{
			Type: event.StateHistoryVisibility, Content: event.Content{Raw: map[string]any{"history_visibility": "joined"}}}}})
		var seen []string
		for i := range 20 {
			sendText(t, bob, room, fmt.Sprintf("ibis hidden %d", i))
			joinRoom(t, alice, room)
			seen = append(seen, sendText(t, bob, room, fmt.Sprintf("ibis seen %d", i)).String())
			must(alice.LeaveRoom(ctx, room))
		}
		slices.Reverse(seen)
		for _, order := range []string{"recent", "rank"} {
			var got []string
			next := ""
			for page := 0; page < 20; page++ {
				re := mustSearch(t, alice, map[string]any{"search_term": "ibis", "order_by": order, "filter": map[string]any{"limit": 3}}, next)
				for _, r := range re.Get("results").Array() {
					if b := r.Get("result.content.body").Str; !strings.Contains(b, "seen") {
						t.Fatalf("%s: hidden event found: %s", order, b)
					}
				}
				got = append(got, resultIDs(re)...)
				if next = re.Get("next_batch").Str; next == "" {
					break
				}
			}
			if order == "rank" {
				slices.Sort(got)
				want := slices.Clone(seen)
				slices.Sort(want)
				if !slices.Equal(got, want) {
					t.Fatalf("rank: got %d results, want the %d seen", len(got), len(want))
				}
			} else if !slices.Equal(got, seen) {
				t.Fatalf("recent: got %v, want %v", got, seen)
			}
		}
	})
}
