package tests

import (
	"net/http"
	"testing"

	"github.com/tidwall/gjson"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

// TestOpenIDUserInfo: a user requests an OpenID token for themselves (not
// for another user: 403); a third party exchanges it, without X-Matrix, at
// /_matrix/federation/v1/openid/userinfo for the user's ID; the token
// survives a restart; unknown and missing tokens are 401; a deactivated
// user's token answers nothing.
func TestOpenIDUserInfo(t *testing.T) {
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) {
			n := newFedNet(t, "hs.test")
			start := n.restartable(t, backend, "hs.test")
			srv := start()
			alice := srv.Register(t, "alice")
			bob := srv.Register(t, "bob")

			r := do(t, srv, "POST", "/_matrix/client/v3/user/"+string(alice.UserID)+"/openid/request_token", alice.AccessToken, []byte(`{}`))
			if r.Status != 200 || gjson.Get(r.Raw, "token_type").String() != "Bearer" ||
				gjson.Get(r.Raw, "matrix_server_name").String() != "hs.test" || gjson.Get(r.Raw, "expires_in").Int() != 3600 {
				t.Fatalf("request_token: %d %s", r.Status, r.Raw)
			}
			token := gjson.Get(r.Raw, "access_token").String()
			if r := do(t, srv, "POST", "/_matrix/client/v3/user/"+string(bob.UserID)+"/openid/request_token", alice.AccessToken, []byte(`{}`)); r.Status != http.StatusForbidden {
				t.Fatalf("token for another user: %d %s", r.Status, r.Raw)
			}
			if r := do(t, srv, "POST", "/_matrix/client/v3/user/"+string(alice.UserID)+"/openid/request_token", alice.AccessToken, []byte(`[]`)); r.Status != http.StatusBadRequest {
				t.Fatalf("body not an object: %d %s", r.Status, r.Raw)
			}
			userinfo := func(srv *testserver.Server, tok string) rawResp {
				return do(t, srv, "GET", "/_matrix/federation/v1/openid/userinfo?access_token="+tok, "", nil)
			}
			if r := userinfo(srv, token); r.Status != 200 || gjson.Get(r.Raw, "sub").String() != string(alice.UserID) {
				t.Fatalf("userinfo: %d %s", r.Status, r.Raw)
			}
			// Restart: the token is in the store.
			if err := srv.Shutdown(ctxT(t)); err != nil {
				t.Fatal(err)
			}
			srv = start()
			if r := userinfo(srv, token); r.Status != 200 || gjson.Get(r.Raw, "sub").String() != string(alice.UserID) {
				t.Fatalf("userinfo after a restart: %d %s", r.Status, r.Raw)
			}
			if r := userinfo(srv, "nope"); r.Status != http.StatusUnauthorized || gjson.Get(r.Raw, "errcode").String() != "M_UNKNOWN_TOKEN" {
				t.Fatalf("unknown token: %d %s", r.Status, r.Raw)
			}
			if r := userinfo(srv, ""); r.Status != http.StatusUnauthorized || gjson.Get(r.Raw, "errcode").String() != "M_MISSING_TOKEN" {
				t.Fatalf("missing token: %d %s", r.Status, r.Raw)
			}
			// An access token is not an OpenID token.
			if r := userinfo(srv, alice.AccessToken); r.Status != http.StatusUnauthorized {
				t.Fatalf("access token as OpenID token: %d %s", r.Status, r.Raw)
			}
			if err := srv.Accounts.Deactivate(ctxT(t), alice.UserID, false); err != nil {
				t.Fatal(err)
			}
			if r := userinfo(srv, token); r.Status != http.StatusUnauthorized {
				t.Fatalf("deactivated user's token: %d %s", r.Status, r.Raw)
			}
		})
	}
}
