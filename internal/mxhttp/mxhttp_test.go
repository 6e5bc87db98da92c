package mxhttp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
)

func TestPathParamDecodesOnce(t *testing.T) {
	var got string
	r := chi.NewRouter()
	r.Get("/rooms/{roomID}/x", func(w http.ResponseWriter, req *http.Request) { got = PathParam(req, "roomID") })
	for _, tc := range []struct{ path, want string }{
		{"/rooms/!abc:example.org/x", "!abc:example.org"},
		{"/rooms/%21abc%3Aexample.org/x", "!abc:example.org"},
		{"/rooms/%23alias%3Aexample.org/x", "#alias:example.org"},
		{"/rooms/100%25/x", "100%"}, // a literal "%" must not be decoded twice
		{"/rooms/%2541/x", "%41"},   // nor must an escaped escape
		{"/rooms/a%2Fb/x", "a/b"},   // an escaped slash stays inside the parameter
		{"/rooms/%21a%25b%3Ac/x", "!a%b:c"},
	} {
		got = "<unset>"
		r.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, tc.path, nil))
		if got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.path, got, tc.want)
		}
	}
}

type challenge struct{ Session string }

func (c *challenge) Error() string   { return "challenge" }
func (c *challenge) HTTPStatus() int { return http.StatusUnauthorized }
func (c *challenge) MarshalJSON() ([]byte, error) {
	return json.Marshal(map[string]string{"session": c.Session})
}

func TestWriteError(t *testing.T) {
	for _, tc := range []struct {
		name   string
		err    error
		status int
		body   string
	}{
		{"matrix error", NotFound("gone"), 404, `{"errcode":"M_NOT_FOUND","error":"gone"}`},
		{"wrapped matrix error", fmt.Errorf("ctx: %w", Forbidden("no")), 403, `{"errcode":"M_FORBIDDEN","error":"no"}`},
		{"responder", fmt.Errorf("ctx: %w", &challenge{Session: "s1"}), 401, `{"session":"s1"}`},
		{"internal", errors.New("db exploded"), 500, `{"errcode":"M_UNKNOWN","error":"Internal server error"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := httptest.NewRecorder()
			WriteError(w, httptest.NewRequest(http.MethodGet, "/", nil), tc.err)
			if w.Code != tc.status || strings.TrimSpace(w.Body.String()) != tc.body {
				t.Fatalf("got %d %s, want %d %s", w.Code, w.Body.String(), tc.status, tc.body)
			}
		})
	}
}

func TestEmptyOr(t *testing.T) {
	if v, err := EmptyOr(nil); err != nil || v != Empty {
		t.Fatalf("EmptyOr(nil) = %v, %v", v, err)
	}
	want := BadJSON("x")
	if v, err := EmptyOr(want); err != want || v != nil {
		t.Fatalf("EmptyOr(err) = %v, %v", v, err)
	}
}

// TestWriteErrorClientGone: an internal error of a request its client
// cancelled is answered 499 with nothing logged above debug; the same error
// of a live request (or past a server deadline) is a logged 500.
func TestWriteErrorClientGone(t *testing.T) {
	var buf strings.Builder
	prev := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})))
	t.Cleanup(func() { slog.SetDefault(prev) })

	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	expired, cancel2 := context.WithTimeout(context.Background(), -time.Second)
	defer cancel2()
	for _, tc := range []struct {
		name   string
		ctx    context.Context
		err    error
		status int
		logged bool
	}{
		{"cancelled", cancelled, fmt.Errorf("query: %w", context.Canceled), StatusClientClosedRequest, false},
		{"cancelled, other error", cancelled, errors.New("sql: connection is already closed"), StatusClientClosedRequest, false},
		{"cancelled, Matrix error", cancelled, NotFound("gone"), http.StatusNotFound, false},
		{"live", context.Background(), errors.New("boom"), http.StatusInternalServerError, true},
		{"server deadline", expired, context.DeadlineExceeded, http.StatusInternalServerError, true},
	} {
		buf.Reset()
		rec := httptest.NewRecorder()
		WriteError(rec, httptest.NewRequest(http.MethodGet, "/sync", nil).WithContext(tc.ctx), tc.err)
		if rec.Code != tc.status {
			t.Errorf("%s: status %d, want %d", tc.name, rec.Code, tc.status)
		}
		if got := strings.Contains(buf.String(), "level=ERROR"); got != tc.logged {
			t.Errorf("%s: logged at error %v, want %v: %s", tc.name, got, tc.logged, buf.String())
		}
	}
}
