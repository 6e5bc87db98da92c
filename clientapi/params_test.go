package clientapi

import (
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/internal/authn"
	"github.com/myelin-chat/myelin/internal/config"
	"github.com/myelin-chat/myelin/mediaapi"
	"github.com/myelin-chat/myelin/roomserver"
	"github.com/myelin-chat/myelin/roomview"
)

// errFake ends a call that reached the fake: the handler's parsing is what
// is under test, not the module.
var errFake = errors.New("reached the module")

// fakeRooms records the requests the room handlers make; methods it does not
// override are nil and would panic, so a test fails if a handler calls one.
type fakeRooms struct {
	Rooms
	RoomView
	calls    int
	messages roomview.MessagesRequest
	send     roomserver.SendRequest
	members  roomview.MembersQuery
	limit    int
}

func (f *fakeRooms) Messages(_ context.Context, _ id.UserID, _ id.RoomID, req roomview.MessagesRequest) (*roomview.MessagesResponse, error) {
	f.calls++
	f.messages = req
	return nil, errFake
}

func (f *fakeRooms) Context(_ context.Context, _ id.UserID, _ id.RoomID, _ id.EventID, limit int, _ *roomview.EventFilter) (*roomview.ContextResponse, error) {
	f.calls++
	f.limit = limit
	return nil, errFake
}

func (f *fakeRooms) Send(_ context.Context, r roomserver.SendRequest) (id.EventID, error) {
	f.calls++
	f.send = r
	return "$sent", nil
}

func (f *fakeRooms) Members(_ context.Context, _ id.UserID, _ id.RoomID, q roomview.MembersQuery) ([]json.RawMessage, error) {
	f.calls++
	f.members = q
	return nil, nil
}

// authedRouter serves the authenticated client routes that need no concrete
// module (rooms through api.Rooms, capabilities, TURN) to @me:x on device
// DEV, as the authentication middleware would.
func authedRouter(api *API) http.Handler {
	if api.Config == nil {
		api.Config = testConfig()
	}
	r := chi.NewRouter()
	r.Use(Middleware(api.Config))
	r.NotFound(NotFound)
	r.MethodNotAllowed(MethodNotAllowed)
	r.Route("/_matrix/client/v3", func(r chi.Router) {
		r.Use(func(next http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
				d := &authn.Device{UserID: "@me:x", DeviceID: "DEV"}
				next.ServeHTTP(w, req.WithContext(authn.WithDevice(req.Context(), d)))
			})
		})
		api.roomRoutes(r) // nothing when api.Rooms is nil
		api.accountRoutes(r)
		api.callRoutes(r)
	})
	return r
}

func TestRoomMessagesParameters(t *testing.T) {
	rooms := &fakeRooms{}
	h := authedRouter(&API{Rooms: rooms, RoomView: rooms})
	get := func(query string) answer {
		t.Helper()
		return serve(t, h, httptest.NewRequest("GET", "/_matrix/client/v3/rooms/!r:x/messages"+query, nil))
	}
	for _, c := range []struct {
		query     string
		wantLimit int
		wantDir   string
	}{
		{"", 10, ""},
		{"?dir=b&limit=3&from=s1&to=s9", 3, "b"},
		{"?dir=f&filter=%7B%22limit%22%3A7%7D", 7, "f"},  // the filter's limit when none given
		{"?limit=2&filter=%7B%22limit%22%3A7%7D", 2, ""}, // the parameter wins
		{"?limit=0", 0, ""},                              // left to the module
		{"?dir=sideways", 10, "sideways"},                // checked by the module after access
		{"?filter=%7B%22types%22%3A%5B%22m.room.message%22%5D%7D", 10, ""},
	} {
		rooms.calls = 0
		get(c.query)
		if rooms.calls != 1 || rooms.messages.Limit != c.wantLimit || rooms.messages.Dir != c.wantDir {
			t.Errorf("%q: module called %d times with %+v, want limit %d dir %q", c.query, rooms.calls, rooms.messages, c.wantLimit, c.wantDir)
		}
	}
	if get("?dir=b&limit=3&from=s1&to=s9"); rooms.messages.From != "s1" || rooms.messages.To != "s9" {
		t.Fatalf("from/to not passed: %+v", rooms.messages)
	}
	// Bad input is refused before the module is asked.
	for query, code := range map[string]string{
		"?limit=-1":                           "M_INVALID_PARAM",
		"?limit=ten":                          "M_INVALID_PARAM",
		"?limit=1e3":                          "M_INVALID_PARAM",
		"?filter=%7B":                         "M_BAD_JSON",
		"?filter=12":                          "M_BAD_JSON",
		"?filter=%5B%5D":                      "M_BAD_JSON",
		"?filter=%7B%22limit%22%3A%22x%22%7D": "M_BAD_JSON",
	} {
		rooms.calls = 0
		a := get(query)
		if a.code != 400 || a.errcode() != code || rooms.calls != 0 {
			t.Errorf("%q = %d %v (module called %d times), want 400 %s", query, a.code, a.body, rooms.calls, code)
		}
	}
	rooms.calls = 0
	a := serve(t, h, httptest.NewRequest("GET", "/_matrix/client/v3/rooms/not-a-room/messages", nil))
	if a.code != 400 || a.errcode() != "M_INVALID_PARAM" || rooms.calls != 0 {
		t.Fatalf("invalid room ID = %d %v", a.code, a.body)
	}
	// The context endpoint parses its limit the same way.
	get2 := func(query string) answer {
		return serve(t, h, httptest.NewRequest("GET", "/_matrix/client/v3/rooms/!r:x/context/$e"+query, nil))
	}
	if get2("?limit=4"); rooms.limit != 4 {
		t.Fatalf("context limit %d", rooms.limit)
	}
	rooms.calls = 0
	if a := get2("?limit=-4"); a.code != 400 || rooms.calls != 0 {
		t.Fatalf("context with a negative limit = %d %v", a.code, a.body)
	}
}

func TestRoomMembersParameters(t *testing.T) {
	rooms := &fakeRooms{}
	h := authedRouter(&API{Rooms: rooms, RoomView: rooms})
	a := serve(t, h, httptest.NewRequest("GET", "/_matrix/client/v3/rooms/!r:x/members?membership=join&not_membership=ban&at=tok", nil))
	if a.code != 200 || rooms.members != (roomview.MembersQuery{At: "tok", Membership: "join", NotMembership: "ban"}) {
		t.Fatalf("members = %d %v, query %+v", a.code, a.body, rooms.members)
	}
	for _, q := range []string{"?membership=joined", "?not_membership=JOIN", "?membership=*"} {
		rooms.calls = 0
		a := serve(t, h, httptest.NewRequest("GET", "/_matrix/client/v3/rooms/!r:x/members"+q, nil))
		if a.code != 400 || a.errcode() != "M_INVALID_PARAM" || rooms.calls != 0 {
			t.Errorf("members%s = %d %v", q, a.code, a.body)
		}
	}
}

func TestSendParameters(t *testing.T) {
	rooms := &fakeRooms{}
	h := authedRouter(&API{Rooms: rooms, RoomView: rooms})
	put := func(path, body string) answer {
		t.Helper()
		return serve(t, h, httptest.NewRequest("PUT", "/_matrix/client/v3/rooms/!r:x"+path, strings.NewReader(body)))
	}
	a := put("/send/m.room.message/txn1", `{"body":"hi"}`)
	if a.code != 200 || a.body["event_id"] != "$sent" {
		t.Fatalf("send = %d %v", a.code, a.body)
	}
	if s := rooms.send; s.TxnID != "txn1" || s.Type != "m.room.message" || s.RoomID != "!r:x" || s.Sender != "@me:x" ||
		s.DeviceID != "DEV" || s.StateKey != nil || string(s.Content) != `{"body":"hi"}` {
		t.Fatalf("send request %+v", s)
	}
	a = put("/state/m.room.name/some/key", `{"name":"n"}`)
	if a.code != 200 || rooms.send.StateKey == nil || *rooms.send.StateKey != "some/key" || rooms.send.TxnID != "" {
		t.Fatalf("put state = %d %v, request %+v", a.code, a.body, rooms.send)
	}
	long := strings.Repeat("t", roomserver.MaxFieldBytes+1)
	for _, c := range []struct {
		path, body, code string
	}{
		{"/send/m.room.message/" + long, `{}`, "M_INVALID_PARAM"},
		{"/state/m.room.name/" + long, `{}`, "M_INVALID_PARAM"},
		{"/send/" + long + "/txn", `{}`, "M_INVALID_PARAM"},
		{"/send/m.room.message/txn2", `not json`, "M_NOT_JSON"},
		{"/send/m.room.message/txn2", `["an","array"]`, "M_BAD_JSON"},
		{"/state/m.room.name/k", `"a string"`, "M_BAD_JSON"},
	} {
		rooms.calls = 0
		a := put(c.path, c.body)
		if a.code != 400 || a.errcode() != c.code || rooms.calls != 0 {
			t.Errorf("PUT %.60s with %s = %d %v (module called %d times), want 400 %s", c.path, c.body, a.code, a.body, rooms.calls, c.code)
		}
	}
	// A transaction ID of exactly the bound is accepted.
	rooms.calls = 0
	if a := put("/send/m.room.message/"+long[1:], `{}`); a.code != 200 || rooms.calls != 1 {
		t.Fatalf("transaction ID at the bound = %d %v", a.code, a.body)
	}
}

func TestCapabilities(t *testing.T) {
	cfg := testConfig()
	cfg.Rooms.DefaultVersion = "10"
	h := authedRouter(&API{Config: cfg})
	a := serve(t, h, httptest.NewRequest("GET", "/_matrix/client/v3/capabilities", nil))
	if a.code != 200 {
		t.Fatalf("capabilities = %d %v", a.code, a.body)
	}
	caps := a.body["capabilities"].(map[string]any)
	versions := caps["m.room_versions"].(map[string]any)
	available := versions["available"].(map[string]any)
	if versions["default"] != "10" || available["10"] != "stable" || available["12"] != "stable" || len(available) != len(stableRoomVersions) {
		t.Fatalf("room versions %v", versions)
	}
	if caps["m.3pid_changes"].(map[string]any)["enabled"] != false || caps["m.change_password"].(map[string]any)["enabled"] != true {
		t.Fatalf("capabilities %v", caps)
	}
	// The default room version must be one the server offers.
	if _, ok := available[config.Default().Rooms.DefaultVersion]; !ok {
		t.Fatalf("the default configuration's room version %q is not available", config.Default().Rooms.DefaultVersion)
	}
}

func TestTurnServer(t *testing.T) {
	cfg := testConfig()
	h := authedRouter(&API{Config: cfg})
	if a := serve(t, h, httptest.NewRequest("GET", "/_matrix/client/v3/voip/turnServer", nil)); a.code != 200 || len(a.body) != 0 {
		t.Fatalf("turnServer without TURN = %d %v, want {}", a.code, a.body)
	}
	cfg.Calls.TurnURIs = []string{"turn:turn.example.org"}
	cfg.Calls.TurnUsername, cfg.Calls.TurnPassword = "u", "p"
	a := serve(t, h, httptest.NewRequest("GET", "/_matrix/client/v3/voip/turnServer", nil))
	if a.code != 200 || a.body["username"] != "u" || a.body["password"] != "p" || a.body["ttl"] != float64(3600) {
		t.Fatalf("turnServer with static credentials = %d %v", a.code, a.body)
	}

	// Shared secret: coturn's TURN REST API credentials.
	c := config.Calls{TurnSharedSecret: "s3cret", TurnUserLifetime: config.Duration{Duration: 10 * time.Minute}}
	now := time.Unix(1_700_000_000, 0)
	user, pass, ttl := turnCredentials(c, "@me:x", now)
	if user != "1700000600:@me:x" || ttl != 600 {
		t.Fatalf("username %q ttl %d", user, ttl)
	}
	mac := hmac.New(sha1.New, []byte("s3cret"))
	mac.Write([]byte(user))
	if pass != base64.StdEncoding.EncodeToString(mac.Sum(nil)) {
		t.Fatalf("password %q is not base64(HMAC-SHA1(secret, username))", pass)
	}
}

func TestThumbnailRequestParameters(t *testing.T) {
	for _, c := range []struct {
		query string
		want  mediaapi.ThumbnailRequest
		code  string
	}{
		{"width=32&height=16", mediaapi.ThumbnailRequest{Width: 32, Height: 16, Method: mediaapi.MethodScale}, ""},
		{"width=32&height=16&method=crop&animated=true", mediaapi.ThumbnailRequest{Width: 32, Height: 16, Method: mediaapi.MethodCrop, Animated: true}, ""},
		{"width=32&height=16&animated=false", mediaapi.ThumbnailRequest{Width: 32, Height: 16, Method: mediaapi.MethodScale}, ""},
		{"height=16", mediaapi.ThumbnailRequest{}, "M_MISSING_PARAM"},
		{"width=32", mediaapi.ThumbnailRequest{}, "M_MISSING_PARAM"},
		{"width=0&height=16", mediaapi.ThumbnailRequest{}, "M_INVALID_PARAM"},
		{"width=-3&height=16", mediaapi.ThumbnailRequest{}, "M_INVALID_PARAM"},
		{"width=big&height=16", mediaapi.ThumbnailRequest{}, "M_INVALID_PARAM"},
		{"width=32&height=16&method=stretch", mediaapi.ThumbnailRequest{}, "M_INVALID_PARAM"},
		{"width=32&height=16&animated=yes", mediaapi.ThumbnailRequest{}, "M_INVALID_PARAM"},
	} {
		got, err := thumbnailRequest(httptest.NewRequest("GET", "/thumbnail?"+c.query, nil))
		if c.code == "" {
			if err != nil || got != c.want {
				t.Errorf("%s = %+v, %v; want %+v", c.query, got, err, c.want)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), c.code) {
			t.Errorf("%s: error %v, want %s", c.query, err, c.code)
		}
	}
}
