package tests

import (
	"testing"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

// refreshLogin logs user in with refresh_token: true and returns the access
// and refresh tokens.
func refreshLogin(t *testing.T, srv *testserver.Server, user string) (access, refresh string) {
	t.Helper()
	r := doJSON(t, srv, "POST", "/_matrix/client/v3/login", "", map[string]any{
		"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": user},
		"password": "password-" + user, "refresh_token": true,
	})
	access, _ = r.Body["access_token"].(string)
	refresh, _ = r.Body["refresh_token"].(string)
	if r.Status != 200 || access == "" || refresh == "" {
		t.Fatalf("login with refresh_token = %d %v", r.Status, r.Body)
	}
	return access, refresh
}

// refreshCall posts /refresh; on success it returns the new tokens.
func refreshCall(t *testing.T, srv *testserver.Server, refresh string) (rawResp, string, string) {
	t.Helper()
	r := doJSON(t, srv, "POST", "/_matrix/client/v3/refresh", "", map[string]any{"refresh_token": refresh})
	access, _ := r.Body["access_token"].(string)
	next, _ := r.Body["refresh_token"].(string)
	if r.Status == 200 && (access == "" || next == "" || next == refresh) {
		t.Fatalf("refresh answered %v", r.Body)
	}
	return r, access, next
}

func wantWhoami(t *testing.T, srv *testserver.Server, token string, status int, what string) {
	t.Helper()
	r := do(t, srv, "GET", "/_matrix/client/v3/account/whoami", token, nil)
	if r.Status != status {
		t.Fatalf("%s: whoami = %d %v, want %d", what, r.Status, r.Body, status)
	}
	if status == 401 && (r.errcode() != "M_UNKNOWN_TOKEN" || r.Body["soft_logout"] != false) {
		t.Fatalf("%s: whoami = %v, want M_UNKNOWN_TOKEN without soft logout", what, r.Body)
	}
}

func wantRefreshRefused(t *testing.T, srv *testserver.Server, refresh, what string) {
	t.Helper()
	if r, _, _ := refreshCall(t, srv, refresh); r.Status != 401 || r.errcode() != "M_UNKNOWN_TOKEN" || r.Body["soft_logout"] != false {
		t.Fatalf("%s: refresh = %d %v, want 401 M_UNKNOWN_TOKEN, soft_logout false", what, r.Status, r.Body)
	}
}

// TestRefreshTokenLostAnswer: per the spec ("Refreshing access tokens") the
// old refresh token stays valid until the new access or refresh token is used,
// so a client that lost the /refresh answer can refresh again; once a new
// token is used, the old ones are refused.
func TestRefreshTokenLostAnswer(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		srv.Register(t, "alice")

		t.Run("new access token used", func(t *testing.T) {
			access0, refresh0 := refreshLogin(t, srv, "alice")
			r, lostAccess, lostRefresh := refreshCall(t, srv, refresh0)
			if r.Status != 200 {
				t.Fatalf("first refresh = %d %v", r.Status, r.Body)
			}
			// The answer is lost: the client still holds access0 and refresh0.
			wantWhoami(t, srv, access0, 200, "old access token before the new one is used")
			r, access1, refresh1 := refreshCall(t, srv, refresh0)
			if r.Status != 200 {
				t.Fatalf("refresh again with the old token = %d %v", r.Status, r.Body)
			}
			// Refreshing again replaced what the lost answer held.
			wantWhoami(t, srv, lostAccess, 401, "access token of the lost answer")
			wantRefreshRefused(t, srv, lostRefresh, "refresh token of the lost answer")

			wantWhoami(t, srv, access1, 200, "new access token")
			wantRefreshRefused(t, srv, refresh0, "old refresh token after the new access token was used")
			wantWhoami(t, srv, access0, 401, "old access token after the new one was used")
			wantWhoami(t, srv, access1, 200, "new access token, again")

			// The chain goes on from the new refresh token.
			if r, access2, _ := refreshCall(t, srv, refresh1); r.Status != 200 {
				t.Fatalf("refresh with the new token = %d %v", r.Status, r.Body)
			} else {
				wantWhoami(t, srv, access2, 200, "access token of the next refresh")
			}
		})

		t.Run("new refresh token used", func(t *testing.T) {
			access0, refresh0 := refreshLogin(t, srv, "alice")
			r, _, refresh1 := refreshCall(t, srv, refresh0)
			if r.Status != 200 {
				t.Fatalf("first refresh = %d %v", r.Status, r.Body)
			}
			r, access2, _ := refreshCall(t, srv, refresh1)
			if r.Status != 200 {
				t.Fatalf("refresh with the new token = %d %v", r.Status, r.Body)
			}
			wantRefreshRefused(t, srv, refresh0, "old refresh token after the new refresh token was used")
			wantWhoami(t, srv, access0, 401, "old access token after the new refresh token was used")
			wantWhoami(t, srv, access2, 200, "latest access token")
		})
	})
}
