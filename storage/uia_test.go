package storage_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"

	"github.com/myelin-chat/myelin/storage"
)

func TestUIASessions(t *testing.T) {
	ctx := context.Background()
	forEachBackend(t, func(t *testing.T, db *storage.DB) {
		_, err := db.GetUIASession(ctx, "missing")
		wantNotFound(t, "missing session", err)
		must(t, db.CreateUIASession(ctx, storage.UIASession{SessionID: "s1", UserID: "@a:x", Request: "POST /x", CreatedTS: 10}))
		if err := db.CreateUIASession(ctx, storage.UIASession{SessionID: "s1", Request: "POST /y", CreatedTS: 10}); err == nil {
			t.Fatal("a session ID was created twice")
		}
		s, err := db.GetUIASession(ctx, "s1")
		if err != nil || s.UserID != "@a:x" || s.Request != "POST /x" || len(s.Completed) != 0 || s.CreatedTS != 10 {
			t.Fatalf("GetUIASession = %+v, %v", s, err)
		}
		must(t, db.CompleteUIAStage(ctx, "s1", []string{"m.login.password", "m.login.dummy"}))
		if s, _ := db.GetUIASession(ctx, "s1"); !slices.Equal(s.Completed, []string{"m.login.password", "m.login.dummy"}) {
			t.Fatalf("completed stages %v", s.Completed)
		}
		must(t, db.CreateUIASession(ctx, storage.UIASession{SessionID: "s2", Request: "POST /x", CreatedTS: 20}))
		must(t, db.ExpireUIASessions(ctx, 15))
		_, err = db.GetUIASession(ctx, "s1")
		wantNotFound(t, "expired session", err)
		if _, err := db.GetUIASession(ctx, "s2"); err != nil {
			t.Fatalf("a session created after the cut-off expired: %v", err)
		}
	})
}

// A session is used up exactly once, however many requests race for it.
func TestClaimUIASessionOnce(t *testing.T) {
	ctx := context.Background()
	forEachBackend(t, func(t *testing.T, db *storage.DB) {
		must(t, db.CreateUIASession(ctx, storage.UIASession{SessionID: "s", Request: "POST /register", CreatedTS: 1}))
		var wg sync.WaitGroup
		var mu sync.Mutex
		won := 0
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := db.ClaimUIASession(ctx, "s")
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					won++
				case !errors.Is(err, storage.ErrNotFound):
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		if won != 1 {
			t.Fatalf("%d claims of one session succeeded", won)
		}
	})
}

func TestRegistrationTokens(t *testing.T) {
	ctx := context.Background()
	forEachBackend(t, func(t *testing.T, db *storage.DB) {
		one, expiry := int64(1), int64(1000)
		must(t, db.CreateRegistrationToken(ctx, storage.RegistrationToken{Token: "once", UsesAllowed: &one}))
		must(t, db.CreateRegistrationToken(ctx, storage.RegistrationToken{Token: "expiring", ExpiryTS: &expiry}))
		if err := db.CreateRegistrationToken(ctx, storage.RegistrationToken{Token: "once"}); err == nil {
			t.Fatal("a token was created twice")
		}
		usable := func(token string, now int64) bool {
			t.Helper()
			ok, err := db.RegistrationTokenUsable(ctx, token, now)
			must(t, err)
			return ok
		}
		if !usable("expiring", 999) || usable("expiring", 1000) || usable("unknown", 1) {
			t.Fatal("usability by expiry or existence is wrong")
		}
		for _, s := range []string{"s1", "s2"} {
			must(t, db.CreateUIASession(ctx, storage.UIASession{SessionID: s, Request: "POST /register", CreatedTS: 10}))
		}
		reserve := func(session string) bool {
			t.Helper()
			ok, err := db.ReserveRegistrationToken(ctx, session, "once", []string{"m.login.registration_token"}, 1)
			must(t, err)
			return ok
		}
		if !reserve("s1") {
			t.Fatal("first reservation refused")
		}
		// The pending use counts: the single-use token cannot be reserved again.
		if reserve("s2") || usable("once", 1) {
			t.Fatal("a single-use token was reserved twice")
		}
		if s, _ := db.GetUIASession(ctx, "s2"); s.RegistrationToken != "" || len(s.Completed) != 0 {
			t.Fatalf("a refused reservation changed the session: %+v", s)
		}
		if s, _ := db.GetUIASession(ctx, "s1"); s.RegistrationToken != "once" || len(s.Completed) != 1 {
			t.Fatalf("the reservation was not recorded in the session: %+v", s)
		}
		// Released (registration failed): usable again; completed: used up.
		must(t, db.SettleRegistrationToken(ctx, "once", false))
		if !usable("once", 1) {
			t.Fatal("a released reservation still counts")
		}
		if !reserve("s2") {
			t.Fatal("reservation after release refused")
		}
		if tok, err := db.ClaimUIASession(ctx, "s2"); err != nil || tok != "once" {
			t.Fatalf("ClaimUIASession = %q, %v", tok, err)
		}
		must(t, db.SettleRegistrationToken(ctx, "once", true))
		must(t, db.SettleRegistrationToken(ctx, "once", true)) // nothing pending: no effect
		tokens, err := db.ListRegistrationTokens(ctx)
		if err != nil || len(tokens) != 2 || tokens[1].Token != "once" || tokens[1].Completed != 1 || tokens[1].Pending != 0 {
			t.Fatalf("ListRegistrationTokens = %+v, %v", tokens, err)
		}
		if usable("once", 1) {
			t.Fatal("a used-up token is still usable")
		}
	})
}

// Expiring a session releases the registration-token use it held.
func TestExpireUIASessionReleasesToken(t *testing.T) {
	ctx := context.Background()
	forEachBackend(t, func(t *testing.T, db *storage.DB) {
		one := int64(1)
		must(t, db.CreateRegistrationToken(ctx, storage.RegistrationToken{Token: "tok", UsesAllowed: &one}))
		must(t, db.CreateUIASession(ctx, storage.UIASession{SessionID: "s", Request: "POST /register", CreatedTS: 10}))
		if ok, err := db.ReserveRegistrationToken(ctx, "s", "tok", nil, 1); !ok || err != nil {
			t.Fatalf("reserve: %v %v", ok, err)
		}
		must(t, db.ExpireUIASessions(ctx, 11))
		if ok, _ := db.RegistrationTokenUsable(ctx, "tok", 1); !ok {
			t.Fatal("the expired session's pending use was not released")
		}
	})
}
