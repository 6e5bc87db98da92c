package tests

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/go-chi/chi/v5"
	"maunium.net/go/mautrix"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

// TestNoRouteAnswers500OnGarbage walks every registered route and sends it
// malformed input: path parameters that are not IDs, bodies that are not JSON
// or have the wrong shape. The server must answer each with a 4xx Matrix error
// (or a success where the input happens to be valid) — never a 5xx.
func TestNoRouteAnswers500OnGarbage(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		alice := srv.Register(t, "alice")
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomAliasName: "robust"})
		if err != nil {
			t.Fatal(err)
		}
		sent, err := alice.SendText(ctx, room.RoomID, "hello")
		if err != nil {
			t.Fatal(err)
		}

		type route struct{ method, pattern string }
		var routes []route
		err = chi.Walk(srv.Handler().(chi.Routes), func(method, pattern string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
			routes = append(routes, route{method, pattern})
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		// Routes that end the session run last so the token stays valid for the rest.
		last := func(r route) bool { return strings.Contains(r.pattern, "/logout") }
		sort.SliceStable(routes, func(i, j int) bool { return !last(routes[i]) && last(routes[j]) })

		param := regexp.MustCompile(`\{[^}]+\}`)
		paramValues := [][]string{
			// plausible values, so handlers get past ID parsing into their bodies
			{string(room.RoomID), string(alice.UserID), string(sent.EventID), "m.room.message", "txn1", "#robust:localhost", alice.DeviceID.String(), "m.room.topic", "global", "content", "override", ".m.rule.master", "m.read"},
			// garbage
			{"%00", "!", "@", "$", "..", strings.Repeat("x", 2000), "%F0%9F%92%A9", "%25", "-1", "9999999999999999999999"},
		}
		bodies := []string{
			"",
			"not json",
			"[]",
			`{"a":`,
			"null",
			`"string"`,
			`{"content": 5, "body": [], "membership": {}, "user_id": 7, "auth": "x", "device_keys": [], "one_time_keys": 1, "filter": 5, "limit": "x", "room_version": 3, "timeout": "y"}`,
			strings.Repeat("[", 5000) + strings.Repeat("]", 5000),
			// NUL inside strings: PostgreSQL text cannot hold it
			`{"displayname": "a\u0000b", "body": "\u0000", "msgtype": "m.text", "name": "\u0000", "topic": "x\u0000", "alias": "#\u0000:localhost", "room_id": "!\u0000:localhost", "reason": "\u0000", "user_id": "@\u0000:localhost"}`,
			// invalid UTF-8, unpaired surrogates, numbers that are not canonical JSON
			"{\"displayname\": \"\xff\", \"body\": \"\xed\xa0\x80\", \"msgtype\": \"m.text\", \"reason\": \"\xc3\", \"messages\": {\"@alice:localhost\": {\"*\": {\"x\": \"\xff\"}}}}",
			`{"displayname": "\ud800", "body": "\udc00", "msgtype": "m.text", "name": "\ud800", "reason": "\udfff", "messages": {"@alice:localhost": {"*": {"x": "\ud800"}}}}`,
			`{"body": "x", "msgtype": "m.text", "n": 1.5, "big": 9007199254740993, "inf": 1e400, "creation_content": {"f": 1.5}, "initial_state": [{"type": "m.x", "state_key": "", "content": {"n": 1e400}}], "power_level_content_override": {"ban": 9007199254740993}}`,
		}
		client := &http.Client{}
		requests := 0
		for _, r := range routes {
			if r.method == "OPTIONS" || r.method == "CONNECT" || r.method == "TRACE" {
				continue
			}
			for _, values := range paramValues {
				for vi := range values {
					i := 0
					path := param.ReplaceAllStringFunc(r.pattern, func(string) string {
						v := values[(vi+i)%len(values)]
						i++
						return v
					})
					path = strings.ReplaceAll(path, "/*", "/x")
					for _, body := range bodies {
						if r.method == "GET" || r.method == "DELETE" {
							if body != "" {
								continue // one pass is enough for body-less methods
							}
						}
						req, err := http.NewRequestWithContext(ctx, r.method, srv.URL+path+"?timeout=0&limit=x&from=garbage&dir=q&filter=%7B", bytes.NewBufferString(body))
						if err != nil {
							continue // path not even a URL: nothing a client could send
						}
						req.Header.Set("Authorization", "Bearer "+alice.AccessToken)
						req.Header.Set("Content-Type", "application/json")
						resp, err := client.Do(req)
						if err != nil {
							t.Fatalf("%s %s: %v", r.method, path, err)
						}
						raw, _ := io.ReadAll(resp.Body)
						resp.Body.Close()
						requests++
						if resp.StatusCode >= 500 {
							u, _ := url.PathUnescape(path)
							t.Errorf("%s %s with body %.60q → %d %s", r.method, u, body, resp.StatusCode, raw)
						}
					}
				}
			}
		}
		t.Logf("%d routes, %d requests, no 5xx expected", len(routes), requests)
	})
}
