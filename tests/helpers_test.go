package tests

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/homeserver/testserver"
	"github.com/myelin-chat/myelin/internal/config"
)

// Raw HTTP calls, for what mautrix does not send or does not let a test see:
// bad input, exact status codes and errcodes, unstable endpoints.

// rawResp is a decoded HTTP answer.
type rawResp struct {
	Status int
	Header http.Header
	Body   map[string]any // nil unless the answer is a JSON object
	Raw    string
}

func (r rawResp) errcode() string { s, _ := r.Body["errcode"].(string); return s }

// httpCall sends method base+path with the access token (none if "") and a
// body: nil for none, a string or []byte sent as it is, anything else
// JSON-encoded. It fails the test only when the request cannot be made.
func httpCall(t testing.TB, base, method, path, token string, body any) rawResp {
	t.Helper()
	var raw []byte
	switch b := body.(type) {
	case nil:
	case string:
		raw = []byte(b)
	case []byte:
		raw = b
	default:
		var err error
		if raw, err = json.Marshal(b); err != nil {
			t.Fatal(err)
		}
	}
	var rd io.Reader
	if raw != nil {
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, base+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if raw != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(resp.Body)
	out := rawResp{Status: resp.StatusCode, Header: resp.Header, Raw: string(answer)}
	if len(answer) > 0 {
		_ = json.Unmarshal(answer, &out.Body)
	}
	return out
}

// do sends a request with a raw body (nil: none) to srv and decodes the JSON answer.
func do(t *testing.T, srv *testserver.Server, method, path, token string, body []byte) rawResp {
	t.Helper()
	return httpCall(t, srv.URL, method, path, token, body)
}

// doJSON is do with a JSON-encoded body.
func doJSON(t *testing.T, srv *testserver.Server, method, path, token string, body any) rawResp {
	t.Helper()
	raw, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	return do(t, srv, method, path, token, raw)
}

// clientCall is httpCall as the client's user, on the client's homeserver.
func clientCall(t testing.TB, c *mautrix.Client, method, path string, body any) rawResp {
	t.Helper()
	return httpCall(t, c.HomeserverURL.String(), method, path, c.AccessToken, body)
}

// forEachBackend runs fn as a parallel subtest against a fresh server on each
// backend.
func forEachBackend(t *testing.T, fn func(t *testing.T, srv *testserver.Server)) {
	forEachBackendWith(t, testserver.Options{}, fn)
}

// forEachBackendWith is forEachBackend with servers started with opts.
func forEachBackendWith(t *testing.T, opts testserver.Options, fn func(t *testing.T, srv *testserver.Server)) {
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			defer recoverMust(t)
			fn(t, testserver.Start(t, backend, opts))
		})
	}
}

// mustFailure carries a failed call out of must to the recover in forEachBackend.
type mustFailure struct{ err error }

// must returns v, failing the test (through forEachBackend's recover) on err.
func must[T any](v T, err error) T {
	if err != nil {
		panic(mustFailure{err})
	}
	return v
}

// recoverMust turns a must failure into a test failure.
func recoverMust(t *testing.T) {
	if r := recover(); r != nil {
		if f, ok := r.(mustFailure); ok {
			t.Fatalf("unexpected error: %v", f.err)
		}
		panic(r)
	}
}

// createRoom creates a room as creator from req (nil: the server's defaults)
// and joins the others to it.
func createRoom(t testing.TB, creator *mautrix.Client, req *mautrix.ReqCreateRoom, others ...*mautrix.Client) id.RoomID {
	t.Helper()
	if req == nil {
		req = &mautrix.ReqCreateRoom{}
	}
	resp, err := creator.CreateRoom(context.Background(), req)
	if err != nil {
		t.Fatalf("createRoom as %s: %v", creator.UserID, err)
	}
	for _, c := range others {
		joinRoom(t, c, resp.RoomID)
	}
	return resp.RoomID
}

// shareRoom puts the clients in one new public room.
func shareRoom(t testing.TB, creator *mautrix.Client, others ...*mautrix.Client) id.RoomID {
	t.Helper()
	return createRoom(t, creator, &mautrix.ReqCreateRoom{Preset: "public_chat"}, others...)
}

// joinRoom joins c to room by ID.
func joinRoom(t testing.TB, c *mautrix.Client, room id.RoomID) {
	t.Helper()
	if _, err := c.JoinRoomByID(context.Background(), room); err != nil {
		t.Fatalf("join %s as %s: %v", room, c.UserID, err)
	}
}

// sendText sends a text message to room as c and returns its event ID.
func sendText(t testing.TB, c *mautrix.Client, room id.RoomID, body string) id.EventID {
	t.Helper()
	resp, err := c.SendText(context.Background(), room, body)
	if err != nil {
		t.Fatalf("%s sending %q: %v", c.UserID, body, err)
	}
	return resp.EventID
}

// restartableOptions returns options whose every start uses one data
// directory and one database (the first start's: on PostgreSQL a fresh one),
// so a test can stop a server and start it again on the same store. extra,
// if not nil, adjusts the configuration further.
func restartableOptions(t *testing.T, extra func(*config.Config)) testserver.Options {
	dir := t.TempDir()
	var dbURL string
	return testserver.Options{Configure: func(c *config.Config) {
		c.DataDir = dir
		if dbURL == "" {
			dbURL = c.Database.URL
		}
		c.Database.URL = dbURL
		if extra != nil {
			extra(c)
		}
	}}
}

// coldUnreadCounts changes one of c's push rules (a new pattern each call),
// which invalidates every unread count cached for c: the next sync counts
// every room from the store, as after a restart.
func coldUnreadCounts(t testing.TB, c *mautrix.Client, i int) {
	t.Helper()
	r := clientCall(t, c, "PUT", "/_matrix/client/v3/pushrules/global/override/bench.cold", map[string]any{
		"actions":    []any{},
		"conditions": []any{map[string]any{"kind": "event_match", "key": "type", "pattern": fmt.Sprintf("bench.cold.%d", i)}}})
	if r.Status != 200 {
		t.Fatalf("PUT push rule: %d %s", r.Status, r.Raw)
	}
}
