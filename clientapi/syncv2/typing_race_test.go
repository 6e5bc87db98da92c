package syncv2_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"

	"github.com/myelin-chat/myelin/clientapi/syncv2"
	"github.com/myelin-chat/myelin/homeserver/testserver"
)

func TestMain(m *testing.M) { testserver.Main(m) }

// TestTypingBetweenReadAndWait: a typing change that lands after a long-poll
// read its state but before it began waiting still ends the wait at once
// with the new typing list (it used to be lost until the timeout).
func TestTypingBetweenReadAndWait(t *testing.T) {
	srv := testserver.Start(t, "sqlite")
	ctx := context.Background()
	alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.JoinRoomByID(ctx, room.RoomID); err != nil {
		t.Fatal(err)
	}
	first, err := alice.SyncRequest(ctx, 0, "", "", false, event.PresenceOnline)
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	syncv2.SetTestHookBeforeWait(func() {
		once.Do(func() {
			if err := srv.Ephemeral.SetTyping(ctx, room.RoomID.String(), bob.UserID.String(), true, time.Minute); err != nil {
				t.Error(err)
			}
		})
	})
	defer syncv2.SetTestHookBeforeWait(nil)
	start := time.Now()
	resp, err := alice.SyncRequest(ctx, 8000, first.NextBatch, `{"presence":{"not_types":["*"]}}`, false, event.PresenceOnline)
	if err != nil {
		t.Fatal(err)
	}
	jr := resp.Rooms.Join[room.RoomID]
	typing := false
	if jr != nil {
		for _, e := range jr.Ephemeral.Events {
			if e.Type == event.EphemeralEventTyping {
				_ = e.Content.ParseRaw(e.Type)
				for _, u := range e.Content.AsTyping().UserIDs {
					typing = typing || u == bob.UserID
				}
			}
		}
	}
	if !typing {
		t.Fatalf("the long-poll ended after %v without bob's typing notification", time.Since(start))
	}
}
