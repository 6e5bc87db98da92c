package tests

import (
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/homeserver/testserver"
	"github.com/myelin-chat/myelin/roomserver"
)

// TestFederationRemoteJoin: two Myelin servers over loopback. A user of
// a.test creates a public room; a user of b.test joins it by room ID with
// server_name=a.test (make_join, send_join, the answer verified and imported
// by b.test); b.test's /sync shows the room with its state and the join, and
// a.test's members list shows the user (a.test persisted the join). An
// invite-only room is refused with M_FORBIDDEN and leaves nothing on b.test;
// an unknown room with no reachable server is M_NOT_FOUND. Both servers sit
// behind strictJSON proxies, so a request body without its Content-Type (as
// mautrix sends it) fails the join as it did against Complement.
func TestFederationRemoteJoin(t *testing.T) {
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) {
			n := newFedNet(t, "a.test", "b.test", "gone.test") // gone.test: nobody listens
			a := n.start(t, backend, "a.test")
			b := n.start(t, backend, "b.test")
			// Each reached through a proxy as strict as Complement's servers.
			n.relays["a.test"].point(strictJSON(t, a.Config.Listen.HTTP))
			n.relays["b.test"].point(strictJSON(t, b.Config.Listen.HTTP))
			ctx := ctxT(t)
			alice := a.Register(t, "alice")
			bob := b.Register(t, "bob")
			room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Federated"})
			sendText(t, alice, room, "before bob")
			private := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat"})

			// Not public: a.test refuses, b.test keeps nothing.
			_, err := bob.JoinRoom(ctx, string(private), &mautrix.ReqJoinRoom{Via: []string{"a.test"}})
			wantErr(t, err, http.StatusForbidden, "M_FORBIDDEN")
			if _, err := b.DB.GetRoom(ctx, string(private)); err == nil {
				t.Fatal("a refused join left a room on b.test")
			}
			// No server to ask.
			_, err = bob.JoinRoom(ctx, "!unknown:gone.test", nil)
			wantErr(t, err, http.StatusNotFound, "M_NOT_FOUND")

			// The join, with server_name (the room ID's domain is a.test too;
			// the parameter is what a client sends).
			resp, err := bob.MakeRequest(ctx, http.MethodPost, bob.BuildURLWithQuery(mautrix.ClientURLPath{"v3", "join", room},
				map[string]string{"server_name": "a.test"}), struct{}{}, nil)
			if err != nil {
				t.Fatalf("remote join: %v (%s)", err, resp)
			}
			// b.test: the room in /sync, with its state and bob's join.
			sync := must(bob.SyncRequest(ctx, 0, "", "", false, ""))
			joined, ok := sync.Rooms.Join[room]
			if !ok {
				t.Fatalf("room not in b.test's sync: %+v", sync.Rooms)
			}
			var types []string
			bobJoined := false
			for _, list := range [][]*event.Event{joined.State.Events, joined.Timeline.Events} {
				for _, e := range list {
					types = append(types, e.Type.Type)
					if e.Type == event.StateMember && e.GetStateKey() == string(bob.UserID) && e.Content.Raw["membership"] == "join" {
						bobJoined = true
					}
				}
			}
			if !bobJoined || !slices.Contains(types, "m.room.create") || !slices.Contains(types, "m.room.name") {
				t.Fatalf("b.test's sync of the room: types %v, bob joined %v", types, bobJoined)
			}
			// The imported state and auth chain are outliers: in `state`, never
			// in the timeline or /messages; the join is the timeline.
			stateTypes := map[string]bool{}
			for _, e := range joined.State.Events {
				stateTypes[e.Type.Type] = true
			}
			if !stateTypes["m.room.create"] || !stateTypes["m.room.name"] || !stateTypes["m.room.power_levels"] {
				t.Fatalf("b.test's first /sync state lacks the imported state: %v", stateTypes)
			}
			isBobJoin := func(e *event.Event) bool {
				return e.Type == event.StateMember && e.GetStateKey() == string(bob.UserID) && e.Content.Raw["membership"] == "join"
			}
			if tl := joined.Timeline.Events; len(tl) != 1 || !isBobJoin(tl[0]) {
				t.Fatalf("b.test's first /sync timeline holds more than the join: types %v", types)
			}
			// /messages: the join, then the history before it, which b.test
			// backfills from a.test (the outliers become history, once each).
			msgs := must(bob.Messages(ctx, room, "", "", mautrix.DirectionBackward, nil, 100))
			var got []string
			for _, e := range msgs.Chunk {
				got = append(got, e.Type.Type+"/"+e.GetStateKey())
			}
			if len(msgs.Chunk) == 0 || !isBobJoin(msgs.Chunk[0]) || got[len(got)-1] != "m.room.create/" {
				t.Fatalf("b.test's /messages: %v", got)
			}
			seenIDs := map[id.EventID]bool{}
			for _, e := range msgs.Chunk {
				if seenIDs[e.ID] {
					t.Fatalf("b.test's /messages lists %s twice: %v", e.ID, got)
				}
				seenIDs[e.ID] = true
			}
			if se, err := b.DB.GetEvent(ctx, string(msgs.Chunk[len(msgs.Chunk)-1].ID)); err != nil || se.Outlier || se.StreamPos >= 0 {
				t.Fatalf("the create event on b.test after backfill: %+v, %v", se, err)
			}
			members := must(bob.JoinedMembers(ctx, room))
			if _, ok := members.Joined[alice.UserID]; !ok {
				t.Fatalf("b.test's members: %v", members.Joined)
			}
			// a.test persisted the join.
			members = must(alice.JoinedMembers(ctx, room))
			if _, ok := members.Joined[bob.UserID]; !ok {
				t.Fatalf("a.test's members: %v", members.Joined)
			}
			// Joining again is a local join on b.test now.
			if _, err := bob.JoinRoom(ctx, string(room), nil); err != nil {
				t.Fatalf("join again: %v", err)
			}

			// Messages both ways: each server's federation sender delivers its
			// user's message to the other's PUT /send, whose ingest persists it,
			// and the other user's /sync shows it.
			aliceSince := must(alice.SyncRequest(ctx, 0, "", "", false, "")).NextBatch
			bobSince := must(bob.SyncRequest(ctx, 0, "", "", false, "")).NextBatch
			fromA := must(alice.SendText(ctx, room, "hello from a.test")).EventID
			fromB := must(bob.SendText(ctx, room, "hello from b.test")).EventID
			receives := func(c *mautrix.Client, since string, want id.EventID, body string) {
				t.Helper()
				syncUntil(t, c, since, "", func(r *mautrix.RespSync) bool {
					jr, ok := r.Rooms.Join[room]
					if !ok {
						return false
					}
					for _, e := range jr.Timeline.Events {
						if e.ID == want && e.Content.Raw["body"] == body {
							return true
						}
					}
					return false
				})
			}
			receives(bob, bobSince, fromA, "hello from a.test")
			receives(alice, aliceSince, fromB, "hello from b.test")

			importBadInput(t, a, b, alice)
		})
	}
}

// importBadInput: b.test's ImportJoin of a send_join answer (built from
// a.test's store for a second public room) refuses tampered answers with the
// roomserver's kinds and stores nothing, then accepts the genuine one once.
func importBadInput(t *testing.T, a, b *testserver.Server, alice *mautrix.Client) {
	ctx := ctxT(t)
	room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	other := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	carol := id.UserID("@carol:b.test")
	b.Register(t, "carol")
	tmpl, err := a.Rooms.MakeJoin(ctx, room, carol)
	if err != nil {
		t.Fatal(err)
	}
	join, _, err := b.Rooms.SignJoin(room, tmpl.RoomVersion, tmpl.Event, carol)
	if err != nil {
		t.Fatal(err)
	}
	stateOf := func(r id.RoomID) (state, chain []json.RawMessage) {
		evs, err := a.DB.CurrentStateEvents(ctx, string(r))
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, e := range evs {
			state = append(state, e.JSON)
			ids = append(ids, e.EventID)
		}
		ac, err := a.Rooms.AuthChain(ctx, ids)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ac {
			chain = append(chain, e.JSON)
		}
		return state, chain
	}
	state, chain := stateOf(room)
	otherState, _ := stateOf(other)
	var createIdx, nameIdx int
	for i, raw := range state {
		switch gjson.GetBytes(raw, "type").Str {
		case "m.room.create":
			createIdx = i
		case "m.room.join_rules":
			nameIdx = i
		}
	}
	with := func(list []json.RawMessage, i int, raw json.RawMessage) []json.RawMessage {
		out := slices.Clone(list)
		out[i] = raw
		return out
	}
	badSig := json.RawMessage(strings.Replace(string(state[nameIdx]), `"signatures":{"a.test":{"ed25519:`, `"signatures":{"a.test":{"ed25519:x`, 1))
	remoteJoin := json.RawMessage(strings.ReplaceAll(string(join), "@carol:b.test", "@carol:a.test"))
	for _, c := range []struct {
		name         string
		version      id.RoomVersion
		state, chain []json.RawMessage
		join         json.RawMessage
		kind         error
	}{
		{"bad signature", tmpl.RoomVersion, with(state, nameIdx, badSig), chain, join, roomserver.ErrForbidden},
		{"no create event", tmpl.RoomVersion, slices.Delete(slices.Clone(state), createIdx, createIdx+1), chain, join, roomserver.ErrForbidden},
		{"other room's event", tmpl.RoomVersion, append(slices.Clone(state), otherState[0]), chain, join, roomserver.ErrBadJSON},
		{"wrong version", "9", state, chain, join, nil},
		{"unsupported version", "99", state, chain, join, roomserver.ErrUnsupportedRoomVersion},
		{"not our user", tmpl.RoomVersion, state, chain, remoteJoin, nil},
		{"not JSON", tmpl.RoomVersion, state, chain, json.RawMessage(`[1]`), roomserver.ErrBadJSON},
	} {
		err := b.Rooms.ImportJoin(ctx, room, c.version, c.state, c.chain, c.join)
		if err == nil || (c.kind != nil && !errors.Is(err, c.kind)) {
			t.Fatalf("%s: %v", c.name, err)
		}
		var rErr *roomserver.Error
		if !errors.As(err, &rErr) {
			t.Fatalf("%s: not a roomserver error: %v", c.name, err)
		}
		if _, err := b.DB.GetRoom(ctx, string(room)); err == nil {
			t.Fatalf("%s: the room was stored", c.name)
		}
	}
	if err := b.Rooms.ImportJoin(ctx, room, tmpl.RoomVersion, state, chain, join); err != nil {
		t.Fatalf("genuine import: %v", err)
	}
	if err := b.Rooms.ImportJoin(ctx, room, tmpl.RoomVersion, state, chain, join); !errors.Is(err, roomserver.ErrConflict) {
		t.Fatalf("second import: %v", err)
	}
}
