package tests

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"maunium.net/go/mautrix"

	"github.com/myelin-chat/myelin/homeserver/testserver"
	"github.com/myelin-chat/myelin/internal/config"
	"github.com/myelin-chat/myelin/storage"
)

// TestCompletedUIASessionIsUsedOnce: a UIA session that completed its flow
// authorizes one operation. Replaying it concurrently — here, registering
// eight accounts with one single-use registration token — lets exactly one
// request through, and the token records exactly one use.
func TestCompletedUIASessionIsUsedOnce(t *testing.T) {
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			srv := testserver.Start(t, backend, testserver.Options{Configure: func(c *config.Config) {
				c.Register.Mode = config.RegistrationToken
			}})
			one := int64(1)
			if err := srv.DB.CreateRegistrationToken(ctx, storage.RegistrationToken{Token: "once", UsesAllowed: &one}); err != nil {
				t.Fatal(err)
			}
			// Complete the token stage without a password: the session stays open.
			first := doJSON(t, srv, "POST", "/_matrix/client/v3/register", "", map[string]any{"username": "first"})
			session, _ := first.Body["session"].(string)
			r := doJSON(t, srv, "POST", "/_matrix/client/v3/register", "", map[string]any{
				"username": "first", "auth": map[string]any{"type": "m.login.registration_token", "token": "once", "session": session}})
			if r.errcode() != "M_MISSING_PARAM" {
				t.Fatalf("completing the stage without a password = %d %s", r.Status, r.Raw)
			}

			var wg sync.WaitGroup
			results := make([]rawResp, 8)
			for i := range results {
				wg.Add(1)
				go func() {
					defer wg.Done()
					results[i] = doJSON(t, srv, "POST", "/_matrix/client/v3/register", "", map[string]any{
						"username": fmt.Sprintf("racer%d", i), "password": "long enough password",
						"auth": map[string]any{"session": session}})
				}()
			}
			wg.Wait()
			created := 0
			for _, r := range results {
				switch {
				case r.Status == 200:
					created++
				case r.Status >= 500:
					t.Errorf("replayed session answered %d %s", r.Status, r.Raw)
				}
			}
			if created != 1 {
				t.Fatalf("one completed session created %d accounts, want 1", created)
			}
			tokens, err := srv.DB.ListRegistrationTokens(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, tok := range tokens {
				if tok.Token == "once" && (tok.Completed != 1 || tok.Pending != 0) {
					t.Fatalf("token uses: completed %d, pending %d; want 1, 0", tok.Completed, tok.Pending)
				}
			}
		})
	}
}

// TestPasswordGuessingIsThrottledPerAccount: wrong passwords in a UIA stage
// and at /login count against one per-account budget (each costs an argon2id
// hash); past it the server answers 429 M_LIMIT_EXCEEDED without checking.
func TestPasswordGuessingIsThrottledPerAccount(t *testing.T) {
	srv := testserver.Start(t, "sqlite", testserver.Options{Configure: func(c *config.Config) {
		c.Limits.LoginPerSecond, c.Limits.LoginBurst = 0.01, 3
	}})
	alice := srv.Register(t, "alice")
	guess := func() rawResp {
		return clientCall(t, alice, "POST", "/_matrix/client/v3/delete_devices", map[string]any{
			"devices": []string{"NOPE"},
			"auth": map[string]any{"type": "m.login.password", "password": "wrong",
				"identifier": map[string]string{"type": "m.id.user", "user": "alice"}}})
	}
	for i := 0; i < 3; i++ {
		if r := guess(); r.Status != 401 || r.errcode() != "M_FORBIDDEN" {
			t.Fatalf("guess %d = %d %s, want 401 M_FORBIDDEN", i, r.Status, r.Raw)
		}
	}
	r := guess()
	if r.Status != 429 || r.errcode() != "M_LIMIT_EXCEEDED" || r.Body["retry_after_ms"] == nil {
		t.Fatalf("guess past the budget = %d %s, want 429 M_LIMIT_EXCEEDED with retry_after_ms", r.Status, r.Raw)
	}
	// /login for the same account shares the budget, from any address.
	login := doJSON(t, srv, "POST", "/_matrix/client/v3/login", "", map[string]any{
		"type": "m.login.password", "identifier": map[string]string{"type": "m.id.user", "user": "alice"}, "password": "password-alice"})
	if login.Status != 429 {
		t.Fatalf("login after the guesses = %d %s, want 429", login.Status, login.Raw)
	}
}

// TestCorrectPasswordsAreNotThrottled: only failures are charged, so an
// account's own successful logins never use up its failure budget.
func TestCorrectPasswordsAreNotThrottled(t *testing.T) {
	srv := testserver.Start(t, "sqlite", testserver.Options{Configure: func(c *config.Config) {
		c.Limits.LoginPerSecond, c.Limits.LoginBurst = 0.01, 4
	}})
	srv.Register(t, "alice") // two requests of the per-IP login budget
	var alice *mautrix.Client
	for i := 0; i < 2; i++ { // and two more
		alice = srv.Client(t)
		if _, err := alice.Login(context.Background(), &mautrix.ReqLogin{Type: mautrix.AuthTypePassword, Password: "password-alice",
			Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "alice"}, StoreCredentials: true}); err != nil {
			t.Fatalf("login %d: %v", i, err)
		}
	}
	// The whole failure budget (4) is still there.
	for i := 0; i < 4; i++ {
		r := clientCall(t, alice, "POST", "/_matrix/client/v3/delete_devices", map[string]any{"devices": []string{"NOPE"},
			"auth": map[string]any{"type": "m.login.password", "password": "wrong", "identifier": map[string]string{"type": "m.id.user", "user": "alice"}}})
		if r.Status != 401 {
			t.Fatalf("wrong guess %d after successful logins = %d %s, want 401", i, r.Status, r.Raw)
		}
	}
}
