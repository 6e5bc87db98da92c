package tests

import (
	"context"
	"encoding/json"
	"maps"
	"net/url"
	"reflect"
	"slices"
	"sort"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

// renderings collects, per event ID, how each endpoint rendered it.
type renderings map[string]map[string]map[string]any

func (r renderings) add(t *testing.T, where string, ev any) {
	t.Helper()
	m := obj(ev)
	evID, _ := m["event_id"].(string)
	if evID == "" {
		t.Fatalf("%s: event without event_id: %v", where, ev)
	}
	if r[evID] == nil {
		r[evID] = map[string]map[string]any{}
	}
	r[evID][where] = normalRendering(m)
}

func (r renderings) addAll(t *testing.T, where string, evs any) {
	t.Helper()
	for _, e := range asList(evs) {
		r.add(t, where, e)
	}
}

// normalRendering drops what legitimately differs between two reads of one
// event: its age, and the bundled thread summary /threads adds.
func normalRendering(m map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range m {
		out[k] = v
	}
	u := map[string]any{}
	for k, v := range obj(m["unsigned"]) {
		switch k {
		case "age", "m.relations":
		case "redacted_because":
			u[k] = normalRendering(obj(v))
		default:
			u[k] = v
		}
	}
	out["unsigned"] = u
	return out
}

func getJSON(t *testing.T, c *mautrix.Client, method, path string, body any) any {
	t.Helper()
	r := clientCall(t, c, method, path, body)
	if r.Status != 200 {
		t.Fatalf("%s %s: %d %s", method, path, r.Status, r.Raw)
	}
	var out any
	if err := json.Unmarshal([]byte(r.Raw), &out); err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	return out
}

// TestRenderConsistency: every endpoint that serves client events renders an
// event the same way (unsigned.age aside): the content, the keys, and the
// unsigned data — transaction_id to the sending device, redacted_because,
// prev_content and replaces_state, the viewer's membership. One renderer
// (clientevent) serves them all; before it, /sync and sliding sync left out
// redacted_because that /messages served.
func TestRenderConsistency(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		alice := srv.Register(t, "alice")
		bob := srv.Register(t, "bob")
		room := shareRoom(t, alice, bob)
		must(alice.SendStateEvent(ctx, room, event.StateTopic, "", map[string]string{"topic": "first"}))
		topic := must(alice.SendStateEvent(ctx, room, event.StateTopic, "", map[string]string{"topic": "second"})).EventID
		root := must(alice.SendMessageEvent(ctx, room, event.EventMessage, map[string]any{"msgtype": "m.text",
			"body": "searchable words for bob", "m.mentions": map[string]any{"user_ids": []string{string(bob.UserID)}}},
			mautrix.ReqSendEvent{TransactionID: "txn-root"})).EventID
		gone := must(alice.SendMessageEvent(ctx, room, event.EventMessage, map[string]any{"msgtype": "m.text", "body": "searchable regret"},
			mautrix.ReqSendEvent{TransactionID: "txn-gone"})).EventID
		redaction := must(alice.RedactEvent(ctx, room, gone, mautrix.ReqRedact{TxnID: "txn-redact", Reason: "oops"})).EventID
		reaction := must(bob.SendMessageEvent(ctx, room, event.EventReaction, map[string]any{
			"m.relates_to": map[string]any{"rel_type": "m.annotation", "event_id": root, "key": "👍"}})).EventID
		reply := must(alice.SendMessageEvent(ctx, room, event.EventMessage, map[string]any{"msgtype": "m.text",
			"body": "searchable thread reply bob", "m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": root}},
			mautrix.ReqSendEvent{TransactionID: "txn-reply"})).EventID

		r := url.PathEscape(string(room))
		v3 := "/_matrix/client/v3/rooms/" + r
		for _, c := range []*mautrix.Client{alice, bob} {
			got := renderings{}
			s, err := rawSync(t, c, map[string]string{"filter": `{"room":{"timeline":{"limit":100}}}`})
			if err != nil {
				t.Fatal(err)
			}
			jr := obj(obj(obj(s["rooms"])["join"])[string(room)])
			got.addAll(t, "/sync timeline", obj(jr["timeline"])["events"])
			got.addAll(t, "/sync state", obj(jr["state"])["events"])

			ss := slidingSync(t, c, "", 0, allRoomsList(100, [][]string{{"*", "*"}}))
			sr := obj(ssRooms(ss)[string(room)])
			got.addAll(t, "sliding timeline", sr["timeline"])
			got.addAll(t, "sliding required_state", sr["required_state"])

			got.addAll(t, "/messages", obj(getJSON(t, c, "GET", v3+"/messages?dir=b&limit=100", nil))["chunk"])
			cx := obj(getJSON(t, c, "GET", v3+"/context/"+url.PathEscape(string(redaction))+"?limit=20", nil))
			got.add(t, "/context event", cx["event"])
			got.addAll(t, "/context before", cx["events_before"])
			got.addAll(t, "/context after", cx["events_after"])
			got.addAll(t, "/context state", cx["state"])
			for _, e := range []id.EventID{topic, root, gone, redaction, reaction, reply} {
				got.add(t, "/event", getJSON(t, c, "GET", v3+"/event/"+url.PathEscape(string(e)), nil))
			}
			got.addAll(t, "/state", getJSON(t, c, "GET", v3+"/state", nil))
			got.add(t, "/state/{type}/{key}", getJSON(t, c, "GET", v3+"/state/m.room.topic/?format=event", nil))
			got.addAll(t, "/members", obj(getJSON(t, c, "GET", v3+"/members", nil))["chunk"])
			v1 := "/_matrix/client/v1/rooms/" + r
			got.addAll(t, "/relations", obj(getJSON(t, c, "GET", v1+"/relations/"+url.PathEscape(string(root)), nil))["chunk"])
			threads := asList(obj(getJSON(t, c, "GET", v1+"/threads", nil))["chunk"])
			got.addAll(t, "/threads", threads)
			for _, th := range threads {
				got.add(t, "/threads latest_event", obj(obj(obj(obj(th)["unsigned"])["m.relations"])["m.thread"])["latest_event"])
			}
			search := obj(getJSON(t, c, "POST", "/_matrix/client/v3/search", map[string]any{"search_categories": map[string]any{
				"room_events": map[string]any{"search_term": "searchable"}}}))
			for _, res := range asList(obj(obj(search["search_categories"])["room_events"])["results"]) {
				got.add(t, "/search", obj(res)["result"])
			}
			if c == bob {
				for _, n := range asList(obj(getJSON(t, c, "GET", "/_matrix/client/v3/notifications", nil))["notifications"]) {
					got.add(t, "/notifications", obj(n)["event"])
				}
			}

			who := string(c.UserID)
			// Each event where it must be (the rest is compared wherever it is).
			want := map[id.EventID][]string{
				topic:     {"/sync timeline", "sliding timeline", "sliding required_state", "/messages", "/context before", "/context state", "/event", "/state", "/state/{type}/{key}"},
				root:      {"/sync timeline", "sliding timeline", "/messages", "/context before", "/event", "/threads", "/search"},
				gone:      {"/sync timeline", "sliding timeline", "/messages", "/context before", "/event"},
				redaction: {"/sync timeline", "sliding timeline", "/messages", "/context event", "/event"},
				reaction:  {"/sync timeline", "sliding timeline", "/messages", "/context after", "/event", "/relations"},
				reply:     {"/sync timeline", "sliding timeline", "/messages", "/context after", "/event", "/relations", "/threads latest_event", "/search"},
			}
			if c == bob {
				want[root] = append(want[root], "/notifications")
				want[reply] = append(want[reply], "/notifications")
			}
			for evID, places := range want {
				for _, p := range places {
					if got[string(evID)][p] == nil {
						t.Errorf("%s: %s missing from %s (in %v)", who, evID, p, slices.Collect(maps.Keys(got[string(evID)])))
					}
				}
			}
			for evID, byPlace := range got {
				places := make([]string, 0, len(byPlace))
				for p := range byPlace {
					places = append(places, p)
				}
				sort.Strings(places)
				ref := byPlace[places[0]]
				for _, p := range places[1:] {
					if !reflect.DeepEqual(ref, byPlace[p]) {
						a, _ := json.Marshal(ref)
						b, _ := json.Marshal(byPlace[p])
						t.Errorf("%s: %s renders differently:\n%s: %s\n%s: %s", who, evID, places[0], a, p, b)
					}
				}
			}

			// And what they agree on is right.
			unsigned := func(e id.EventID) map[string]any { return obj(got[string(e)]["/messages"]["unsigned"]) }
			wantTxn := map[id.EventID]string{root: "txn-root", redaction: "txn-redact", reply: "txn-reply"}
			if c == bob {
				wantTxn = map[id.EventID]string{reaction: "bob's"}
			}
			for _, e := range []id.EventID{root, redaction, reply, reaction} {
				txn, _ := unsigned(e)["transaction_id"].(string)
				if want := wantTxn[e]; (want == "") != (txn == "") || (c == alice && txn != want) {
					t.Errorf("%s: %s: transaction_id %q, want %q", who, e, txn, want)
				}
			}
			if rb := obj(unsigned(gone)["redacted_because"]); rb["event_id"] != string(redaction) || len(obj(got[string(gone)]["/messages"]["content"])) != 0 {
				t.Errorf("%s: redacted event: %v", who, got[string(gone)]["/messages"])
			}
			if obj(unsigned(topic)["prev_content"])["topic"] != "first" || unsigned(topic)["replaces_state"] == nil {
				t.Errorf("%s: replaced state: %v", who, unsigned(topic))
			}
			if unsigned(root)["membership"] != "join" {
				t.Errorf("%s: membership at the event: %v", who, unsigned(root))
			}
			if got[string(redaction)]["/messages"]["redacts"] != string(gone) {
				t.Errorf("%s: redaction without top-level redacts: %v", who, got[string(redaction)]["/messages"])
			}
		}
	})
}
