package tests

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/myelin-chat/myelin/homeserver/testserver"
	"github.com/myelin-chat/myelin/internal/config"
)

// badCase is one request and the Matrix error it must get.
type badCase struct {
	name       string
	method     string
	path       string
	token      string // "alice", "bob", "bad", or "" for none
	body       string // raw; "" sends no body
	wantStatus int
	wantCode   string
}

// TestAccountsBadInput sends wrong requests to every account endpoint and
// checks the status and errcode of each answer (none may be a 500).
func TestAccountsBadInput(t *testing.T) {
	opts := testserver.Options{Configure: func(c *config.Config) {
		c.Register.ReservedUsernames = []string{"admin", "support*"}
	}}
	forEachBackendWith(t, opts, func(t *testing.T, srv *testserver.Server) {
		alice := srv.Register(t, "alice")
		bob := srv.Register(t, "bob")
		tokens := map[string]string{"alice": alice.AccessToken, "bob": bob.AccessToken, "bad": "myl_notatoken"}

		// A UIA session opened for a different operation than the one it is used on.
		pwChallenge := doJSON(t, srv, "POST", "/_matrix/client/v3/account/password", alice.AccessToken, map[string]any{"new_password": "long-enough-1"})
		otherSession, _ := pwChallenge.Body["session"].(string)
		if pwChallenge.Status != 401 || otherSession == "" {
			t.Fatalf("password challenge = %d %v", pwChallenge.Status, pwChallenge.Body)
		}

		const v3 = "/_matrix/client/v3"
		cases := []badCase{
			// Routing, auth middleware.
			{"unknown endpoint", "GET", v3 + "/no/such/thing", "alice", "", 404, "M_UNRECOGNIZED"},
			{"unknown top-level path", "GET", "/nothing", "", "", 404, "M_UNRECOGNIZED"},
			{"wrong method", "GET", v3 + "/logout", "alice", "", 405, "M_UNRECOGNIZED"},
			{"wrong method on login", "PUT", v3 + "/login", "", "{}", 405, "M_UNRECOGNIZED"},
			{"whoami no token", "GET", v3 + "/account/whoami", "", "", 401, "M_MISSING_TOKEN"},
			{"whoami bad token", "GET", v3 + "/account/whoami", "bad", "", 401, "M_UNKNOWN_TOKEN"},

			// /login
			{"login not json", "POST", v3 + "/login", "", "{nope", 400, "M_NOT_JSON"},
			{"login wrong types", "POST", v3 + "/login", "", `{"type": 1}`, 400, "M_BAD_JSON"},
			{"login array", "POST", v3 + "/login", "", `[1,2]`, 400, "M_BAD_JSON"},
			{"login missing type", "POST", v3 + "/login", "", `{"password": "x"}`, 400, "M_MISSING_PARAM"},
			{"login unknown type", "POST", v3 + "/login", "", `{"type": "m.login.foo"}`, 400, "M_UNKNOWN"},
			{"login missing user", "POST", v3 + "/login", "", `{"type": "m.login.password", "password": "x"}`, 400, "M_MISSING_PARAM"},
			{"login 3pid identifier", "POST", v3 + "/login", "", `{"type": "m.login.password", "identifier": {"type": "m.id.thirdparty", "medium": "email", "address": "a@b.c"}, "password": "x"}`, 400, "M_UNKNOWN"},
			{"login wrong password", "POST", v3 + "/login", "", `{"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": "wrong"}`, 403, "M_FORBIDDEN"},
			{"login unknown user", "POST", v3 + "/login", "", `{"type": "m.login.password", "user": "nobody", "password": "wrong"}`, 403, "M_FORBIDDEN"},
			{"login identifier wrong type", "POST", v3 + "/login", "", `{"type": "m.login.password", "identifier": "alice"}`, 400, "M_BAD_JSON"},
			{"login token missing", "POST", v3 + "/login", "", `{"type": "m.login.token"}`, 400, "M_MISSING_PARAM"},
			{"login token bad", "POST", v3 + "/login", "", `{"type": "m.login.token", "token": "nope"}`, 403, "M_FORBIDDEN"},
			{"login device_id too long", "POST", v3 + "/login", "", `{"type": "m.login.password", "user": "alice", "password": "password-alice", "device_id": "` + strings.Repeat("D", 300) + `"}`, 400, "M_INVALID_PARAM"},

			// /register
			{"register not json", "POST", v3 + "/register", "", "nope", 400, "M_NOT_JSON"},
			{"register wrong types", "POST", v3 + "/register", "", `{"username": 5}`, 400, "M_BAD_JSON"},
			{"register guest", "POST", v3 + "/register?kind=guest", "", `{}`, 403, "M_GUEST_ACCESS_FORBIDDEN"},
			{"register bad kind", "POST", v3 + "/register?kind=robot", "", `{}`, 400, "M_INVALID_PARAM"},
			{"register invalid username", "POST", v3 + "/register", "", `{"username": "Not Valid!", "password": "long-enough-pw"}`, 400, "M_INVALID_USERNAME"},
			{"register underscore", "POST", v3 + "/register", "", `{"username": "_bridge", "password": "long-enough-pw"}`, 400, "M_INVALID_USERNAME"},
			{"register in use", "POST", v3 + "/register", "", `{"username": "alice", "password": "long-enough-pw"}`, 400, "M_USER_IN_USE"},
			{"register reserved", "POST", v3 + "/register", "", `{"username": "admin", "password": "long-enough-pw"}`, 400, "M_EXCLUSIVE"},
			{"register reserved prefix", "POST", v3 + "/register", "", `{"username": "support-team", "password": "long-enough-pw"}`, 400, "M_EXCLUSIVE"},
			{"register weak password", "POST", v3 + "/register", "", `{"username": "carol", "password": "short"}`, 400, "M_WEAK_PASSWORD"},
			{"register wrong stage", "POST", v3 + "/register", "", `{"username": "carol", "password": "long-enough-pw", "auth": {"type": "m.login.password", "password": "x"}}`, 401, "M_FORBIDDEN"},
			{"register unknown session", "POST", v3 + "/register", "", `{"username": "carol", "password": "long-enough-pw", "auth": {"type": "m.login.dummy", "session": "nope"}}`, 400, "M_UNKNOWN"},
			{"register auth wrong type", "POST", v3 + "/register", "", `{"username": "carol", "password": "long-enough-pw", "auth": "dummy"}`, 400, "M_BAD_JSON"},
			{"register missing password", "POST", v3 + "/register", "", `{"username": "carol", "auth": {"type": "m.login.dummy"}}`, 400, "M_MISSING_PARAM"},
			{"available missing", "GET", v3 + "/register/available", "", "", 400, "M_MISSING_PARAM"},
			{"available invalid", "GET", v3 + "/register/available?username=B%20B", "", "", 400, "M_INVALID_USERNAME"},
			{"available taken", "GET", v3 + "/register/available?username=alice", "", "", 400, "M_USER_IN_USE"},
			{"available reserved", "GET", v3 + "/register/available?username=admin", "", "", 400, "M_EXCLUSIVE"},
			{"token validity missing", "GET", "/_matrix/client/v1/register/m.login.registration_token/validity", "", "", 400, "M_MISSING_PARAM"},

			// /refresh, /logout
			{"refresh not json", "POST", v3 + "/refresh", "", "{", 400, "M_NOT_JSON"},
			{"refresh wrong types", "POST", v3 + "/refresh", "", `{"refresh_token": true}`, 400, "M_BAD_JSON"},
			{"refresh missing", "POST", v3 + "/refresh", "", `{}`, 400, "M_MISSING_PARAM"},
			{"refresh unknown", "POST", v3 + "/refresh", "", `{"refresh_token": "mylr_nope"}`, 401, "M_UNKNOWN_TOKEN"},
			{"logout no token", "POST", v3 + "/logout", "", "{}", 401, "M_MISSING_TOKEN"},
			{"logout bad token", "POST", v3 + "/logout", "bad", "{}", 401, "M_UNKNOWN_TOKEN"},
			{"logout/all no token", "POST", v3 + "/logout/all", "", "{}", 401, "M_MISSING_TOKEN"},
			{"get_token not json", "POST", "/_matrix/client/v1/login/get_token", "alice", "{", 400, "M_NOT_JSON"},
			{"get_token no token", "POST", "/_matrix/client/v1/login/get_token", "", "{}", 401, "M_MISSING_TOKEN"},

			// /account/password, /account/deactivate
			{"password not json", "POST", v3 + "/account/password", "alice", "x", 400, "M_NOT_JSON"},
			{"password wrong types", "POST", v3 + "/account/password", "alice", `{"new_password": 12345678}`, 400, "M_BAD_JSON"},
			{"password logout_devices type", "POST", v3 + "/account/password", "alice", `{"new_password": "long-enough-1", "logout_devices": "yes"}`, 400, "M_BAD_JSON"},
			{"password missing", "POST", v3 + "/account/password", "alice", `{}`, 400, "M_MISSING_PARAM"},
			{"password weak", "POST", v3 + "/account/password", "alice", `{"new_password": "short"}`, 400, "M_WEAK_PASSWORD"},
			{"password no auth", "POST", v3 + "/account/password", "alice", `{"new_password": "long-enough-1"}`, 401, ""},
			{"password wrong stage", "POST", v3 + "/account/password", "alice", `{"new_password": "long-enough-1", "auth": {"type": "m.login.dummy"}}`, 401, "M_FORBIDDEN"},
			{"password wrong password", "POST", v3 + "/account/password", "alice", `{"new_password": "long-enough-1", "auth": {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": "wrong"}}`, 401, "M_FORBIDDEN"},
			{"password other user's identifier", "POST", v3 + "/account/password", "alice", `{"new_password": "long-enough-1", "auth": {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "bob"}, "password": "password-bob"}}`, 403, "M_FORBIDDEN"}, // refused outright, as Synapse does (Complement TestDeviceManagement)
			{"password no token", "POST", v3 + "/account/password", "", `{"new_password": "long-enough-1"}`, 401, "M_MISSING_TOKEN"},
			{"session of another operation", "POST", v3 + "/account/deactivate", "alice", `{"auth": {"type": "m.login.password", "session": "` + otherSession + `", "user": "alice", "password": "password-alice"}}`, 403, "M_FORBIDDEN"},
			{"session of another user", "POST", v3 + "/account/password", "bob", `{"new_password": "long-enough-1", "auth": {"type": "m.login.password", "session": "` + otherSession + `", "user": "bob", "password": "password-bob"}}`, 403, "M_FORBIDDEN"},
			{"deactivate not json", "POST", v3 + "/account/deactivate", "alice", "x", 400, "M_NOT_JSON"},
			{"deactivate wrong types", "POST", v3 + "/account/deactivate", "alice", `{"erase": "yes"}`, 400, "M_BAD_JSON"},
			{"deactivate no auth", "POST", v3 + "/account/deactivate", "alice", `{}`, 401, ""},
			{"deactivate no token", "POST", v3 + "/account/deactivate", "", `{}`, 401, "M_MISSING_TOKEN"},
			{"3pid no token", "GET", v3 + "/account/3pid", "", "", 401, "M_MISSING_TOKEN"},
			{"3pid add unsupported", "POST", v3 + "/account/3pid/add", "alice", "{}", 404, "M_UNRECOGNIZED"},
			{"capabilities no token", "GET", v3 + "/capabilities", "", "", 401, "M_MISSING_TOKEN"},

			// /devices
			{"devices no token", "GET", v3 + "/devices", "", "", 401, "M_MISSING_TOKEN"},
			{"device unknown", "GET", v3 + "/devices/NOPE", "alice", "", 404, "M_NOT_FOUND"},
			{"device put unknown", "PUT", v3 + "/devices/NOPE", "alice", `{"display_name": "x"}`, 404, "M_NOT_FOUND"},
			{"device put not json", "PUT", v3 + "/devices/" + string(alice.DeviceID), "alice", "x", 400, "M_NOT_JSON"},
			{"device put wrong types", "PUT", v3 + "/devices/" + string(alice.DeviceID), "alice", `{"display_name": 5}`, 400, "M_BAD_JSON"},
			{"device of another user", "GET", v3 + "/devices/" + string(bob.DeviceID), "alice", "", 404, "M_NOT_FOUND"},
			{"device delete not json", "DELETE", v3 + "/devices/" + string(alice.DeviceID), "alice", "x", 400, "M_NOT_JSON"},
			{"device delete no auth", "DELETE", v3 + "/devices/" + string(alice.DeviceID), "alice", "", 401, ""},
			{"device delete wrong password", "DELETE", v3 + "/devices/" + string(alice.DeviceID), "alice", `{"auth": {"type": "m.login.password", "user": "alice", "password": "nope"}}`, 401, "M_FORBIDDEN"},
			{"delete_devices not json", "POST", v3 + "/delete_devices", "alice", "x", 400, "M_NOT_JSON"},
			{"delete_devices missing", "POST", v3 + "/delete_devices", "alice", `{}`, 400, "M_MISSING_PARAM"},
			{"delete_devices wrong types", "POST", v3 + "/delete_devices", "alice", `{"devices": "ABC"}`, 400, "M_BAD_JSON"},
			{"delete_devices no auth", "POST", v3 + "/delete_devices", "alice", `{"devices": ["X"]}`, 401, ""},

			// /profile
			{"profile unknown user", "GET", v3 + "/profile/@nobody:localhost", "alice", "", 404, "M_NOT_FOUND"},
			{"profile remote user", "GET", v3 + "/profile/@someone:elsewhere.example", "alice", "", 404, "M_NOT_FOUND"},
			{"profile not a user id", "GET", v3 + "/profile/alice", "alice", "", 404, "M_NOT_FOUND"},
			{"profile field unset", "GET", v3 + "/profile/@alice:localhost/avatar_url", "alice", "", 404, "M_NOT_FOUND"},
			{"profile field bad key", "GET", v3 + "/profile/@alice:localhost/Bad-Key", "alice", "", 400, "M_INVALID_PARAM"},
			{"displayname of another user", "PUT", v3 + "/profile/@bob:localhost/displayname", "alice", `{"displayname": "x"}`, 403, "M_FORBIDDEN"},
			{"displayname not json", "PUT", v3 + "/profile/@alice:localhost/displayname", "alice", "x", 400, "M_NOT_JSON"},
			{"displayname wrong type", "PUT", v3 + "/profile/@alice:localhost/displayname", "alice", `{"displayname": 5}`, 400, "M_BAD_JSON"},
			{"displayname missing", "PUT", v3 + "/profile/@alice:localhost/displayname", "alice", `{}`, 400, "M_MISSING_PARAM"},
			{"displayname not object", "PUT", v3 + "/profile/@alice:localhost/displayname", "alice", `"x"`, 400, "M_BAD_JSON"},
			{"avatar wrong type", "PUT", v3 + "/profile/@alice:localhost/avatar_url", "alice", `{"avatar_url": ["mxc://a/b"]}`, 400, "M_BAD_JSON"},
			{"profile bad key", "PUT", v3 + "/profile/@alice:localhost/NotValid", "alice", `{"NotValid": 1}`, 400, "M_INVALID_PARAM"},
			{"profile write no token", "PUT", v3 + "/profile/@alice:localhost/displayname", "", `{"displayname": "x"}`, 401, "M_MISSING_TOKEN"}, // GET needs none (profile.yaml)

			// account data
			{"account data other user", "PUT", v3 + "/user/@bob:localhost/account_data/org.example.x", "alice", `{}`, 403, "M_FORBIDDEN"},
			{"account data get other user", "GET", v3 + "/user/@bob:localhost/account_data/org.example.x", "alice", "", 403, "M_FORBIDDEN"},
			{"account data not json", "PUT", v3 + "/user/@alice:localhost/account_data/org.example.x", "alice", "x", 400, "M_NOT_JSON"},
			{"account data not object", "PUT", v3 + "/user/@alice:localhost/account_data/org.example.x", "alice", `[1]`, 400, "M_BAD_JSON"},
			{"account data fully_read", "PUT", v3 + "/user/@alice:localhost/account_data/m.fully_read", "alice", `{"event_id": "$x"}`, 405, "M_BAD_JSON"},
			{"account data push_rules", "PUT", v3 + "/user/@alice:localhost/account_data/m.push_rules", "alice", `{}`, 405, "M_BAD_JSON"},
			{"account data unknown", "GET", v3 + "/user/@alice:localhost/account_data/org.example.none", "alice", "", 404, "M_NOT_FOUND"},
			{"room account data other user", "PUT", v3 + "/user/@bob:localhost/rooms/!r:localhost/account_data/m.tag", "alice", `{}`, 403, "M_FORBIDDEN"},
			{"room account data bad room", "PUT", v3 + "/user/@alice:localhost/rooms/notaroom/account_data/m.tag", "alice", `{}`, 400, "M_INVALID_PARAM"},
			{"room account data fully_read", "PUT", v3 + "/user/@alice:localhost/rooms/!r:localhost/account_data/m.fully_read", "alice", `{}`, 405, "M_BAD_JSON"},
			{"room account data unknown", "GET", v3 + "/user/@alice:localhost/rooms/!r:localhost/account_data/m.tag", "alice", "", 404, "M_NOT_FOUND"},
			{"account data no token", "GET", v3 + "/user/@alice:localhost/account_data/org.example.x", "", "", 401, "M_MISSING_TOKEN"},

			// filters
			{"filter other user", "POST", v3 + "/user/@bob:localhost/filter", "alice", `{}`, 403, "M_FORBIDDEN"},
			{"filter not json", "POST", v3 + "/user/@alice:localhost/filter", "alice", "{", 400, "M_NOT_JSON"},
			{"filter not object", "POST", v3 + "/user/@alice:localhost/filter", "alice", `[]`, 400, "M_BAD_JSON"},
			{"filter wrong types", "POST", v3 + "/user/@alice:localhost/filter", "alice", `{"room": {"timeline": {"limit": "ten"}}}`, 400, "M_BAD_JSON"},
			{"filter wrong list", "POST", v3 + "/user/@alice:localhost/filter", "alice", `{"event_fields": "content"}`, 400, "M_BAD_JSON"},
			{"filter bad format", "POST", v3 + "/user/@alice:localhost/filter", "alice", `{"event_format": "xml"}`, 400, "M_BAD_JSON"},
			{"filter negative limit", "POST", v3 + "/user/@alice:localhost/filter", "alice", `{"presence": {"limit": -1}}`, 400, "M_BAD_JSON"},
			{"filter unknown", "GET", v3 + "/user/@alice:localhost/filter/999", "alice", "", 404, "M_NOT_FOUND"},
			{"filter non-numeric", "GET", v3 + "/user/@alice:localhost/filter/abc", "alice", "", 404, "M_NOT_FOUND"},
			{"filter get other user", "GET", v3 + "/user/@bob:localhost/filter/0", "alice", "", 403, "M_FORBIDDEN"},
		}
		for _, c := range cases {
			var body []byte
			if c.body != "" {
				body = []byte(c.body)
			}
			r := do(t, srv, c.method, c.path, tokens[c.token], body)
			if r.Status != c.wantStatus || r.errcode() != c.wantCode {
				t.Errorf("%s: %s %s = %d %s, want %d %s (%s)", c.name, c.method, c.path, r.Status, r.errcode(), c.wantStatus, c.wantCode, r.Raw)
			}
			if c.wantStatus == 401 && c.token != "" && c.token != "bad" && c.wantCode != "M_UNKNOWN_TOKEN" && c.wantCode != "M_MISSING_TOKEN" {
				if r.Body["flows"] == nil || r.Body["session"] == nil {
					t.Errorf("%s: UIA 401 without flows/session: %s", c.name, r.Raw)
				}
			}
		}
		// Nothing above may have changed alice's account.
		if _, err := loginPassword(t, srv, "alice", "password-alice", ""); err != nil {
			t.Fatalf("alice's password changed by bad requests: %v", err)
		}
		if r := do(t, srv, "GET", v3+"/devices/"+string(alice.DeviceID), alice.AccessToken, nil); r.Status != 200 {
			t.Fatalf("alice's device deleted by bad requests: %d %v", r.Status, r.Body)
		}
	})
}

// TestAccountsLimits covers the body cap, CORS and rate limiting.
func TestAccountsLimits(t *testing.T) {
	srv := testserver.Start(t, "sqlite", testserver.Options{Configure: func(c *config.Config) {
		c.Limits.MaxRequestBytes = 1024
	}})
	alice := srv.Register(t, "alice")
	big := `{"x": "` + strings.Repeat("a", 2048) + `"}`
	for _, c := range []struct{ method, path, token string }{
		{"POST", "/_matrix/client/v3/login", ""},
		{"POST", "/_matrix/client/v3/register", ""},
		{"PUT", "/_matrix/client/v3/user/@alice:localhost/account_data/org.example.big", alice.AccessToken},
		{"POST", "/_matrix/client/v3/user/@alice:localhost/filter", alice.AccessToken},
		{"PUT", "/_matrix/client/v3/profile/@alice:localhost/displayname", alice.AccessToken},
		{"POST", "/_matrix/client/v3/account/password", alice.AccessToken},
	} {
		if r := do(t, srv, c.method, c.path, c.token, []byte(big)); r.Status != 413 || r.errcode() != "M_TOO_LARGE" {
			t.Errorf("%s %s with Content-Length = %d %s", c.method, c.path, r.Status, r.Raw)
		}
		// Chunked: no Content-Length, the cap applies while reading.
		req, _ := http.NewRequest(c.method, srv.URL+c.path, io.MultiReader(bytes.NewReader([]byte(big))))
		if c.token != "" {
			req.Header.Set("Authorization", "Bearer "+c.token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 413 || !strings.Contains(string(raw), "M_TOO_LARGE") {
			t.Errorf("%s %s chunked = %d %s", c.method, c.path, resp.StatusCode, raw)
		}
	}

	// CORS preflight.
	r := do(t, srv, "OPTIONS", "/_matrix/client/v3/login", "", nil)
	if r.Status != 204 && r.Status != 200 || r.Header.Get("Access-Control-Allow-Origin") != "*" ||
		!strings.Contains(r.Header.Get("Access-Control-Allow-Headers"), "Authorization") ||
		!strings.Contains(r.Header.Get("Access-Control-Allow-Methods"), "PUT") {
		t.Fatalf("OPTIONS = %d %v", r.Status, r.Header)
	}
	if r := do(t, srv, "GET", "/_matrix/client/v3/login", "", nil); r.Header.Get("Access-Control-Allow-Origin") != "*" {
		t.Fatalf("GET /login without CORS headers: %v", r.Header)
	}
}

func TestAccountsRateLimit(t *testing.T) {
	srv := testserver.Start(t, "sqlite", testserver.Options{Configure: func(c *config.Config) {
		c.Limits.LoginPerSecond, c.Limits.LoginBurst = 0.01, 3
	}})
	body := []byte(`{"type": "m.login.password", "user": "nobody", "password": "x"}`)
	var last rawResp
	for range 4 {
		last = do(t, srv, "POST", "/_matrix/client/v3/login", "", body)
	}
	ms, _ := last.Body["retry_after_ms"].(float64)
	if last.Status != 429 || last.errcode() != "M_LIMIT_EXCEEDED" || ms <= 0 {
		t.Fatalf("4th login = %d %v", last.Status, last.Body)
	}
	// Registration shares the login limit.
	if r := do(t, srv, "POST", "/_matrix/client/v3/register", "", []byte(`{}`)); r.Status != 429 || r.errcode() != "M_LIMIT_EXCEEDED" {
		t.Fatalf("register after limit = %d %v", r.Status, r.Body)
	}
}
