package tests

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"maunium.net/go/mautrix"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

// jsonInput is one JSON value a client may put in a request body.
type jsonInput struct {
	name  string
	value string // JSON text, sent as it is
	str   bool   // a JSON string (the value of a string field)
	edge  string // errcode at every endpoint ("" = accepted)
	event string // errcode where the value becomes part of a signed event
}

var jsonInputs = []jsonInput{
	{"invalid UTF-8", "\"a\xffb\"", true, "M_NOT_JSON", "M_NOT_JSON"},
	{"UTF-8-encoded surrogate", "\"\xed\xa0\x80\"", true, "M_NOT_JSON", "M_NOT_JSON"},
	{"lone high surrogate", `"a\ud800b"`, true, "M_BAD_JSON", "M_BAD_JSON"},
	{"lone low surrogate", `"\udc00"`, true, "M_BAD_JSON", "M_BAD_JSON"},
	{"float", `1.5`, false, "", "M_BAD_JSON"},
	{"float 1.0", `1.0`, false, "", "M_BAD_JSON"},
	{"2^53", `9007199254740992`, false, "", "M_BAD_JSON"},
	{"-(2^53)", `-9007199254740992`, false, "", "M_BAD_JSON"},
	{"2^53+1", `9007199254740993`, false, "", "M_BAD_JSON"},
	{"1e400", `1e400`, false, "M_BAD_JSON", "M_BAD_JSON"},
	{"deep nesting", strings.Repeat("[", 150) + strings.Repeat("]", 150), false, "M_BAD_JSON", "M_BAD_JSON"},
	{"duplicate keys", `{"k":"first","k":"second"}`, false, "M_BAD_JSON", "M_BAD_JSON"},
	// must still pass
	{"surrogate pair", `"\ud83d\ude00"`, true, "", ""},
	{"2^53-1", `9007199254740991`, false, "", ""},
	{"-(2^53-1)", `-9007199254740991`, false, "", ""},
}

// jsonEndpoint is an endpoint that takes client JSON, with the value under
// test put into its body.
type jsonEndpoint struct {
	name     string
	event    bool // the value ends up in a signed event
	strField bool // the value goes in a string field: only string inputs
	send     func(v string, n int) rawResp
	observe  func(n int) string // what a reader sees of request n (nil: nothing to see)
}

// TestClientJSONIsCheckedAtTheEdge: every endpoint that takes client JSON
// refuses invalid UTF-8 (M_NOT_JSON), unpaired surrogate escapes, numbers
// beyond float64, deep nesting and duplicate keys (M_BAD_JSON), and, where the JSON becomes a
// signed event, anything that is not canonical JSON (floats, integers outside
// ±(2^53-1)): 400, and nothing stored — while a surrogate pair and 2^53-1 are
// accepted. Before, such JSON was relayed into other users' /sync, or was a 500.
func TestClientJSONIsCheckedAtTheEdge(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		carol := srv.Register(t, "carol")
		room := shareRoom(t, alice, bob)
		target := sendText(t, alice, room, "to be redacted")
		bobSince := syncOnce(t, bob, "", "", 0).NextBatch

		call := func(method, path string, body string) rawResp {
			return clientCall(t, alice, method, path, []byte(body))
		}
		get := func(c *mautrix.Client, path string) string {
			r := clientCall(t, c, "GET", path, nil)
			return fmt.Sprintf("%d %s", r.Status, r.Raw)
		}
		esc := url.PathEscape
		me, r := esc(string(alice.UserID)), esc(string(room))
		// roomEvents is what bob sees of the room: its events, newest first.
		roomEvents := func(int) string {
			resp := clientCall(t, bob, "GET", "/_matrix/client/v3/rooms/"+r+"/messages?dir=b&limit=1000", nil)
			chunk, _ := resp.Body["chunk"].([]any)
			ids := []string{fmt.Sprint(resp.Status)}
			for _, e := range chunk {
				ids = append(ids, fmt.Sprint(obj(e)["event_id"]))
			}
			return strings.Join(ids, " ")
		}
		joinedRooms := func(int) string { return get(alice, "/_matrix/client/v3/joined_rooms") }

		endpoints := []jsonEndpoint{
			{name: "sendToDevice",
				send: func(v string, n int) rawResp {
					return call("PUT", fmt.Sprintf("/_matrix/client/v3/sendToDevice/m.test/txn%d", n),
						fmt.Sprintf(`{"messages":{%q:{%q:{"n":%d,"v":%s}}}}`, bob.UserID, bob.DeviceID, n, v))
				},
				// bob never advances his token: every undelivered message stays visible.
				observe: func(int) string {
					return fmt.Sprint(len(syncOnce(t, bob, bobSince, "", 0).ToDevice.Events))
				}},
			{name: "global account data",
				send: func(v string, n int) rawResp {
					return call("PUT", fmt.Sprintf("/_matrix/client/v3/user/%s/account_data/m.test.%d", me, n), `{"v":`+v+`}`)
				},
				observe: func(n int) string {
					return get(alice, fmt.Sprintf("/_matrix/client/v3/user/%s/account_data/m.test.%d", me, n))
				}},
			{name: "room account data",
				send: func(v string, n int) rawResp {
					return call("PUT", fmt.Sprintf("/_matrix/client/v3/user/%s/rooms/%s/account_data/m.test.%d", me, r, n), `{"v":`+v+`}`)
				},
				observe: func(n int) string {
					return get(alice, fmt.Sprintf("/_matrix/client/v3/user/%s/rooms/%s/account_data/m.test.%d", me, r, n))
				}},
			{name: "room tag",
				send: func(v string, n int) rawResp {
					return call("PUT", fmt.Sprintf("/_matrix/client/v3/user/%s/rooms/%s/tags/u.t%d", me, r, n), `{"order":0.5,"v":`+v+`}`)
				},
				observe: func(int) string { return get(alice, fmt.Sprintf("/_matrix/client/v3/user/%s/rooms/%s/tags", me, r)) }},
			{name: "filter",
				send: func(v string, n int) rawResp {
					return call("POST", fmt.Sprintf("/_matrix/client/v3/user/%s/filter", me), `{"room":{"timeline":{"limit":5}},"org.example.v":`+v+`}`)
				}},
			{name: "profile field",
				send: func(v string, n int) rawResp {
					return call("PUT", fmt.Sprintf("/_matrix/client/v3/profile/%s/org.example.f%d", me, n), fmt.Sprintf(`{"org.example.f%d":%s}`, n, v))
				},
				observe: func(n int) string {
					return get(alice, fmt.Sprintf("/_matrix/client/v3/profile/%s/org.example.f%d", me, n))
				}},
			{name: "displayname (member events)", strField: true,
				send: func(v string, n int) rawResp {
					return call("PUT", fmt.Sprintf("/_matrix/client/v3/profile/%s/displayname", me), `{"displayname":`+v+`}`)
				},
				observe: roomEvents},
			{name: "pushers",
				send: func(v string, n int) rawResp {
					return call("POST", "/_matrix/client/v3/pushers/set", fmt.Sprintf(`{"app_id":"a%d","pushkey":"k%d","kind":"http",
						"app_display_name":"x","device_display_name":"x","lang":"en",
						"data":{"url":"https://push.example.org/_matrix/push/v1/notify","v":%s}}`, n, n, v))
				},
				observe: func(int) string { return get(alice, "/_matrix/client/v3/pushers") }},
			{name: "keys upload", // nothing to store: the check still applies to the whole body
				send: func(v string, n int) rawResp {
					return call("POST", "/_matrix/client/v3/keys/upload", `{"one_time_keys":{},"org.example.v":`+v+`}`)
				}},
			{name: "send message", event: true,
				send: func(v string, n int) rawResp {
					return call("PUT", fmt.Sprintf("/_matrix/client/v3/rooms/%s/send/m.room.message/txn%d", r, n),
						`{"msgtype":"m.text","body":"hi","v":`+v+`}`)
				},
				observe: roomEvents},
			{name: "PUT state", event: true,
				send: func(v string, n int) rawResp {
					return call("PUT", fmt.Sprintf("/_matrix/client/v3/rooms/%s/state/m.test/k%d", r, n), `{"v":`+v+`}`)
				},
				observe: func(n int) string {
					return get(bob, fmt.Sprintf("/_matrix/client/v3/rooms/%s/state/m.test/k%d", r, n))
				}},
			{name: "PUT own member event with extra keys", event: true,
				send: func(v string, n int) rawResp {
					return call("PUT", fmt.Sprintf("/_matrix/client/v3/rooms/%s/state/m.room.member/%s", r, me),
						fmt.Sprintf(`{"membership":"join","n":%d,"v":%s}`, n, v))
				},
				observe: roomEvents},
			{name: "createRoom creation_content", event: true,
				send: func(v string, n int) rawResp {
					return call("POST", "/_matrix/client/v3/createRoom", `{"creation_content":{"v":`+v+`}}`)
				},
				observe: joinedRooms},
			{name: "createRoom initial_state", event: true,
				send: func(v string, n int) rawResp {
					return call("POST", "/_matrix/client/v3/createRoom", `{"initial_state":[{"type":"m.test","state_key":"","content":{"v":`+v+`}}]}`)
				},
				observe: joinedRooms},
			{name: "createRoom power_level_content_override", event: true,
				send: func(v string, n int) rawResp {
					return call("POST", "/_matrix/client/v3/createRoom", `{"power_level_content_override":{"org.example.v":`+v+`}}`)
				},
				observe: joinedRooms},
			{name: "invite reason", strField: true,
				send: func(v string, n int) rawResp {
					return call("POST", fmt.Sprintf("/_matrix/client/v3/rooms/%s/invite", r), fmt.Sprintf(`{"user_id":%q,"reason":%s}`, carol.UserID, v))
				},
				observe: roomEvents},
			{name: "kick reason", strField: true,
				send: func(v string, n int) rawResp {
					return call("POST", fmt.Sprintf("/_matrix/client/v3/rooms/%s/kick", r), fmt.Sprintf(`{"user_id":%q,"reason":%s}`, carol.UserID, v))
				},
				observe: roomEvents},
			{name: "redaction reason", strField: true,
				send: func(v string, n int) rawResp {
					return call("PUT", fmt.Sprintf("/_matrix/client/v3/rooms/%s/redact/%s/txn%d", r, esc(string(target)), n), `{"reason":`+v+`}`)
				},
				observe: roomEvents},
		}

		n := 0
		for _, ep := range endpoints {
			for _, in := range jsonInputs {
				if ep.strField && !in.str {
					continue
				}
				n++
				want := in.edge
				if ep.event {
					want = in.event
				}
				var before string
				if ep.observe != nil {
					before = ep.observe(n)
				}
				resp := ep.send(in.value, n)
				if want == "" {
					if resp.Status != http.StatusOK {
						t.Errorf("%s with %s: want 200, got %d %s", ep.name, in.name, resp.Status, resp.Raw)
					} else if ep.observe != nil && ep.observe(n) == before {
						t.Errorf("%s with %s: accepted, but nothing changed", ep.name, in.name)
					}
					continue
				}
				if resp.Status != http.StatusBadRequest || resp.errcode() != want {
					t.Errorf("%s with %s: want 400 %s, got %d %s", ep.name, in.name, want, resp.Status, resp.Raw)
				}
				if ep.observe != nil {
					if after := ep.observe(n); after != before {
						t.Errorf("%s with %s: refused, but what readers see changed:\nbefore %.300s\nafter  %.300s", ep.name, in.name, before, after)
					}
				}
			}
		}
	})
}

// TestQueryParametersCheckedEachOnItsOwn: a query parameter holding invalid
// UTF-8 or NUL is refused even when another parameter has a malformed escape
// (unescaping the query as a whole failed, and the check was skipped).
func TestQueryParametersCheckedEachOnItsOwn(t *testing.T) {
	srv := testserver.Start(t, testserver.Backends[0])
	alice := srv.Register(t, "alice")
	for _, q := range []string{"?x=%zz&dir=%ff", "?dir=%ff", "?x=%zz&dir=b%00", "?%zz&%ff=b"} {
		resp := clientCall(t, alice, "GET", "/_matrix/client/v3/publicRooms"+q, nil)
		if resp.Status != http.StatusBadRequest || resp.errcode() != "M_INVALID_PARAM" {
			t.Errorf("GET /publicRooms%s = %d %s, want 400 M_INVALID_PARAM", q, resp.Status, resp.Raw)
		}
	}
	// Path parameters: percent-decoded, they are checked the same way (a
	// UTF-8-encoded surrogate is not UTF-8).
	for _, p := range []string{"/_matrix/client/v3/rooms/%ED%A0%80/state", "/_matrix/client/v3/profile/%40a%FF%3Ab", "/_matrix/client/v3/rooms/%21a%00%3Ab/state"} {
		if resp := clientCall(t, alice, "GET", p, nil); resp.Status != http.StatusBadRequest || resp.errcode() != "M_INVALID_PARAM" {
			t.Errorf("GET %s = %d %s, want 400 M_INVALID_PARAM", p, resp.Status, resp.Raw)
		}
	}
	if resp := clientCall(t, alice, "GET", "/_matrix/client/v3/publicRooms?x=%zz&limit=5", nil); resp.Status != http.StatusOK {
		t.Errorf("a malformed escape alone is not refused (handlers never see it): %d %s", resp.Status, resp.Raw)
	}
}

// TestUnauthenticatedBodiesCheckedAtTheEdge: what Complement's
// TestRequestEncodingFails expects of /register (invalid UTF-8 is M_NOT_JSON),
// for every unauthenticated endpoint that takes JSON; and a /messages filter
// (query JSON) gets the same checks as a body.
func TestUnauthenticatedBodiesCheckedAtTheEdge(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		for _, path := range []string{"/_matrix/client/v3/register", "/_matrix/client/v3/login", "/_matrix/client/v3/refresh"} {
			for body, code := range map[string]string{
				"{\"username\":\"\xff\",\"password\":\"x\"}": "M_NOT_JSON",
				`{"username":"\ud800","password":"x"}`:       "M_BAD_JSON",
			} {
				if r := do(t, srv, "POST", path, "", []byte(body)); r.Status != http.StatusBadRequest || r.errcode() != code {
					t.Errorf("POST %s %.30q = %d %s, want 400 %s", path, body, r.Status, r.Raw, code)
				}
			}
		}
		alice := srv.Register(t, "alice")
		room := createRoom(t, alice, nil)
		base := "/_matrix/client/v3/rooms/" + url.PathEscape(string(room)) + "/messages?dir=b&filter="
		for filter, code := range map[string]string{
			`{"types":["\ud800"]}`: "M_BAD_JSON",
			`{"limit":1` + strings.Repeat(`,"x":[`, 1) + strings.Repeat("[", 120) + strings.Repeat("]", 121) + `}`: "M_BAD_JSON",
			`{"types":["m.room.message"]}`: "",
		} {
			r := clientCall(t, alice, "GET", base+url.QueryEscape(filter), nil)
			if (code == "" && r.Status != http.StatusOK) || (code != "" && (r.Status != http.StatusBadRequest || r.errcode() != code)) {
				t.Errorf("/messages filter %.40q = %d %.200s, want %q", filter, r.Status, r.Raw, code)
			}
		}
	})
}
