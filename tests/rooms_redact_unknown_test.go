package tests

import (
	"context"
	"net/http"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

// TestRedactUnknownEvent: a user with the redact power level may redact an
// event this server does not have (over federation it may never arrive);
// the redaction is sent. A user without that level gets M_NOT_FOUND.
func TestRedactUnknownEvent(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		alice := srv.Register(t, "alice")
		bob := srv.Register(t, "bob")
		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"}, bob)
		unknown := id.EventID("$notHereYet0123456789abcdefghijklmnopqrstuvw")
		resp, err := alice.RedactEvent(ctx, room, unknown)
		if err != nil {
			t.Fatalf("moderator redacting an unknown event: %v", err)
		}
		ev := must(alice.GetEvent(ctx, room, resp.EventID))
		if ev.Type != event.EventRedaction || (ev.Redacts != unknown && ev.Content.Raw["redacts"] != string(unknown)) {
			t.Fatalf("the redaction: %+v", ev)
		}
		_, err = bob.RedactEvent(ctx, room, unknown)
		wantErr(t, err, http.StatusNotFound, "M_NOT_FOUND")
	})
}
