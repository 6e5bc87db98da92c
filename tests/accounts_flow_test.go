package tests

import (
	"context"
	"net/http"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/accounts"
	"github.com/myelin-chat/myelin/homeserver/testserver"
	"github.com/myelin-chat/myelin/internal/config"
)

// TestAccountsFlow drives the whole account life cycle with mautrix-go's
// client against a real server, on every backend.
func TestAccountsFlow(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		alice := srv.Register(t, "alice")
		aliceID := srv.UserID("alice")
		const pw = "password-alice"
		// A profile change reaches alice's rooms (accounts → roomserver).
		joined := createRoom(t, alice, nil)

		// Profile: set the display name, read it back.
		if err := alice.SetDisplayName(ctx, "Alice Liddell"); err != nil {
			t.Fatal(err)
		}
		prof, err := alice.GetProfile(ctx, aliceID)
		if err != nil || prof.DisplayName != "Alice Liddell" {
			t.Fatalf("profile = %+v, %v", prof, err)
		}
		if err := alice.SetAvatarURL(ctx, id.ContentURI{Homeserver: "localhost", FileID: "abc"}); err != nil {
			t.Fatal(err)
		}
		if dn, err := alice.GetDisplayName(ctx, aliceID); err != nil || dn.DisplayName != "Alice Liddell" {
			t.Fatalf("displayname = %+v, %v", dn, err)
		}
		if prof, _ = alice.GetProfile(ctx, aliceID); prof.AvatarURL.String() != "mxc://localhost/abc" {
			t.Fatalf("avatar = %v", prof.AvatarURL)
		}

		var member event.MemberEventContent
		if err := alice.StateEvent(ctx, joined, event.StateMember, aliceID.String(), &member); err != nil || member.Displayname != "Alice Liddell" {
			t.Fatalf("member event after the profile change = %+v, %v", member, err)
		}

		// Account data, global and per room; a write wakes /sync waiters.
		type data struct{ N int }
		before := srv.DB.Stream.Current()
		if err := alice.SetAccountData(ctx, "org.example.prefs", data{N: 7}); err != nil {
			t.Fatal(err)
		}
		waitCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
		woken := srv.Notifier.Wait(waitCtx, aliceID.String(), before)
		cancel()
		if !woken {
			t.Fatal("account data write did not notify")
		}
		var got data
		if err := alice.GetAccountData(ctx, "org.example.prefs", &got); err != nil || got.N != 7 {
			t.Fatalf("account data = %+v, %v", got, err)
		}
		room := id.RoomID("!room:localhost")
		if err := alice.SetRoomAccountData(ctx, room, "m.tag", map[string]any{"tags": map[string]any{"u.work": map[string]any{}}}); err != nil {
			t.Fatal(err)
		}
		var tags map[string]any
		if err := alice.GetRoomAccountData(ctx, room, "m.tag", &tags); err != nil || tags["tags"] == nil {
			t.Fatalf("room account data = %v, %v", tags, err)
		}
		changed, err := srv.Accounts.AccountDataSince(ctx, aliceID, 0, srv.DB.Stream.Current())
		if err != nil || len(changed) != 2 || changed[0].Type != "org.example.prefs" || changed[1].RoomID != string(room) {
			t.Fatalf("AccountDataSince = %+v, %v", changed, err)
		}

		// Filters.
		filter := &mautrix.Filter{Room: &mautrix.RoomFilter{Timeline: &mautrix.FilterPart{Limit: 10}}}
		created, err := alice.CreateFilter(ctx, filter)
		if err != nil {
			t.Fatal(err)
		}
		var fetched mautrix.Filter
		if _, err := alice.MakeRequest(ctx, http.MethodGet, alice.BuildClientURL("v3", "user", aliceID, "filter", created.FilterID), nil, &fetched); err != nil {
			t.Fatal(err)
		}
		if fetched.Room == nil || fetched.Room.Timeline == nil || fetched.Room.Timeline.Limit != 10 {
			t.Fatalf("fetched filter = %+v", fetched)
		}
		if f, err := srv.Accounts.LoadFilter(ctx, aliceID, created.FilterID); err != nil || f.Room.Timeline.Limit != 10 {
			t.Fatalf("LoadFilter = %+v, %v", f, err)
		}

		// A second device, deleted through UIA.
		second, err := loginPassword(t, srv, "alice", pw, "SECOND")
		if err != nil {
			t.Fatal(err)
		}
		// Its keys go with it (accounts → keyserver).
		keysMustCall(t, second, "POST", "/_matrix/client/v3/keys/upload",
			map[string]any{"device_keys": newTestDevice(aliceID.String(), "SECOND").deviceKeys(t)})
		devs, err := alice.GetDevicesInfo(ctx)
		if err != nil || len(devs.Devices) != 2 {
			t.Fatalf("devices = %+v, %v", devs, err)
		}
		delURL := alice.BuildClientURL("v3", "devices", "SECOND")
		body := wantUIAErr(t, call(alice, http.MethodDelete, delURL, map[string]any{}), 401, "")
		session, _ := body["session"].(string)
		if session == "" || body["flows"] == nil {
			t.Fatalf("UIA challenge = %v", body)
		}
		body = wantUIAErr(t, call(alice, http.MethodDelete, delURL, map[string]any{"auth": passwordAuth(session, aliceID, "wrong")}), 401, "M_FORBIDDEN")
		if body["flows"] == nil || body["session"] != session {
			t.Fatalf("failed stage must answer with the flows: %v", body)
		}
		if err := alice.DeleteDevice(ctx, "SECOND", &mautrix.ReqDeleteDevice[any]{Auth: passwordAuth(session, aliceID, pw)}); err != nil {
			t.Fatal(err)
		}
		_, err = second.Whoami(ctx)
		wantErr(t, err, 401, "M_UNKNOWN_TOKEN")
		if devs, _ = alice.GetDevicesInfo(ctx); len(devs.Devices) != 1 {
			t.Fatalf("devices after delete = %+v", devs)
		}
		q := keysMustCall(t, alice, "POST", "/_matrix/client/v3/keys/query", map[string]any{"device_keys": map[string]any{aliceID.String(): []string{}}})
		if _, ok := obj(obj(q["device_keys"])[aliceID.String()])["SECOND"]; ok {
			t.Fatalf("deleted device's keys still queried: %v", q)
		}

		// Change the password: the other device is logged out, this one stays.
		other, err := loginPassword(t, srv, "alice", pw, "OTHER")
		if err != nil {
			t.Fatal(err)
		}
		const newPW = "a-new-password"
		pwURL := alice.BuildClientURL("v3", "account", "password")
		body = wantUIAErr(t, call(alice, http.MethodPost, pwURL, map[string]any{"new_password": newPW}), 401, "")
		session, _ = body["session"].(string)
		if _, err := alice.MakeRequest(ctx, http.MethodPost, pwURL, map[string]any{"new_password": newPW, "auth": passwordAuth(session, aliceID, pw)}, nil); err != nil {
			t.Fatal(err)
		}
		_, err = other.Whoami(ctx)
		wantErr(t, err, 401, "M_UNKNOWN_TOKEN")
		if _, err := alice.Whoami(ctx); err != nil {
			t.Fatalf("the device that changed the password must stay logged in: %v", err)
		}
		_, err = loginPassword(t, srv, "alice", pw, "")
		wantErr(t, err, 403, "M_FORBIDDEN")
		if _, err := loginPassword(t, srv, "alice", newPW, ""); err != nil {
			t.Fatalf("login with the new password: %v", err)
		}

		// Refresh tokens rotate.
		rc := srv.Client(t)
		lr, err := rc.Login(ctx, &mautrix.ReqLogin{Type: mautrix.AuthTypePassword, Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "alice"}, Password: newPW, RefreshToken: true})
		if err != nil || lr.RefreshToken == "" || lr.ExpiresInMS <= 0 {
			t.Fatalf("login with refresh_token = %+v, %v", lr, err)
		}
		ref := doJSON(t, srv, "POST", "/_matrix/client/v3/refresh", "", map[string]any{"refresh_token": lr.RefreshToken})
		newAccess, _ := ref.Body["access_token"].(string)
		newRefresh, _ := ref.Body["refresh_token"].(string)
		if ref.Status != 200 || newAccess == "" || newRefresh == "" || newRefresh == lr.RefreshToken || ref.Body["expires_in_ms"] == nil {
			t.Fatalf("refresh = %d %v", ref.Status, ref.Body)
		}
		// Using the new access token revokes the old tokens (TestRefreshTokenLostAnswer has the details).
		if r := do(t, srv, "GET", "/_matrix/client/v3/account/whoami", newAccess, nil); r.Status != 200 || r.Body["device_id"] != string(lr.DeviceID) {
			t.Fatalf("new access token = %d %v", r.Status, r.Body)
		}
		if r := doJSON(t, srv, "POST", "/_matrix/client/v3/refresh", "", map[string]any{"refresh_token": lr.RefreshToken}); r.Status != 401 || r.errcode() != "M_UNKNOWN_TOKEN" {
			t.Fatalf("reused refresh token = %d %v", r.Status, r.Body)
		}
		if r := do(t, srv, "GET", "/_matrix/client/v3/account/whoami", lr.AccessToken, nil); r.Status != 401 || r.errcode() != "M_UNKNOWN_TOKEN" {
			t.Fatalf("old access token after refresh = %d %v", r.Status, r.Body)
		}

		// Login token (get_token is UIA-protected), single use.
		ltURL := alice.BuildURL(mautrix.ClientURLPath{"v1", "login", "get_token"})
		body = wantUIAErr(t, call(alice, http.MethodPost, ltURL, map[string]any{}), 401, "")
		session, _ = body["session"].(string)
		var lt struct {
			LoginToken  string `json:"login_token"`
			ExpiresInMS int64  `json:"expires_in_ms"`
		}
		if _, err := alice.MakeRequest(ctx, http.MethodPost, ltURL, map[string]any{"auth": passwordAuth(session, aliceID, newPW)}, &lt); err != nil || lt.LoginToken == "" || lt.ExpiresInMS <= 0 {
			t.Fatalf("get_token = %+v, %v", lt, err)
		}
		tokenLogin := func() error {
			_, err := srv.Client(t).Login(ctx, &mautrix.ReqLogin{Type: mautrix.AuthTypeToken, Token: lt.LoginToken})
			return err
		}
		if err := tokenLogin(); err != nil {
			t.Fatalf("m.login.token: %v", err)
		}
		wantErr(t, tokenLogin(), 403, "M_FORBIDDEN")

		// Logout.
		lo, err := loginPassword(t, srv, "alice", newPW, "")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := lo.Logout(ctx); err != nil {
			t.Fatal(err)
		}
		_, err = lo.Whoami(ctx)
		wantErr(t, err, 401, "M_UNKNOWN_TOKEN")

		// Logout everywhere.
		a1, _ := loginPassword(t, srv, "alice", newPW, "")
		a2, _ := loginPassword(t, srv, "alice", newPW, "")
		if _, err := a1.LogoutAll(ctx); err != nil {
			t.Fatal(err)
		}
		for _, c := range []*mautrix.Client{a1, a2, alice} {
			_, err = c.Whoami(ctx)
			wantErr(t, err, 401, "M_UNKNOWN_TOKEN")
		}

		// Deactivate.
		d, err := loginPassword(t, srv, "alice", newPW, "")
		if err != nil {
			t.Fatal(err)
		}
		deURL := d.BuildClientURL("v3", "account", "deactivate")
		body = wantUIAErr(t, call(d, http.MethodPost, deURL, map[string]any{}), 401, "")
		session, _ = body["session"].(string)
		var deResp map[string]any
		if _, err := d.MakeRequest(ctx, http.MethodPost, deURL, map[string]any{"auth": passwordAuth(session, aliceID, newPW), "erase": true}, &deResp); err != nil || deResp["id_server_unbind_result"] != "success" {
			t.Fatalf("deactivate = %v, %v", deResp, err)
		}
		_, err = d.Whoami(ctx)
		wantErr(t, err, 401, "M_UNKNOWN_TOKEN")
		_, err = loginPassword(t, srv, "alice", newPW, "")
		wantErr(t, err, 403, "M_USER_DEACTIVATED")
		bob := srv.Register(t, "bob")
		_, err = bob.GetProfile(ctx, aliceID)
		wantErr(t, err, 404, "M_NOT_FOUND")
		_, err = bob.RegisterAvailable(ctx, "alice")
		wantErr(t, err, 400, "M_USER_IN_USE")
	})
}

// TestSharedSecretRegistration registers through the Synapse-compatible
// admin endpoint with an HMAC computed here.
func TestSharedSecretRegistration(t *testing.T) {
	const secret = "s3cret-for-tests"
	opts := testserver.Options{Configure: func(c *config.Config) {
		c.Register.SharedSecret = secret
		c.Register.Mode = config.RegistrationClosed
	}}
	forEachBackendWith(t, opts, func(t *testing.T, srv *testserver.Server) {
		nonce := func() string {
			r := do(t, srv, "GET", "/_synapse/admin/v1/register", "", nil)
			n, _ := r.Body["nonce"].(string)
			if r.Status != 200 || n == "" {
				t.Fatalf("nonce = %d %v", r.Status, r.Body)
			}
			return n
		}
		reg := func(n, user, pw string, admin bool, mac string) rawResp {
			return doJSON(t, srv, "POST", "/_synapse/admin/v1/register", "", map[string]any{
				"nonce": n, "username": user, "password": pw, "admin": admin, "mac": mac, "displayname": "The Admin",
			})
		}
		// Wrong MAC, wrong secret.
		n := nonce()
		if r := reg(n, "boss", "pw-boss-123", true, accounts.SharedSecretMAC("other", n, "boss", "pw-boss-123", true, "")); r.Status != 403 || r.errcode() != "M_FORBIDDEN" {
			t.Fatalf("bad mac = %d %v", r.Status, r.Body)
		}
		// The nonce was used up by the failed attempt.
		if r := reg(n, "boss", "pw-boss-123", true, accounts.SharedSecretMAC(secret, n, "boss", "pw-boss-123", true, "")); r.Status != 400 {
			t.Fatalf("reused nonce = %d %v", r.Status, r.Body)
		}
		// MAC over different fields (admin flag flipped).
		n = nonce()
		if r := reg(n, "boss", "pw-boss-123", true, accounts.SharedSecretMAC(secret, n, "boss", "pw-boss-123", false, "")); r.Status != 403 {
			t.Fatalf("mac for notadmin used for admin = %d %v", r.Status, r.Body)
		}
		n = nonce()
		r := reg(n, "boss", "pw-boss-123", true, accounts.SharedSecretMAC(secret, n, "boss", "pw-boss-123", true, ""))
		token, _ := r.Body["access_token"].(string)
		if r.Status != 200 || r.Body["user_id"] != srv.UserID("boss").String() || token == "" {
			t.Fatalf("register = %d %v", r.Status, r.Body)
		}
		who := do(t, srv, "GET", "/_matrix/client/v3/account/whoami", token, nil)
		if who.Status != 200 || who.Body["user_id"] != srv.UserID("boss").String() {
			t.Fatalf("whoami = %d %v", who.Status, who.Body)
		}
		if p := do(t, srv, "GET", "/_matrix/client/v3/profile/@boss:localhost/displayname", token, nil); p.Body["displayname"] != "The Admin" {
			t.Fatalf("displayname = %v", p.Body)
		}
		if _, err := loginPassword(t, srv, "boss", "pw-boss-123", ""); err != nil {
			t.Fatalf("login with the registered password: %v", err)
		}
		// Registration through the client API stays closed.
		if r := doJSON(t, srv, "POST", "/_matrix/client/v3/register", "", map[string]any{"username": "x", "password": "long-enough-pw"}); r.Status != 403 || r.errcode() != "M_FORBIDDEN" {
			t.Fatalf("closed /register = %d %v", r.Status, r.Body)
		}
	})
}

// TestSharedSecretDisabled: without a secret the endpoint does not exist.
func TestSharedSecretDisabled(t *testing.T) {
	srv := testserver.Start(t, "sqlite")
	for _, m := range []string{"GET", "POST"} {
		if r := doJSON(t, srv, m, "/_synapse/admin/v1/register", "", map[string]any{}); r.Status != 404 || r.errcode() != "M_UNRECOGNIZED" {
			t.Fatalf("%s = %d %v", m, r.Status, r.Body)
		}
	}
}

// TestRegistrationTokens covers token mode: config tokens, stored tokens
// with a use limit, the validity endpoint.
func TestRegistrationTokens(t *testing.T) {
	opts := testserver.Options{Configure: func(c *config.Config) {
		c.Register.Mode = config.RegistrationToken
		c.Register.Tokens = []string{"cfg-token"}
	}}
	forEachBackendWith(t, opts, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		one := int64(1)
		past := time.Now().Add(-time.Hour).UnixMilli()
		if err := srv.DB.CreateRegistrationToken(ctx, storageToken("once", &one, nil)); err != nil {
			t.Fatal(err)
		}
		if err := srv.DB.CreateRegistrationToken(ctx, storageToken("expired", nil, &past)); err != nil {
			t.Fatal(err)
		}
		valid := func(tok string) any {
			r := do(t, srv, "GET", "/_matrix/client/v1/register/m.login.registration_token/validity?token="+tok, "", nil)
			if r.Status != 200 {
				t.Fatalf("validity(%s) = %d %v", tok, r.Status, r.Body)
			}
			return r.Body["valid"]
		}
		for tok, want := range map[string]bool{"cfg-token": true, "once": true, "expired": false, "nope": false} {
			if got := valid(tok); got != want {
				t.Fatalf("validity(%s) = %v, want %v", tok, got, want)
			}
		}
		register := func(user, token string) rawResp {
			body := map[string]any{"username": user, "password": "password-" + user}
			r := doJSON(t, srv, "POST", "/_matrix/client/v3/register", "", body)
			flows, _ := r.Body["flows"].([]any)
			if r.Status != 401 || len(flows) != 1 {
				t.Fatalf("register without auth = %d %v", r.Status, r.Body)
			}
			body["auth"] = map[string]any{"type": "m.login.registration_token", "token": token, "session": r.Body["session"]}
			return doJSON(t, srv, "POST", "/_matrix/client/v3/register", "", body)
		}
		if r := register("u1", "cfg-token"); r.Status != 200 {
			t.Fatalf("config token = %d %v", r.Status, r.Body)
		}
		if r := register("u2", "expired"); r.Status != 401 || r.errcode() != "M_UNAUTHORIZED" {
			t.Fatalf("expired token = %d %v", r.Status, r.Body)
		}
		if r := register("u3", "once"); r.Status != 200 {
			t.Fatalf("stored token = %d %v", r.Status, r.Body)
		}
		if r := register("u4", "once"); r.Status != 401 || r.errcode() != "M_UNAUTHORIZED" {
			t.Fatalf("used-up token = %d %v", r.Status, r.Body)
		}
		if got := valid("once"); got != false {
			t.Fatalf("used-up token reported valid")
		}
		// m.login.dummy is not a flow in token mode.
		r := doJSON(t, srv, "POST", "/_matrix/client/v3/register", "", map[string]any{"username": "u5", "password": "password-u5", "auth": map[string]any{"type": "m.login.dummy"}})
		if r.Status != 401 || r.errcode() != "M_FORBIDDEN" {
			t.Fatalf("dummy in token mode = %d %v", r.Status, r.Body)
		}
	})
}

// TestExpiredAccessToken: an expired token is M_UNKNOWN_TOKEN with soft_logout.
func TestExpiredAccessToken(t *testing.T) {
	srv := testserver.Start(t, "sqlite", testserver.Options{Configure: func(c *config.Config) {
		c.Limits.AccessTokenLifetime = config.Duration{Duration: 50 * time.Millisecond}
	}})
	srv.Register(t, "carol")
	lr, err := srv.Client(t).Login(context.Background(), &mautrix.ReqLogin{Type: mautrix.AuthTypePassword,
		Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "carol"}, Password: "password-carol", RefreshToken: true})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // let the token expire (not a timing assertion)
	r := do(t, srv, "GET", "/_matrix/client/v3/account/whoami", lr.AccessToken, nil)
	if r.Status != 401 || r.errcode() != "M_UNKNOWN_TOKEN" || r.Body["soft_logout"] != true {
		t.Fatalf("expired token = %d %v", r.Status, r.Body)
	}
	ref := doJSON(t, srv, "POST", "/_matrix/client/v3/refresh", "", map[string]any{"refresh_token": lr.RefreshToken})
	if ref.Status != 200 {
		t.Fatalf("refresh after expiry = %d %v", ref.Status, ref.Body)
	}
}
