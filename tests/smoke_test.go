package tests

import (
	"context"
	"testing"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

// TestRegisterLoginWhoami is the smallest end-to-end path: a real mautrix
// client registers, logs in again and asks who it is, on each backend.
func TestRegisterLoginWhoami(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		alice := srv.Register(t, "alice")
		who, err := alice.Whoami(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if who.UserID != srv.UserID("alice") || who.DeviceID != alice.DeviceID {
			t.Fatalf("whoami = %+v", who)
		}
	})
}
