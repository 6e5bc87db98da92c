package tests

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"testing"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

// TestFederationJoinMemberServerDown: a room on a.test that a user of c.test
// joined; c.test goes down. b.test imports a send_join answer without the
// notary route: the events it cannot verify (carol's join, a room name with
// a wrong signature) are left out and the import succeeds. Then bob of
// b.test joins the room through a.test, which b.test asks as a notary for
// c.test's key: the join succeeds, bob sees alice's messages, carol is a
// member on b.test too.
func TestFederationJoinMemberServerDown(t *testing.T) {
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) {
			n := newFedNet(t, "a.test", "b.test", "c.test")
			a := n.start(t, backend, "a.test")
			b := n.start(t, backend, "b.test")
			c := n.start(t, backend, "c.test")
			ctx := ctxT(t)
			alice := a.Register(t, "alice")
			carol := c.Register(t, "carol")
			room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Big room"})
			other := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Other room"})
			sendText(t, alice, room, "before carol")
			for _, r := range []id.RoomID{room, other} {
				if _, err := carol.JoinRoom(ctx, string(r), &mautrix.ReqJoinRoom{Via: []string{"a.test"}}); err != nil {
					t.Fatalf("carol joins %s: %v", r, err)
				}
			}
			sendText(t, alice, room, "before bob")

			// c.test goes down.
			n.relays["c.test"].point("")
			n.relays["c.test"].cut()

			// Without the notary route (no hint in the context): carol's join
			// cannot be verified, the name's signature is wrong; both are
			// left out and the rest imports.
			dave := id.UserID("@dave:b.test")
			b.Register(t, "dave")
			tmpl := must(a.Rooms.MakeJoin(ctx, other, dave))
			join, _, err := b.Rooms.SignJoin(other, tmpl.RoomVersion, tmpl.Event, dave)
			if err != nil {
				t.Fatal(err)
			}
			var state, chain []json.RawMessage
			var ids []string
			for _, e := range must(a.DB.CurrentStateEvents(ctx, string(other))) {
				raw := json.RawMessage(e.JSON)
				if e.Type == "m.room.name" {
					raw = wrongSignature(t, raw, "a.test")
				}
				state = append(state, raw)
				ids = append(ids, e.EventID)
			}
			for _, e := range must(a.Rooms.AuthChain(ctx, ids)) {
				chain = append(chain, e.JSON)
			}
			if err := b.Rooms.ImportJoin(context.Background(), other, tmpl.RoomVersion, state, chain, join); err != nil {
				t.Fatalf("import with c.test down: %v", err)
			}
			imported := map[string]bool{}
			for _, e := range must(b.DB.CurrentStateEvents(ctx, string(other))) {
				imported[e.Type+"|"+*e.StateKey] = true
			}
			if !imported["m.room.member|"+string(dave)] || !imported["m.room.member|"+string(alice.UserID)] ||
				imported["m.room.member|"+string(carol.UserID)] || imported["m.room.name|"] {
				t.Fatalf("b.test's state of the imported room: %v", imported)
			}

			// A real join through a.test: a.test vouches for c.test's key.
			bob := b.Register(t, "bob")
			if _, err := bob.JoinRoom(ctx, string(room), &mautrix.ReqJoinRoom{Via: []string{"a.test"}}); err != nil {
				t.Fatalf("bob's join with c.test down: %v", err)
			}
			members := must(bob.JoinedMembers(ctx, room))
			if _, ok := members.Joined[alice.UserID]; !ok {
				t.Fatalf("b.test's members: %v", members.Joined)
			}
			if _, ok := members.Joined[carol.UserID]; !ok {
				t.Fatalf("carol is not a member on b.test (a.test as notary): %v", members.Joined)
			}
			keys, err := b.DB.ServerKeys(ctx, "c.test")
			if err != nil || len(keys) == 0 {
				t.Fatalf("b.test has no key of c.test: %v %v", keys, err)
			}
			// Alice's history (backfilled from a.test) and a new message.
			msgs := must(bob.Messages(ctx, room, "", "", mautrix.DirectionBackward, nil, 100))
			var bodies []string
			for _, e := range msgs.Chunk {
				if body, ok := e.Content.Raw["body"].(string); ok {
					bodies = append(bodies, body)
				}
			}
			if len(bodies) != 2 || bodies[0] != "before bob" || bodies[1] != "before carol" {
				t.Fatalf("b.test's /messages bodies: %v", bodies)
			}
			since := must(bob.SyncRequest(ctx, 0, "", "", false, "")).NextBatch
			live := sendText(t, alice, room, "after bob")
			syncUntil(t, bob, since, "", func(r *mautrix.RespSync) bool {
				for _, e := range timelineOf(r, room) {
					if e.ID == live {
						return true
					}
				}
				return false
			})
		})
	}
}

// wrongSignature replaces server's signature of raw with a well-formed wrong one
// (same key ID).
func wrongSignature(t *testing.T, raw json.RawMessage, server string) json.RawMessage {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	sigs := m["signatures"].(map[string]any)[server].(map[string]any)
	for kid := range sigs {
		sigs[kid] = base64.RawStdEncoding.EncodeToString(make([]byte, 64))
	}
	if gjson.GetBytes(raw, "signatures").Raw == "" {
		t.Fatal("no signatures")
	}
	return json.RawMessage(mustMarshal(m))
}
