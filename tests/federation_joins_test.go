package tests

import (
	"encoding/json"
	jsonv2 "encoding/json/v2"
	"net/url"
	"slices"
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

// signTemplate completes a make_join template as the fake remote would: a
// timestamp, the content hash and its signature; it returns the PDU and its ID.
func (f *fakeRemote) signTemplate(t *testing.T, version id.RoomVersion, tmpl string, edit func(*pdu.PDU)) (json.RawMessage, id.EventID) {
	t.Helper()
	var p pdu.PDU
	if err := jsonv2.Unmarshal([]byte(tmpl), &p); err != nil {
		t.Fatalf("template: %v", err)
	}
	p.OriginServerTS = time.Now().UnixMilli()
	if edit != nil {
		edit(&p)
	}
	if err := p.Sign(version, f.name, f.key.ID, f.key.Priv); err != nil {
		t.Fatal(err)
	}
	evID, err := p.GetEventID(version)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := jsonv2.Marshal(&p)
	if err != nil {
		t.Fatal(err)
	}
	return raw, evID
}

// TestFederationMakeSendJoin: a remote server joins one of its users to a
// local public room through make_join and send_join; the join is persisted
// (the room's members list it) and the answer carries the state before the
// join with its auth chain. Wrong versions, unknown rooms, users of another
// server, invite-only rooms, forged and mismatched joins and banned users
// get the spec's errors, never a 500.
func TestFederationMakeSendJoin(t *testing.T) {
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) {
			n := newFedNet(t, "hs.test", "remote.test", "other.test")
			srv := n.start(t, backend, "hs.test")
			ctx := ctxT(t)
			remote := newFakeRemote(t, n, srv, "remote.test")
			alice := srv.Register(t, "alice")
			room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
			private := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat"})
			must(alice.BanUser(ctx, room, &mautrix.ReqBanUser{UserID: "@carol:remote.test", Reason: "no"}))
			row, err := srv.DB.GetRoom(ctx, string(room))
			if err != nil {
				t.Fatal(err)
			}
			version := id.RoomVersion(row.RoomVersion)
			path := func(parts ...any) mfed.URLPath { return mfed.URLPath(parts) }
			vers := url.Values{"ver": {"1", string(version)}}
			bob := id.UserID("@bob:remote.test")

			// make_join: a template of bob's join on top of the room.
			got, err := remote.get(ctx, "GET", path("v1", "make_join", room, bob), vers, nil)
			if err != nil {
				t.Fatalf("make_join: %v", err)
			}
			if got.Get("room_version").Str != string(version) {
				t.Fatalf("room_version = %s", got.Get("room_version").Raw)
			}
			tmpl := got.Get("event")
			if tmpl.Get("sender").Str != string(bob) || tmpl.Get("state_key").Str != string(bob) || tmpl.Get("type").Str != "m.room.member" ||
				tmpl.Get("content.membership").Str != "join" || tmpl.Get("room_id").Str != string(room) ||
				len(tmpl.Get("prev_events").Array()) == 0 || len(tmpl.Get("auth_events").Array()) == 0 ||
				tmpl.Get("signatures").Exists() || tmpl.Get("hashes").Exists() {
				t.Fatalf("template: %s", tmpl.Raw)
			}

			// Bad make_join input.
			_, err = remote.get(ctx, "GET", path("v1", "make_join", room, bob), url.Values{"ver": {"1"}}, nil)
			assertMatrixErr(t, err, 400, "M_INCOMPATIBLE_ROOM_VERSION")
			_, err = remote.get(ctx, "GET", path("v1", "make_join", room, bob), nil, nil)
			assertMatrixErr(t, err, 400, "M_INCOMPATIBLE_ROOM_VERSION")
			_, err = remote.get(ctx, "GET", path("v1", "make_join", "!nope:hs.test", bob), vers, nil)
			assertMatrixErr(t, err, 404, "M_NOT_FOUND")
			_, err = remote.get(ctx, "GET", path("v1", "make_join", room, "@bob:other.test"), vers, nil)
			assertMatrixErr(t, err, 403, "M_FORBIDDEN")
			_, err = remote.get(ctx, "GET", path("v1", "make_join", room, "not a user"), vers, nil)
			assertMatrixErr(t, err, 400, "M_INVALID_PARAM")
			_, err = remote.get(ctx, "GET", path("v1", "make_join", private, bob), vers, nil)
			assertMatrixErr(t, err, 403, "M_FORBIDDEN")
			_, err = remote.get(ctx, "GET", path("v1", "make_join", room, "@carol:remote.test"), vers, nil)
			assertMatrixErr(t, err, 403, "M_FORBIDDEN")

			// Bad send_join input; nothing is stored.
			carolTmpl := strings.ReplaceAll(tmpl.Raw, string(bob), "@carol:remote.test")
			carolJoin, carolID := remote.signTemplate(t, version, carolTmpl, nil)
			_, err = remote.get(ctx, "PUT", path("v2", "send_join", room, carolID), nil, json.RawMessage(carolJoin))
			assertMatrixErr(t, err, 403, "M_FORBIDDEN")
			// A join whose signature is not remote.test's, and one whose content
			// was changed after signing.
			forged, forgedID := remote.signTemplate(t, version, tmpl.Raw, func(p *pdu.PDU) {
				p.Signatures = map[string]map[id.KeyID]string{"remote.test": {remote.key.ID: "AAAA"}}
			})
			var fp pdu.PDU
			if err := jsonv2.Unmarshal(forged, &fp); err != nil {
				t.Fatal(err)
			}
			fp.Signatures["remote.test"][remote.key.ID] = strings.Repeat("A", 86)
			forged = must(jsonv2.Marshal(&fp))
			_, err = remote.get(ctx, "PUT", path("v2", "send_join", room, forgedID), nil, json.RawMessage(forged))
			assertMatrixErr(t, err, 403, "M_FORBIDDEN")
			tampered, tamperedID := remote.signTemplate(t, version, tmpl.Raw, nil)
			tampered = []byte(strings.Replace(string(tampered), `"membership":"join"`, `"membership":"join","displayname":"Mallory"`, 1))
			_, err = remote.get(ctx, "PUT", path("v2", "send_join", room, tamperedID), nil, json.RawMessage(tampered))
			assertMatrixErr(t, err, 403, "M_FORBIDDEN")
			join, joinID := remote.signTemplate(t, version, tmpl.Raw, nil)
			_, err = remote.get(ctx, "PUT", path("v2", "send_join", room, carolID), nil, json.RawMessage(join))
			assertMatrixErr(t, err, 400, "M_BAD_JSON")
			_, err = remote.get(ctx, "PUT", path("v2", "send_join", "!nope:hs.test", joinID), nil, json.RawMessage(join))
			assertMatrixErr(t, err, 404, "M_NOT_FOUND")
			_, err = remote.get(ctx, "PUT", path("v2", "send_join", private, joinID), nil, json.RawMessage(join))
			assertMatrixErr(t, err, 400, "M_BAD_JSON")
			leave, leaveID := remote.signTemplate(t, version, tmpl.Raw, func(p *pdu.PDU) { p.Content = []byte(`{"membership":"leave"}`) })
			_, err = remote.get(ctx, "PUT", path("v2", "send_join", room, leaveID), nil, json.RawMessage(leave))
			assertMatrixErr(t, err, 400, "M_BAD_JSON")
			for _, x := range []id.EventID{carolID, forgedID, tamperedID, leaveID} {
				if _, err := srv.DB.GetEvent(ctx, string(x)); err == nil {
					t.Fatalf("refused join %s was stored", x)
				}
			}
			// Another server cannot send bob's join.
			otherKeyed := newFakeRemote(t, n, srv, "other.test")
			_, err = otherKeyed.get(ctx, "PUT", path("v2", "send_join", room, joinID), nil, json.RawMessage(join))
			assertMatrixErr(t, err, 403, "M_FORBIDDEN")

			// The join: accepted, persisted, answered with the state before it.
			got, err = remote.get(ctx, "PUT", path("v2", "send_join", room, joinID), url.Values{"omit_members": {"false"}}, json.RawMessage(join))
			if err != nil {
				t.Fatalf("send_join: %v", err)
			}
			if got.Get("origin").Str != "hs.test" || got.Get("members_omitted").Bool() {
				t.Fatalf("send_join answer: %s", got.Raw)
			}
			if !slices.Contains(stringsOf(got.Get("servers_in_room")), "hs.test") {
				t.Fatalf("servers_in_room: %s", got.Get("servers_in_room").Raw)
			}
			stateIDs := eventsIDs(t, srv, got.Get("state"))
			if slices.Contains(stateIDs, string(joinID)) {
				t.Fatal("the state before the join holds the join")
			}
			wantState, err := srv.Rooms.StateIDsAt(ctx, room, string(joinID))
			if err != nil {
				t.Fatal(err)
			}
			if !sameSet(stateIDs, wantState) {
				t.Fatalf("state %v, want %v", stateIDs, wantState)
			}
			var types []string
			for _, e := range got.Get("state").Array() {
				types = append(types, e.Get("type").Str)
			}
			if !slices.Contains(types, "m.room.create") || !slices.Contains(types, "m.room.join_rules") {
				t.Fatalf("state types %v", types)
			}
			checkAuthChain(t, srv, append(stateIDs, string(joinID)), eventsIDs(t, srv, got.Get("auth_chain")))
			members := must(alice.JoinedMembers(ctx, room))
			if _, ok := members.Joined[bob]; !ok {
				t.Fatalf("bob is not joined: %v", members.Joined)
			}
			servers, err := srv.DB.JoinedServers(ctx, string(room))
			if err != nil || !slices.Contains(servers, "remote.test") {
				t.Fatalf("joined servers %v, %v", servers, err)
			}
			// Sending the same join again answers the same (retries are safe).
			if _, err := remote.get(ctx, "PUT", path("v2", "send_join", room, joinID), nil, json.RawMessage(join)); err != nil {
				t.Fatalf("send_join again: %v", err)
			}
			// A joined user gets a template too (a profile change).
			if _, err := remote.get(ctx, "GET", path("v1", "make_join", room, bob), vers, nil); err != nil {
				t.Fatalf("make_join of a joined user: %v", err)
			}
		})
	}
}

func stringsOf(r gjson.Result) []string {
	var out []string
	for _, x := range r.Array() {
		out = append(out, x.Str)
	}
	return out
}
