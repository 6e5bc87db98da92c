package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/homeserver/testserver"
	"github.com/myelin-chat/myelin/internal/config"
)

const noticePath = "/_synapse/admin/v1/send_server_notice"

// noticeAdmin creates a server admin (as the CLI and shared-secret
// registration do) and logs it in.
func noticeAdmin(t *testing.T, srv *testserver.Server) *mautrix.Client {
	t.Helper()
	if _, err := srv.Accounts.CreateUser(context.Background(), "admin", "password-admin", true); err != nil {
		t.Fatal(err)
	}
	c, err := loginPassword(t, srv, "admin", "password-admin", "ADMINDEV")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func sendNotice(t *testing.T, admin *mautrix.Client, user id.UserID, body, txnID string) string {
	t.Helper()
	method, path := http.MethodPost, noticePath
	if txnID != "" {
		method, path = http.MethodPut, noticePath+"/"+txnID
	}
	r := clientCall(t, admin, method, path, map[string]any{
		"user_id": user, "content": map[string]any{"msgtype": "m.text", "body": body}})
	evID, _ := r.Body["event_id"].(string)
	if r.Status != http.StatusOK || evID == "" {
		t.Fatalf("send_server_notice: %d %s", r.Status, r.Raw)
	}
	return evID
}

// syncRooms is one full /sync of c (no since token): the rooms section.
func syncRooms(t *testing.T, c *mautrix.Client) map[string]any {
	t.Helper()
	r := clientCall(t, c, http.MethodGet, "/_matrix/client/v3/sync?timeout=0", nil)
	if r.Status != http.StatusOK {
		t.Fatalf("sync: %d %s", r.Status, r.Raw)
	}
	return obj(r.Body["rooms"])
}

// noticeInvite waits for c's invite from the server notices user and returns its room.
func noticeInvite(t *testing.T, c *mautrix.Client, system id.UserID) id.RoomID {
	t.Helper()
	for range 50 {
		for roomID, room := range obj(syncRooms(t, c)["invite"]) {
			events, _ := obj(obj(room)["invite_state"])["events"].([]any)
			if len(events) > 0 && obj(events[0])["sender"] == system.String() {
				return id.RoomID(roomID)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatal("no invite from the server notices user")
	return ""
}

// TestServerNotices follows Complement's TestServerNotices, then checks the
// room's tag and name and that the system user's localpart is reserved.
func TestServerNotices(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		admin := noticeAdmin(t, srv)
		alice := srv.Register(t, "alice")
		system := srv.UserID("_server")

		if r := clientCall(t, alice, http.MethodPost, noticePath, nil); r.Status != http.StatusForbidden || r.errcode() != "M_FORBIDDEN" {
			t.Fatalf("notice from a non-admin: %d %s", r.Status, r.Raw)
		}
		eventID := sendNotice(t, admin, alice.UserID, "hello from server notices!", "")
		roomID := noticeInvite(t, alice, system)

		r := clientCall(t, alice, http.MethodPost, "/_matrix/client/v3/rooms/"+roomID.String()+"/leave", map[string]any{})
		if r.Status != http.StatusForbidden || r.errcode() != "M_CANNOT_LEAVE_SERVER_NOTICE_ROOM" {
			t.Fatalf("rejecting the notice invite: %d %s", r.Status, r.Raw)
		}
		if r := clientCall(t, alice, http.MethodPost, "/_matrix/client/v3/join/"+roomID.String(), map[string]any{}); r.Status != http.StatusOK {
			t.Fatalf("joining the notices room: %d %s", r.Status, r.Raw)
		}
		ev := clientCall(t, alice, http.MethodGet, "/_matrix/client/v3/rooms/"+roomID.String()+"/event/"+eventID, nil)
		if ev.Status != http.StatusOK || ev.Body["sender"] != system.String() || obj(ev.Body["content"])["body"] != "hello from server notices!" {
			t.Fatalf("the notice as alice reads it: %d %s", ev.Status, ev.Raw)
		}
		tags := clientCall(t, alice, http.MethodGet, "/_matrix/client/v3/user/"+alice.UserID.String()+"/rooms/"+roomID.String()+"/tags", nil)
		if _, ok := obj(tags.Body["tags"])["m.server_notice"]; !ok {
			t.Fatalf("the notices room is not tagged m.server_notice: %s", tags.Raw)
		}
		name := clientCall(t, alice, http.MethodGet, "/_matrix/client/v3/rooms/"+roomID.String()+"/state/m.room.name/", nil)
		if name.Body["name"] != "Server Notices" {
			t.Fatalf("room name: %s", name.Raw)
		}
		if r := clientCall(t, alice, http.MethodPost, "/_matrix/client/v3/rooms/"+roomID.String()+"/leave", map[string]any{}); r.Status != http.StatusOK {
			t.Fatalf("leaving the notices room after joining: %d %s", r.Status, r.Raw)
		}

		sendNotice(t, admin, alice.UserID, "second", "")
		if again := noticeInvite(t, alice, system); again != roomID {
			t.Fatalf("a new notices room after leaving: %s != %s", again, roomID)
		}
		first := sendNotice(t, admin, alice.UserID, "once", "1")
		if second := sendNotice(t, admin, alice.UserID, "once", "1"); second != first {
			t.Fatalf("retried transaction: %s != %s", second, first)
		}

		// Nobody can register (or so log in as) the system user.
		reg := httpCall(t, srv.URL, http.MethodPost, "/_matrix/client/v3/register", "", map[string]any{
			"username": "_server", "password": "password-server", "auth": map[string]any{"type": "m.login.dummy"}})
		if reg.Status != http.StatusBadRequest || reg.errcode() != "M_EXCLUSIVE" {
			t.Fatalf("registering the server notices user: %d %s", reg.Status, reg.Raw)
		}
		if _, err := loginPassword(t, srv, "_server", "", ""); err == nil {
			t.Fatal("logged in as the server notices user with an empty password")
		}
	})
}

// TestServerNoticesBadTargets: an unknown, remote or missing user_id changes nothing.
func TestServerNoticesBadTargets(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		admin := noticeAdmin(t, srv)
		content := map[string]any{"msgtype": "m.text", "body": "x"}
		for _, tc := range []struct {
			body    any
			status  int
			errcode string
		}{
			{map[string]any{"user_id": "@nobody:localhost", "content": content}, 404, "M_NOT_FOUND"},
			{map[string]any{"user_id": "@alice:elsewhere.example", "content": content}, 404, "M_NOT_FOUND"},
			{map[string]any{"user_id": "not-a-user", "content": content}, 400, "M_INVALID_PARAM"},
			{map[string]any{"user_id": "@admin:localhost"}, 400, "M_MISSING_PARAM"},
			{"{", 400, "M_NOT_JSON"},
		} {
			r := clientCall(t, admin, http.MethodPost, noticePath, tc.body)
			if r.Status != tc.status || r.errcode() != tc.errcode {
				t.Errorf("%v: %d %s, want %d %s", tc.body, r.Status, r.Raw, tc.status, tc.errcode)
			}
		}
	})
}

// TestServerNoticesRoomKeptAcrossRestart: the user's room is remembered in
// the store, and a configured localpart is reserved at registration.
func TestServerNoticesRoomKeptAcrossRestart(t *testing.T) {
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			conf := restartableOptions(t, func(c *config.Config) { c.ServerNotices.SystemUserLocalpart = "notices" })
			srv := testserver.Start(t, backend, conf)
			admin := noticeAdmin(t, srv)
			alice := srv.Register(t, "alice")
			system := srv.UserID("notices")
			// Reserved before the system user exists (created by the first notice).
			reg := httpCall(t, srv.URL, http.MethodPost, "/_matrix/client/v3/register", "", map[string]any{
				"username": "notices", "password": "password-notices", "auth": map[string]any{"type": "m.login.dummy"}})
			if reg.Status != http.StatusBadRequest || reg.errcode() != "M_EXCLUSIVE" {
				t.Fatalf("registering the configured notices user: %d %s", reg.Status, reg.Raw)
			}
			sendNotice(t, admin, alice.UserID, "before", "")
			roomID := noticeInvite(t, alice, system)

			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := srv.Shutdown(ctx); err != nil {
				t.Fatal(err)
			}
			srv2 := testserver.Start(t, backend, conf)
			reconnect := func(c *mautrix.Client) *mautrix.Client {
				c2 := srv2.Client(t)
				c2.SetCredentials(c.UserID, c.AccessToken)
				return c2
			}
			alice2 := reconnect(alice)
			evID := sendNotice(t, reconnect(admin), alice.UserID, "after", "")
			if r := clientCall(t, alice2, http.MethodPost, "/_matrix/client/v3/rooms/"+roomID.String()+"/leave", map[string]any{}); r.errcode() != "M_CANNOT_LEAVE_SERVER_NOTICE_ROOM" {
				t.Fatalf("rejecting after a restart: %d %s", r.Status, r.Raw)
			}
			if r := clientCall(t, alice2, http.MethodPost, "/_matrix/client/v3/join/"+roomID.String(), map[string]any{}); r.Status != http.StatusOK {
				t.Fatalf("join: %d %s", r.Status, r.Raw)
			}
			if ev := clientCall(t, alice2, http.MethodGet, "/_matrix/client/v3/rooms/"+roomID.String()+"/event/"+evID, nil); ev.Status != http.StatusOK {
				t.Fatalf("the notice after the restart is not in the same room: %d %s", ev.Status, ev.Raw)
			}
		})
	}
}

// TestServerNoticesDeactivatedUser: deactivating an account rejects even its
// server notices invite (it leaves every room), and a deactivated user is
// sent no more notices (404).
func TestServerNoticesDeactivatedUser(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		admin := noticeAdmin(t, srv)
		alice := srv.Register(t, "alice")
		system := srv.UserID("_server")
		sendNotice(t, admin, alice.UserID, "hello", "")
		roomID := noticeInvite(t, alice, system)
		ctx := context.Background()
		if err := srv.Accounts.Deactivate(ctx, alice.UserID, false); err != nil {
			t.Fatal(err)
		}
		ev, err := srv.RoomView.StateEvent(ctx, system, roomID, "m.room.member", alice.UserID.String())
		if err != nil || obj(jsonMap(t, ev)["content"])["membership"] != "leave" {
			t.Fatalf("alice's membership after deactivation: %v %v", ev, err)
		}
		r := clientCall(t, admin, http.MethodPost, noticePath, map[string]any{
			"user_id": alice.UserID, "content": map[string]any{"msgtype": "m.text", "body": "x"}})
		if r.Status != http.StatusNotFound || r.errcode() != "M_NOT_FOUND" {
			t.Fatalf("notice to a deactivated user: %d %s", r.Status, r.Raw)
		}
	})
}

func jsonMap(t *testing.T, raw []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestServerNoticesConcurrentFirstNotices: notices sent at once to a user
// without a room yet make one room, not one each.
func TestServerNoticesConcurrentFirstNotices(t *testing.T) {
	forEachBackend(t, func(t *testing.T, srv *testserver.Server) {
		admin := noticeAdmin(t, srv)
		alice := srv.Register(t, "alice")
		var wg sync.WaitGroup
		for i := range 5 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := clientCall(t, admin, http.MethodPost, noticePath, map[string]any{
					"user_id": alice.UserID, "content": map[string]any{"msgtype": "m.text", "body": fmt.Sprint(i)}})
				if r.Status != http.StatusOK {
					t.Errorf("notice %d: %d %s", i, r.Status, r.Raw)
				}
			}()
		}
		wg.Wait()
		if invites := obj(syncRooms(t, alice)["invite"]); len(invites) != 1 {
			t.Fatalf("%d notice rooms, want 1", len(invites))
		}
	})
}
