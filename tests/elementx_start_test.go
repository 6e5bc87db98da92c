package tests

import (
	"slices"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/homeserver/testserver"
	"github.com/myelin-chat/myelin/internal/config"
)

// TestElementXStart walks what Element X (matrix-rust-sdk) asks at login
// and start, with OAuth not configured: discovery, /versions flags, the
// OAuth metadata it probes (404 M_UNRECOGNIZED, the spec's "legacy
// authentication"), password login, sliding sync in a v12 room, and
// deactivation ending the session.
func TestElementXStart(t *testing.T) {
	forEachBackendWith(t, testserver.Options{Configure: func(c *config.Config) {
		c.Calls.RTCFoci = []config.RTCFocus{{Type: "livekit", LiveKitServiceURL: "https://jwt.example.org"}}
	}}, func(t *testing.T, srv *testserver.Server) {
		wk := httpCall(t, srv.URL, "GET", "/.well-known/matrix/client", "", nil)
		if wk.Status != 200 || obj(wk.Body["m.homeserver"])["base_url"] == nil {
			t.Fatalf("well-known: %d %s", wk.Status, wk.Raw)
		}
		foci := asList(wk.Body["org.matrix.msc4143.rtc_foci"])
		if len(foci) != 1 || obj(foci[0])["livekit_service_url"] != "https://jwt.example.org" {
			t.Errorf("rtc_foci = %v", wk.Body["org.matrix.msc4143.rtc_foci"])
		}

		v := httpCall(t, srv.URL, "GET", "/_matrix/client/versions", "", nil)
		uf := obj(v.Body["unstable_features"])
		if uf["org.matrix.simplified_msc3575"] != true || uf["org.matrix.msc3916.stable"] != true {
			t.Errorf("unstable_features = %v: Element X needs simplified sliding sync and authenticated media", uf)
		}
		if uf["org.matrix.msc4306"] == true {
			t.Errorf("thread subscriptions (MSC4306) advertised but not served")
		}
		if vs := asList(v.Body["versions"]); !slices.Contains(vs, any("v1.11")) {
			t.Errorf("versions %v lack v1.11 (authenticated media)", vs)
		}

		// OAuth 2.0 discovery, stable and the unstable names the SDK also tries.
		for _, p := range []string{"/_matrix/client/v1/auth_metadata",
			"/_matrix/client/unstable/org.matrix.msc2965/auth_metadata",
			"/_matrix/client/unstable/org.matrix.msc2965/auth_issuer"} {
			if r := httpCall(t, srv.URL, "GET", p, "", nil); r.Status != 404 || r.errcode() != "M_UNRECOGNIZED" {
				t.Errorf("GET %s without OAuth: %d %s, want 404 M_UNRECOGNIZED", p, r.Status, r.Raw)
			}
		}
		flows := httpCall(t, srv.URL, "GET", "/_matrix/client/v3/login", "", nil)
		if !strings.Contains(string(flows.Raw), "m.login.password") {
			t.Errorf("login flows: %s", flows.Raw)
		}

		// A v12 room (room ID without a server name) through Element X's room list.
		alice, bob := srv.Register(t, "alice"), srv.Register(t, "bob")
		room := createRoom(t, alice, &mautrix.ReqCreateRoom{RoomVersion: "12", Preset: "private_chat", Name: "Twelve", Invite: []id.UserID{bob.UserID}}, bob)
		if strings.Contains(string(room), ":") {
			t.Errorf("v12 room ID %s has a server name", room)
		}
		sendText(t, alice, room, "in v12")
		resp := slidingSync(t, bob, "", 0, elementXRoomList("x"))
		r := obj(ssRooms(resp)[string(room)])
		if r == nil || r["name"] != "Twelve" || !slices.Contains(ssTimelineBodies(r), "in v12") {
			t.Fatalf("v12 room in sliding sync: %v", r)
		}
		var version any
		for _, e := range asList(r["required_state"]) {
			if obj(e)["type"] == "m.room.create" {
				version = obj(obj(e)["content"])["room_version"]
			}
		}
		if version != "12" {
			t.Errorf("create event's room_version = %v, want 12", version)
		}
		sub := slidingSync(t, bob, "", 0, map[string]any{"conn_id": "sub", "room_subscriptions": map[string]any{
			string(room): map[string]any{"timeline_limit": 20, "required_state": [][]string{{"*", "*"}}}}})
		if obj(ssRooms(sub)[string(room)]) == nil {
			t.Errorf("subscription to a v12 room answered nothing: %s", keysOf(ssRooms(sub)))
		}

		// Deactivation: the session and its sliding sync connection end.
		pos := resp["pos"].(string)
		deactivate(t, bob, "bob", false)
		if r := clientCall(t, bob, "POST", slidingPath+"?pos="+pos, elementXRoomList("y")); r.Status != 401 || r.errcode() != "M_UNKNOWN_TOKEN" {
			t.Errorf("sliding sync after deactivation: %d %s", r.Status, r.Raw)
		}
		login := httpCall(t, srv.URL, "POST", "/_matrix/client/v3/login", "", map[string]any{"type": "m.login.password",
			"identifier": map[string]any{"type": "m.id.user", "user": "bob"}, "password": "password-bob"})
		if login.Status != 403 || login.errcode() != "M_USER_DEACTIVATED" {
			t.Errorf("login after deactivation: %d %s, want 403 M_USER_DEACTIVATED", login.Status, login.Raw)
		}
	})
}
