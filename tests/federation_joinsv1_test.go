package tests

import (
	"context"
	"encoding/json"
	jsonv2 "encoding/json/v2"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix"
	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

// TestFederationJoinV1Rooms: rooms of versions 1 and 2, whose events carry
// their own event_id. b.test's user joins a.test's version 1 room and a.test's
// user joins b.test's version 2 room (make_join's template has no event_id;
// the joining server adds one of its own); both servers list the members and
// messages cross both ways. A remote server also joins through the
// deprecated v1 send_join ([200, {…}]); a join whose event ID is another
// server's is 400 M_BAD_JSON and is not stored.
func TestFederationJoinV1Rooms(t *testing.T) {
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) {
			n := newFedNet(t, "a.test", "b.test", "remote.test")
			a := n.start(t, backend, "a.test")
			b := n.start(t, backend, "b.test")
			ctx := ctxT(t)
			alice := a.Register(t, "alice")
			bob := b.Register(t, "bob")
			roomA := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: "1"})
			roomB := createRoom(t, bob, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: "2"})
			if _, err := bob.JoinRoom(ctx, string(roomA), &mautrix.ReqJoinRoom{Via: []string{"a.test"}}); err != nil {
				t.Fatalf("bob joins a.test's v1 room: %v", err)
			}
			if _, err := alice.JoinRoom(ctx, string(roomB), &mautrix.ReqJoinRoom{Via: []string{"b.test"}}); err != nil {
				t.Fatalf("alice joins b.test's v2 room: %v", err)
			}
			for _, c := range []struct {
				room         id.RoomID
				joiner       *mautrix.Client
				host, joined *testserver.Server
			}{{roomA, bob, a, b}, {roomB, alice, b, a}} {
				for _, srv := range []*testserver.Server{c.host, c.joined} {
					ev := currentMember(t, srv, c.room, c.joiner.UserID)
					if gjson.GetBytes(ev, "content.membership").Str != "join" ||
						!strings.HasSuffix(gjson.GetBytes(ev, "event_id").Str, ":"+c.joined.Config.ServerName) {
						t.Fatalf("%s's copy of the join: %s", srv.Config.ServerName, ev)
					}
				}
			}
			// Messages both ways in the v1 room.
			bobSince := must(bob.SyncRequest(ctx, 0, "", "", false, "")).NextBatch
			aliceSince := must(alice.SyncRequest(ctx, 0, "", "", false, "")).NextBatch
			fromA := sendText(t, alice, roomA, "from a")
			fromB := sendText(t, bob, roomA, "from b")
			sees := func(c *mautrix.Client, since string, want id.EventID) {
				t.Helper()
				syncUntil(t, c, since, "", func(r *mautrix.RespSync) bool {
					for _, e := range timelineOf(r, roomA) {
						if e.ID == want {
							return true
						}
					}
					return false
				})
			}
			sees(bob, bobSince, fromA)
			sees(alice, aliceSince, fromB)

			// A remote server through the v1 send_join.
			remote := newFakeRemote(t, n, a, "remote.test")
			call := func(method string, path mfed.URLPath, query url.Values, body any) (gjson.Result, error) {
				raw, _, err := remote.client.MakeFullRequest(ctx, mfed.RequestParams{ServerName: "a.test", Method: method, Path: path,
					Query: query, Authenticate: true, RequestJSON: body})
				return gjson.ParseBytes(raw), err
			}
			carol := id.UserID("@carol:remote.test")
			tmpl, err := call("GET", mfed.URLPath{"v1", "make_join", roomA, carol}, nil, nil) // no ver: version 1
			if err != nil {
				t.Fatalf("make_join: %v", err)
			}
			if tmpl.Get("room_version").Str != "1" || tmpl.Get("event.event_id").Exists() {
				t.Fatalf("template: %s", tmpl.Raw)
			}
			signV1 := func(eventID id.EventID) json.RawMessage {
				var p pdu.RoomV1PDU
				if err := jsonv2.Unmarshal([]byte(tmpl.Get("event").Raw), &p); err != nil {
					t.Fatal(err)
				}
				p.EventID, p.OriginServerTS = eventID, time.Now().UnixMilli()
				if err := p.Sign("1", "remote.test", remote.key.ID, remote.key.Priv); err != nil {
					t.Fatal(err)
				}
				return must(jsonv2.Marshal(&p))
			}
			foreign := id.EventID("$notyours:b.test")
			_, err = call("PUT", mfed.URLPath{"v1", "send_join", roomA, foreign}, nil, signV1(foreign))
			assertMatrixErr(t, err, 400, "M_BAD_JSON")
			if _, err := a.DB.GetEvent(context.Background(), string(foreign)); err == nil {
				t.Fatal("a join with another server's event ID was stored")
			}
			joinID := id.EventID("$carolsjoin:remote.test")
			got, err := call("PUT", mfed.URLPath{"v1", "send_join", roomA, joinID}, nil, signV1(joinID))
			if err != nil {
				t.Fatalf("v1 send_join: %v", err)
			}
			if got.Get("0").Int() != 200 || got.Get("1.origin").Str != "a.test" || len(got.Get("1.state").Array()) == 0 ||
				len(got.Get("1.auth_chain").Array()) == 0 || got.Get("1.event.event_id").Str != string(joinID) {
				t.Fatalf("v1 send_join answer: %s", got.Raw)
			}
			if _, ok := must(alice.JoinedMembers(ctx, roomA)).Joined[carol]; !ok {
				t.Fatal("carol is not joined on a.test")
			}
		})
	}
}
