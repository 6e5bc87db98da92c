package storage_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/myelin-chat/myelin/storage"
)

func createUser(t *testing.T, db *storage.DB, userID string) {
	t.Helper()
	must(t, db.CreateUser(context.Background(), storage.User{UserID: userID, Localpart: userID[1:2], PasswordHash: "h", CreatedTS: 1}))
}

func login(t *testing.T, db *storage.DB, userID, deviceID, name, access, refresh string) {
	t.Helper()
	must(t, db.CreateDeviceWithToken(context.Background(),
		storage.Device{UserID: userID, DeviceID: deviceID, DisplayName: name, CreatedTS: 10, LastSeenIP: "10.0.0.1"},
		access, 0, refresh))
}

func TestProfileFields(t *testing.T) {
	ctx := context.Background()
	forEachBackend(t, func(t *testing.T, db *storage.DB) {
		createUser(t, db, "@a:x")
		must(t, db.SetDisplayName(ctx, "@a:x", "Alice"))
		must(t, db.SetAvatarURL(ctx, "@a:x", "mxc://x/a"))
		must(t, db.SetProfileFields(ctx, "@a:x", map[string]json.RawMessage{"m.tz": json.RawMessage(`"Europe/Paris"`)}))
		u, err := db.GetUser(ctx, "@a:x")
		if err != nil || u.DisplayName != "Alice" || u.AvatarURL != "mxc://x/a" || string(u.ProfileFields["m.tz"]) != `"Europe/Paris"` {
			t.Fatalf("GetUser = %+v, %v", u, err)
		}
		// "" clears; nil fields store an empty object, not null.
		must(t, db.SetDisplayName(ctx, "@a:x", ""))
		must(t, db.SetProfileFields(ctx, "@a:x", nil))
		u, err = db.GetUser(ctx, "@a:x")
		if err != nil || u.DisplayName != "" || u.AvatarURL != "mxc://x/a" || u.ProfileFields == nil || len(u.ProfileFields) != 0 {
			t.Fatalf("after clearing: %+v, %v", u, err)
		}
		if ok, err := db.UserExists(ctx, "@a:x"); !ok || err != nil {
			t.Fatalf("UserExists(@a) = %v, %v", ok, err)
		}
		if ok, err := db.UserExists(ctx, "@nobody:x"); ok || err != nil {
			t.Fatalf("UserExists(@nobody) = %v, %v", ok, err)
		}
	})
}

// Logging in again with a device ID replaces that device's tokens and keeps
// its name unless a new one is given.
func TestDeviceLoginReplacesTokens(t *testing.T) {
	ctx := context.Background()
	forEachBackend(t, func(t *testing.T, db *storage.DB) {
		createUser(t, db, "@a:x")
		login(t, db, "@a:x", "D1", "Phone", "acc1", "")
		o, err := db.LookupAccessToken(ctx, "acc1")
		if err != nil || o.UserID != "@a:x" || o.DeviceID != "D1" || o.RefreshHash != "" || o.RefreshPending || o.Deactivated {
			t.Fatalf("LookupAccessToken = %+v, %v", o, err)
		}
		_, err = db.LookupAccessToken(ctx, "nope")
		wantNotFound(t, "unknown token", err)

		login(t, db, "@a:x", "D1", "", "acc2", "")
		_, err = db.LookupAccessToken(ctx, "acc1")
		wantNotFound(t, "token replaced by a new login", err)
		if o, err := db.LookupAccessToken(ctx, "acc2"); err != nil || o.DeviceID != "D1" {
			t.Fatalf("new token: %+v, %v", o, err)
		}
		d, err := db.GetDevice(ctx, "@a:x", "D1")
		if err != nil || d.DisplayName != "Phone" || d.LastSeenIP != "10.0.0.1" {
			t.Fatalf("GetDevice = %+v, %v", d, err)
		}
		if n := countRows(t, db, `SELECT COUNT(*) FROM devices WHERE user_id = '@a:x'`); n != 1 {
			t.Fatalf("%d device rows after logging in twice with one device ID", n)
		}
		// A duplicate token hash fails the whole login: no device is created.
		if err := db.CreateDeviceWithToken(ctx, storage.Device{UserID: "@a:x", DeviceID: "D2", CreatedTS: 1}, "acc2", 0, ""); err == nil {
			t.Fatal("a login reusing another device's token hash succeeded")
		}
		_, err = db.GetDevice(ctx, "@a:x", "D2")
		wantNotFound(t, "device of a failed login", err)
	})
}

func TestDevices(t *testing.T) {
	ctx := context.Background()
	forEachBackend(t, func(t *testing.T, db *storage.DB) {
		createUser(t, db, "@a:x")
		createUser(t, db, "@b:x")
		for _, d := range []string{"C", "A", "B"} {
			login(t, db, "@a:x", d, "", "tok"+d, "")
		}
		login(t, db, "@b:x", "A", "", "tokB-A", "")
		must(t, db.SetPusher(ctx, storage.Pusher{UserID: "@a:x", AppID: "app", PushKey: "kA", DeviceID: "A", JSON: "{}"}, true))
		must(t, db.SetPusher(ctx, storage.Pusher{UserID: "@a:x", AppID: "app", PushKey: "kB", DeviceID: "B", JSON: "{}"}, true))

		devs, err := db.ListDevices(ctx, "@a:x")
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, d := range devs {
			ids = append(ids, d.DeviceID)
		}
		if !slices.Equal(ids, []string{"A", "B", "C"}) {
			t.Fatalf("ListDevices = %v, want ordered by ID", ids)
		}
		_, err = db.GetDevice(ctx, "@a:x", "Z")
		wantNotFound(t, "GetDevice of a missing device", err)
		_, err = db.GetDevice(ctx, "@b:x", "B")
		wantNotFound(t, "GetDevice of another user's device ID", err)
		wantNotFound(t, "renaming a missing device", db.SetDeviceDisplayName(ctx, "@a:x", "Z", "n"))
		must(t, db.SetDeviceDisplayName(ctx, "@a:x", "A", "Laptop"))
		must(t, db.TouchDevice(ctx, "@a:x", "A", 99, "192.0.2.1"))
		if d, err := db.GetDevice(ctx, "@a:x", "A"); err != nil || d.DisplayName != "Laptop" || d.LastSeenTS != 99 || d.LastSeenIP != "192.0.2.1" {
			t.Fatalf("device A = %+v, %v", d, err)
		}

		deleted, err := db.DeleteDevices(ctx, "@a:x", []string{"A", "Z"})
		if err != nil || !slices.Equal(deleted, []string{"A"}) {
			t.Fatalf("DeleteDevices = %v, %v; want [A]", deleted, err)
		}
		_, err = db.LookupAccessToken(ctx, "tokA")
		wantNotFound(t, "token of a deleted device", err)
		if _, err := db.LookupAccessToken(ctx, "tokB-A"); err != nil {
			t.Fatalf("another user's device of the same ID lost its token: %v", err)
		}
		pushers, err := db.Pushers(ctx, "@a:x")
		if err != nil || len(pushers) != 1 || pushers[0].DeviceID != "B" {
			t.Fatalf("pushers after deleting device A: %+v, %v", pushers, err)
		}

		deleted, err = db.DeleteOtherDevices(ctx, "@a:x", "C")
		if err != nil || !slices.Equal(deleted, []string{"B"}) {
			t.Fatalf("DeleteOtherDevices = %v, %v; want [B]", deleted, err)
		}
		if devs, _ := db.ListDevices(ctx, "@a:x"); len(devs) != 1 || devs[0].DeviceID != "C" {
			t.Fatalf("devices left: %+v", devs)
		}
	})
}

func TestChangePassword(t *testing.T) {
	ctx := context.Background()
	forEachBackend(t, func(t *testing.T, db *storage.DB) {
		_, err := db.ChangePassword(ctx, "@nobody:x", "h2", true, "")
		wantNotFound(t, "ChangePassword of a missing user", err)

		createUser(t, db, "@a:x")
		login(t, db, "@a:x", "A", "", "tokA", "")
		login(t, db, "@a:x", "B", "", "tokB", "")
		if deleted, err := db.ChangePassword(ctx, "@a:x", "h2", false, ""); err != nil || len(deleted) != 0 {
			t.Fatalf("ChangePassword without logout: %v, %v", deleted, err)
		}
		deleted, err := db.ChangePassword(ctx, "@a:x", "h3", true, "B")
		if err != nil || !slices.Equal(deleted, []string{"A"}) {
			t.Fatalf("ChangePassword = %v, %v; want [A]", deleted, err)
		}
		if u, _ := db.GetUser(ctx, "@a:x"); u.PasswordHash != "h3" {
			t.Fatalf("password hash %q", u.PasswordHash)
		}
		_, err = db.LookupAccessToken(ctx, "tokA")
		wantNotFound(t, "token of a logged-out device", err)
		if _, err := db.LookupAccessToken(ctx, "tokB"); err != nil {
			t.Fatalf("the kept device lost its token: %v", err)
		}
	})
}

func TestDeactivateUser(t *testing.T) {
	ctx := context.Background()
	forEachBackend(t, func(t *testing.T, db *storage.DB) {
		for _, u := range []string{"@a:x", "@e:x"} {
			createUser(t, db, u)
			must(t, db.SetDisplayName(ctx, u, "Name"))
			login(t, db, u, "D1", "", "tok1"+u, "ref1"+u)
			login(t, db, u, "D2", "", "tok2"+u, "")
			must(t, db.PutAccountData(ctx, u, "", "m.t", []byte(`{}`), 1))
			if _, err := db.CreateFilter(ctx, u, []byte(`{}`)); err != nil {
				t.Fatal(err)
			}
			must(t, db.CreateLoginToken(ctx, "login"+u, u, 1<<40))
		}
		for _, c := range []struct {
			user  string
			erase bool
		}{{"@a:x", false}, {"@e:x", true}} {
			devices, err := db.DeactivateUser(ctx, c.user, c.erase)
			if err != nil || !slices.Equal(devices, []string{"D1", "D2"}) {
				t.Fatalf("DeactivateUser(%s) = %v, %v", c.user, devices, err)
			}
			u, err := db.GetUser(ctx, c.user)
			if err != nil || !u.Deactivated {
				t.Fatalf("%s not deactivated: %+v %v", c.user, u, err)
			}
			if (u.DisplayName == "") != c.erase {
				t.Fatalf("%s (erase %v): display name %q", c.user, c.erase, u.DisplayName)
			}
			for _, table := range []string{"access_tokens", "refresh_tokens", "login_tokens", "devices"} {
				if n := countRows(t, db, `SELECT COUNT(*) FROM `+table+` WHERE user_id = $1`, c.user); n != 0 {
					t.Fatalf("%s: %d rows left in %s", c.user, n, table)
				}
			}
			_, err = db.GetAccountData(ctx, c.user, "", "m.t")
			_, ferr := db.GetFilter(ctx, c.user, 0)
			if c.erase {
				wantNotFound(t, "erased account data", err)
				wantNotFound(t, "erased filter", ferr)
			} else if err != nil || ferr != nil {
				t.Fatalf("deactivation without erasure lost account data or filters: %v, %v", err, ferr)
			}
		}
	})
}

// Refresh tokens rotate as the spec asks: the old one stays usable until the
// new tokens are used, and a retried refresh (lost answer) supersedes the
// earlier one.
func TestRefreshTokenRotation(t *testing.T) {
	ctx := context.Background()
	forEachBackend(t, func(t *testing.T, db *storage.DB) {
		_, _, err := db.RotateRefreshToken(ctx, "unknown", "accX", 0, "refX", 1)
		wantNotFound(t, "rotating an unknown refresh token", err)

		createUser(t, db, "@a:x")
		login(t, db, "@a:x", "D", "", "acc1", "ref1")
		if o, err := db.LookupAccessToken(ctx, "acc1"); err != nil || o.RefreshHash != "ref1" || o.RefreshPending {
			t.Fatalf("acc1 = %+v, %v", o, err)
		}
		user, dev, err := db.RotateRefreshToken(ctx, "ref1", "acc2", 500, "ref2", 2)
		if err != nil || user != "@a:x" || dev != "D" {
			t.Fatalf("RotateRefreshToken = %s %s %v", user, dev, err)
		}
		if o, err := db.LookupAccessToken(ctx, "acc2"); err != nil || o.RefreshHash != "ref2" || !o.RefreshPending || o.ExpiresTS != 500 {
			t.Fatalf("acc2 = %+v, %v", o, err)
		}
		if _, err := db.LookupAccessToken(ctx, "acc1"); err != nil {
			t.Fatalf("the old access token went before the new ones were used: %v", err)
		}
		// The answer was lost: the client refreshes with ref1 again.
		if _, _, err := db.RotateRefreshToken(ctx, "ref1", "acc3", 500, "ref3", 3); err != nil {
			t.Fatal(err)
		}
		_, err = db.LookupAccessToken(ctx, "acc2")
		wantNotFound(t, "tokens of the superseded refresh", err)
		_, _, err = db.RotateRefreshToken(ctx, "ref2", "accY", 0, "refY", 4)
		wantNotFound(t, "the superseded refresh token", err)

		// Using acc3 confirms the refresh: ref1 and acc1 are revoked.
		must(t, db.ConfirmRefresh(ctx, "@a:x", "D", "ref3"))
		must(t, db.ConfirmRefresh(ctx, "@a:x", "D", "ref3")) // twice: nothing more to do
		_, err = db.LookupAccessToken(ctx, "acc1")
		wantNotFound(t, "access token before the confirmed refresh", err)
		_, _, err = db.RotateRefreshToken(ctx, "ref1", "accZ", 0, "refZ", 5)
		wantNotFound(t, "the refresh token after confirmation", err)
		if o, err := db.LookupAccessToken(ctx, "acc3"); err != nil || o.RefreshPending {
			t.Fatalf("acc3 after confirmation = %+v, %v", o, err)
		}
	})
}

// Concurrent uses of one refresh token run one after the other: every one
// succeeds, and exactly one set of new tokens survives.
func TestRefreshTokenConcurrentRotation(t *testing.T) {
	ctx := context.Background()
	forEachBackend(t, func(t *testing.T, db *storage.DB) {
		createUser(t, db, "@a:x")
		login(t, db, "@a:x", "D", "", "acc0", "ref0")
		var wg sync.WaitGroup
		errs := make([]error, 6)
		for i := range errs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, _, errs[i] = db.RotateRefreshToken(ctx, "ref0", fmt.Sprint("acc-new", i), 0, fmt.Sprint("ref-new", i), int64(i))
			}()
		}
		wg.Wait()
		must(t, errors.Join(errs...))
		if n := countRows(t, db, `SELECT COUNT(*) FROM access_tokens WHERE token_hash LIKE 'acc-new%'`); n != 1 {
			t.Fatalf("%d new access tokens survive, want 1", n)
		}
		if n := countRows(t, db, `SELECT COUNT(*) FROM refresh_tokens WHERE token_hash LIKE 'ref-new%'`); n != 1 {
			t.Fatalf("%d new refresh tokens survive, want 1", n)
		}
	})
}

func TestLoginTokens(t *testing.T) {
	ctx := context.Background()
	forEachBackend(t, func(t *testing.T, db *storage.DB) {
		must(t, db.CreateLoginToken(ctx, "good", "@a:x", 100))
		must(t, db.CreateLoginToken(ctx, "old", "@a:x", 50))
		must(t, db.CreateLoginToken(ctx, "later", "@a:x", 60))
		_, err := db.ConsumeLoginToken(ctx, "unknown", 55)
		wantNotFound(t, "unknown login token", err)
		// The sweep on the way removed "old" (expired at 55), not "later".
		if n := countRows(t, db, `SELECT COUNT(*) FROM login_tokens`); n != 2 {
			t.Fatalf("%d login tokens after the sweep, want 2", n)
		}
		if u, err := db.ConsumeLoginToken(ctx, "good", 60); err != nil || u != "@a:x" {
			t.Fatalf("ConsumeLoginToken = %q, %v", u, err)
		}
		_, err = db.ConsumeLoginToken(ctx, "good", 60)
		wantNotFound(t, "login token used twice", err)
		_, err = db.ConsumeLoginToken(ctx, "later", 60) // expires_ts <= now
		wantNotFound(t, "login token at its expiry", err)
		if n := countRows(t, db, `SELECT COUNT(*) FROM login_tokens`); n != 0 {
			t.Fatalf("%d login tokens left", n)
		}
	})
}

// One token is consumed by exactly one of concurrent callers.
func TestLoginTokenConsumedOnce(t *testing.T) {
	ctx := context.Background()
	forEachBackend(t, func(t *testing.T, db *storage.DB) {
		must(t, db.CreateLoginToken(ctx, "tok", "@a:x", 1<<40))
		var wg sync.WaitGroup
		var mu sync.Mutex
		won := 0
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := db.ConsumeLoginToken(ctx, "tok", 1)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					won++
				case !errors.Is(err, storage.ErrNotFound):
					t.Errorf("ConsumeLoginToken: %v", err)
				}
			}()
		}
		wg.Wait()
		if won != 1 {
			t.Fatalf("%d callers consumed the token, want 1", won)
		}
	})
}
