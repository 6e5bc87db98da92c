package tests

import (
	"encoding/json"
	"net/url"
	"slices"
	"testing"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix"
	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

// TestFederationSendJoinOmitMembers: a remote server that asks send_join for
// omit_members (MSC3706) gets the state without member events but the
// joiner's own earlier one (here a leave after an unban) and, in a room with
// neither name nor canonical alias, the heroes'; the auth chain covers the
// returned state and the join (the state's own events may be left out);
// members_omitted is true and servers_in_room is the servers in the room
// before the join (hs.test alone, not the joiner's remote.test). A bad omit_members is
// 400 M_INVALID_PARAM with nothing stored.
func TestFederationSendJoinOmitMembers(t *testing.T) {
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) {
			n := newFedNet(t, "hs.test", "remote.test")
			srv := n.start(t, backend, "hs.test")
			ctx := ctxT(t)
			remote := newFakeRemote(t, n, srv, "remote.test")
			alice := srv.Register(t, "alice")
			carol := srv.Register(t, "carol")
			named := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Named"})
			unnamed := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
			for _, r := range []id.RoomID{named, unnamed} {
				must(carol.JoinRoomByID(ctx, r))
			}
			bob := id.UserID("@bob:remote.test")
			must(alice.BanUser(ctx, named, &mautrix.ReqBanUser{UserID: bob, Reason: "x"}))
			must(alice.UnbanUser(ctx, named, &mautrix.ReqUnbanUser{UserID: bob}))
			path := func(parts ...any) mfed.URLPath { return mfed.URLPath(parts) }

			sendJoin := func(room id.RoomID, query url.Values) (gjson.Result, id.EventID, error) {
				t.Helper()
				version := id.RoomVersion(must(srv.DB.GetRoom(ctx, string(room))).RoomVersion)
				got, err := remote.get(ctx, "GET", path("v1", "make_join", room, bob), url.Values{"ver": {string(version)}}, nil)
				if err != nil {
					t.Fatalf("make_join: %v", err)
				}
				join, joinID := remote.signTemplate(t, version, got.Get("event").Raw, nil)
				got, err = remote.get(ctx, "PUT", path("v2", "send_join", room, joinID), query, json.RawMessage(join))
				return got, joinID, err
			}
			memberKeys := func(state gjson.Result) []string {
				var out []string
				for _, e := range state.Array() {
					if e.Get("type").Str == "m.room.member" {
						out = append(out, e.Get("state_key").Str)
					}
				}
				slices.Sort(out)
				return out
			}
			check := func(room id.RoomID, got gjson.Result, joinID id.EventID, wantMembers []string) {
				t.Helper()
				if !got.Get("members_omitted").Bool() || !slices.Equal(stringsOf(got.Get("servers_in_room")), []string{"hs.test"}) {
					t.Fatalf("answer: members_omitted %s servers_in_room %s", got.Get("members_omitted").Raw, got.Get("servers_in_room").Raw)
				}
				if m := memberKeys(got.Get("state")); !slices.Equal(m, wantMembers) {
					t.Fatalf("member events in the state: %v, want %v", m, wantMembers)
				}
				stateIDs := eventsIDs(t, srv, got.Get("state"))
				full := must(srv.Rooms.StateIDsAt(ctx, room, string(joinID)))
				var nonMembers int
				for _, e := range got.Get("state").Array() {
					if e.Get("type").Str != "m.room.member" {
						nonMembers++
					}
				}
				for _, x := range stateIDs {
					if !slices.Contains(full, x) {
						t.Fatalf("state event %s is not of the state before the join", x)
					}
				}
				if nonMembers+len(wantMembers) != len(stateIDs) || nonMembers < 4 {
					t.Fatalf("state %v", stateIDs)
				}
				chain := eventsIDs(t, srv, got.Get("auth_chain"))
				for _, x := range chain {
					if slices.Contains(stateIDs, x) {
						t.Fatalf("auth chain repeats state event %s", x)
					}
				}
				// Every auth event of the state and the join is in the answer.
				checkAuthChain(t, srv, append(slices.Clone(stateIDs), string(joinID)), append(slices.Clone(chain), stateIDs...))
			}

			// A bad omit_members: refused before anything is stored.
			_, badID, err := sendJoin(named, url.Values{"omit_members": {"yes"}})
			assertMatrixErr(t, err, 400, "M_INVALID_PARAM")
			if _, err := srv.DB.GetEvent(ctx, string(badID)); err == nil {
				t.Fatal("the refused join was stored")
			}

			// A named room: only bob's own earlier membership (his leave).
			got, joinID, err := sendJoin(named, url.Values{"omit_members": {"true"}})
			if err != nil {
				t.Fatalf("send_join: %v", err)
			}
			check(named, got, joinID, []string{string(bob)})
			for _, e := range got.Get("state").Array() {
				if e.Get("type").Str == "m.room.member" && e.Get("content.membership").Str != "leave" {
					t.Fatalf("bob's membership before the join: %s", e.Raw)
				}
			}
			// An unnamed room: the heroes' member events (alice, carol).
			got, joinID, err = sendJoin(unnamed, url.Values{"omit_members": {"true"}})
			if err != nil {
				t.Fatalf("send_join: %v", err)
			}
			check(unnamed, got, joinID, []string{string(alice.UserID), string(carol.UserID)})
			members := must(alice.JoinedMembers(ctx, unnamed))
			if _, ok := members.Joined[bob]; !ok {
				t.Fatalf("bob is not joined: %v", members.Joined)
			}
		})
	}
}
