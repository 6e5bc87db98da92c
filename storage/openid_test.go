package storage_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/myelin-chat/myelin/storage"
)

// TestOpenIDTokens: a token answers its user until it expires; expired
// tokens are swept; a user keeps at most maxPerUser live tokens (the oldest
// go); a deactivated user's tokens answer nothing.
func TestOpenIDTokens(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		alice := "@alice:test"
		createUser(t, db, alice)
		must(t, db.CreateOpenIDToken(ctx, "h1", alice, 1000, 2000, 3))
		if u, err := db.OpenIDTokenUser(ctx, "h1", 1999); err != nil || u != alice {
			t.Fatalf("live token: %q %v", u, err)
		}
		if _, err := db.OpenIDTokenUser(ctx, "h1", 2000); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("expired token: %v", err)
		}
		if _, err := db.OpenIDTokenUser(ctx, "nope", 1000); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("unknown token: %v", err)
		}
		// Three more at later times: h1 swept as expired, then the bound of 3 keeps the latest 3.
		for i := 2; i <= 5; i++ {
			must(t, db.CreateOpenIDToken(ctx, fmt.Sprintf("h%d", i), alice, 3000+int64(i), 9000, 3))
		}
		for i, want := range []bool{false, false, true, true, true} {
			_, err := db.OpenIDTokenUser(ctx, fmt.Sprintf("h%d", i+1), 4000)
			if got := err == nil; got != want {
				t.Fatalf("h%d live = %v, want %v (%v)", i+1, got, want, err)
			}
		}
		var rows int
		must(t, db.QueryRow(ctx, `SELECT COUNT(*) FROM openid_tokens`).Scan(&rows))
		if rows != 3 {
			t.Fatalf("%d rows kept, want 3", rows)
		}
		if _, err := db.DeactivateUser(ctx, alice, false); err != nil {
			t.Fatal(err)
		}
		if _, err := db.OpenIDTokenUser(ctx, "h5", 4000); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("token of a deactivated user: %v", err)
		}
	})
}
