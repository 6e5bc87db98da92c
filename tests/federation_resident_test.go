package tests

import (
	"encoding/json"
	jsonv2 "encoding/json/v2"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/homeserver/testserver"
	"github.com/myelin-chat/myelin/internal/config"
)

// residentCase is one refused send_leave/send_knock: who sends what where,
// and the spec's answer.
type residentCase struct {
	name   string
	from   *fakeRemote
	room   id.RoomID
	event  id.EventID
	body   any
	status int
	code   string
}

// runResidentCases sends every case to endpoint and checks its error and
// that the event was not stored.
func runResidentCases(t *testing.T, srv *testserver.Server, endpoint []string, cases []residentCase) {
	t.Helper()
	ctx := ctxT(t)
	for _, c := range cases {
		p := mfed.URLPath{}
		for _, s := range endpoint {
			p = append(p, s)
		}
		p = append(p, c.room, c.event)
		_, err := c.from.get(ctx, "PUT", p, nil, c.body)
		if err == nil {
			t.Fatalf("%s: accepted", c.name)
		}
		var he mautrix.HTTPError
		if errStatus(err) != c.status || !errors.As(err, &he) || he.RespError == nil || he.RespError.ErrCode != c.code {
			t.Fatalf("%s: want %d %s, got %v", c.name, c.status, c.code, err)
		}
		if _, err := srv.DB.GetEvent(ctx, string(c.event)); err == nil {
			t.Fatalf("%s: refused event %s was stored", c.name, c.event)
		}
	}
}

// unsignedPDU is raw with its signatures removed.
func unsignedPDU(t *testing.T, raw json.RawMessage) json.RawMessage {
	t.Helper()
	var p pdu.PDU
	if err := jsonv2.Unmarshal(raw, &p); err != nil {
		t.Fatal(err)
	}
	p.Signatures = nil
	return must(jsonv2.Marshal(&p))
}

// TestFederationMakeSendLeave: a user of a remote server joined to a local
// room leaves through make_leave and send_leave (v2 answers {}, v1 [200, {}]);
// the leave is persisted and the local members' /sync shows it. Users not in
// the room, of another server, ACL-denied servers, unknown rooms, unsigned,
// forged, tampered and mismatched leaves and malformed bodies get the spec's
// errors, nothing stored, never a 500.
func TestFederationMakeSendLeave(t *testing.T) {
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) {
			n := newFedNet(t, "hs.test", "remote.test", "other.test", "evil.test")
			srv := n.start(t, backend, "hs.test")
			ctx := ctxT(t)
			remote := newFakeRemote(t, n, srv, "remote.test")
			other := newFakeRemote(t, n, srv, "other.test")
			evil := newFakeRemote(t, n, srv, "evil.test")
			alice := srv.Register(t, "alice")
			room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
			otherRoom := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
			remote.join(t, srv, room, "bob")
			remote.join(t, srv, room, "dave")
			remote.join(t, srv, otherRoom, "bob")
			evil.join(t, srv, room, "eve")
			must(alice.SendStateEvent(ctx, room, event.StateServerACL, "", map[string]any{"allow": []string{"*"}, "deny": []string{"evil.test"}}))
			version := id.RoomVersion(must(srv.DB.GetRoom(ctx, string(room))).RoomVersion)
			path := func(parts ...any) mfed.URLPath { return mfed.URLPath(parts) }
			bob, dave := id.UserID("@bob:remote.test"), id.UserID("@dave:remote.test")
			since := must(alice.SyncRequest(ctx, 0, "", "", false, "")).NextBatch

			got, err := remote.get(ctx, "GET", path("v1", "make_leave", room, bob), nil, nil)
			if err != nil {
				t.Fatalf("make_leave: %v", err)
			}
			tmpl := got.Get("event")
			if got.Get("room_version").Str != string(version) || tmpl.Get("content.membership").Str != "leave" ||
				tmpl.Get("sender").Str != string(bob) || tmpl.Get("state_key").Str != string(bob) || tmpl.Get("room_id").Str != string(room) ||
				len(tmpl.Get("prev_events").Array()) == 0 || len(tmpl.Get("auth_events").Array()) == 0 || tmpl.Get("signatures").Exists() {
				t.Fatalf("make_leave answer: %s", got.Raw)
			}

			// Bad make_leave input.
			_, err = remote.get(ctx, "GET", path("v1", "make_leave", room, "@carol:remote.test"), nil, nil)
			assertMatrixErr(t, err, 403, "M_FORBIDDEN") // never in the room
			_, err = remote.get(ctx, "GET", path("v1", "make_leave", room, "@bob:other.test"), nil, nil)
			assertMatrixErr(t, err, 403, "M_FORBIDDEN")
			_, err = remote.get(ctx, "GET", path("v1", "make_leave", "!nope:hs.test", bob), nil, nil)
			assertMatrixErr(t, err, 404, "M_NOT_FOUND")
			_, err = remote.get(ctx, "GET", path("v1", "make_leave", room, "not a user"), nil, nil)
			assertMatrixErr(t, err, 400, "M_INVALID_PARAM")
			_, err = evil.get(ctx, "GET", path("v1", "make_leave", room, "@eve:evil.test"), nil, nil)
			assertMatrixErr(t, err, 403, "M_FORBIDDEN")
			_, _, err = remote.client.MakeFullRequest(ctx, mfed.RequestParams{ServerName: "hs.test", Method: "GET",
				Path: path("v1", "make_leave", room, bob)})
			assertMatrixErr(t, err, 401, "M_UNAUTHORIZED")

			// Bad send_leave input: nothing stored.
			leave, leaveID := remote.signTemplate(t, version, tmpl.Raw, nil)
			carolLeave, carolID := remote.signTemplate(t, version, strings.ReplaceAll(tmpl.Raw, string(bob), "@carol:remote.test"), nil)
			forged, forgedID := remote.signTemplate(t, version, tmpl.Raw, func(p *pdu.PDU) { p.Content = []byte(`{"membership":"leave","reason":"forged"}`) })
			var fp pdu.PDU
			if err := jsonv2.Unmarshal(forged, &fp); err != nil {
				t.Fatal(err)
			}
			fp.Signatures["remote.test"][remote.key.ID] = strings.Repeat("A", 86)
			forged = must(jsonv2.Marshal(&fp))
			tampered, tamperedID := remote.signTemplate(t, version, tmpl.Raw, func(p *pdu.PDU) { p.Content = []byte(`{"membership":"leave","reason":"x"}`) })
			tampered = []byte(strings.Replace(string(tampered), `"reason":"x"`, `"reason":"y"`, 1))
			unsigned, unsignedID := remote.signTemplate(t, version, tmpl.Raw, func(p *pdu.PDU) { p.Content = []byte(`{"membership":"leave","reason":"u"}`) })
			unsigned = unsignedPDU(t, unsigned)
			join, joinID := remote.signTemplate(t, version, tmpl.Raw, func(p *pdu.PDU) { p.Content = []byte(`{"membership":"join"}`) })
			kick, kickID := remote.signTemplate(t, version, tmpl.Raw, func(p *pdu.PDU) {
				sk := string(dave)
				p.StateKey = &sk // bob "kicking" dave: not a leave of its sender
			})
			wrongRoom, wrongRoomID := remote.signTemplate(t, version, tmpl.Raw, func(p *pdu.PDU) { p.RoomID = otherRoom })
			eveLeave, eveID := evil.signTemplate(t, version, strings.ReplaceAll(tmpl.Raw, string(bob), "@eve:evil.test"), nil)
			runResidentCases(t, srv, []string{"v2", "send_leave"}, []residentCase{
				{"never in the room", remote, room, carolID, json.RawMessage(carolLeave), 403, "M_FORBIDDEN"},
				{"bad signature", remote, room, forgedID, json.RawMessage(forged), 403, "M_FORBIDDEN"},
				{"unsigned", remote, room, unsignedID, json.RawMessage(unsigned), 403, "M_FORBIDDEN"},
				{"bad hash", remote, room, tamperedID, json.RawMessage(tampered), 403, "M_FORBIDDEN"},
				{"user of another server", other, room, leaveID, json.RawMessage(leave), 403, "M_FORBIDDEN"},
				{"wrong membership", remote, room, joinID, json.RawMessage(join), 400, "M_BAD_JSON"},
				{"not its sender's", remote, room, kickID, json.RawMessage(kick), 400, "M_BAD_JSON"},
				{"wrong room", remote, room, wrongRoomID, json.RawMessage(wrongRoom), 400, "M_BAD_JSON"},
				{"event ID mismatch", remote, room, carolID, json.RawMessage(leave), 400, "M_BAD_JSON"},
				{"unknown room", remote, "!nope:hs.test", leaveID, json.RawMessage(leave), 404, "M_NOT_FOUND"},
				{"ACL-denied origin", evil, room, eveID, json.RawMessage(eveLeave), 403, "M_FORBIDDEN"},
				{"not an object", remote, room, leaveID, json.RawMessage(`[1]`), 400, "M_BAD_JSON"},
				{"not a PDU", remote, room, leaveID, map[string]any{"type": 5}, 400, "M_BAD_JSON"},
			})
			notJSON(t, srv, "/_matrix/federation/v2/send_leave/"+url.PathEscape(string(room))+"/"+url.PathEscape(string(leaveID)))

			// The leave: accepted, answered {}, persisted; retrying answers the same.
			got, err = remote.get(ctx, "PUT", path("v2", "send_leave", room, leaveID), nil, json.RawMessage(leave))
			if err != nil || got.Raw != "{}" {
				t.Fatalf("send_leave: %s %v", got.Raw, err)
			}
			if _, err := remote.get(ctx, "PUT", path("v2", "send_leave", room, leaveID), nil, json.RawMessage(leave)); err != nil {
				t.Fatalf("send_leave again: %v", err)
			}
			members := must(alice.JoinedMembers(ctx, room))
			if _, ok := members.Joined[bob]; ok {
				t.Fatal("bob is still joined")
			}
			// A user who left cannot leave again.
			_, err = remote.get(ctx, "GET", path("v1", "make_leave", room, bob), nil, nil)
			assertMatrixErr(t, err, 403, "M_FORBIDDEN")

			// v1: the same handshake, answered [200, {}].
			got = must(remote.get(ctx, "GET", path("v1", "make_leave", room, dave), nil, nil))
			daveLeave, daveID := remote.signTemplate(t, version, got.Get("event").Raw, nil)
			got, err = remote.get(ctx, "PUT", path("v1", "send_leave", room, daveID), nil, json.RawMessage(daveLeave))
			if err != nil || gjson.Get(got.Raw, "0").Int() != 200 || gjson.Get(got.Raw, "1").Raw != "{}" {
				t.Fatalf("send_leave v1: %s %v", got.Raw, err)
			}
			// alice's /sync shows both leaves.
			syncUntil(t, alice, since, "", func(r *mautrix.RespSync) bool {
				left := map[string]bool{}
				for _, e := range timelineOf(r, room) {
					if e.Type == event.StateMember && e.Content.Raw["membership"] == "leave" {
						left[e.GetStateKey()] = true
					}
				}
				return left[string(bob)] && left[string(dave)]
			})
			// bob is still in the other room.
			if _, ok := must(alice.JoinedMembers(ctx, otherRoom)).Joined[bob]; !ok {
				t.Fatal("bob left the other room too")
			}
		})
	}
}

// TestFederationMakeSendKnock: a user of a remote server knocks on a local
// room whose join rule is knock (make_knock, send_knock); the answer is the
// stripped state with the create event whole, the knock is persisted and a
// local member's /sync shows it. Versions without knocking (6),
// versions the remote does not support, rooms not open to knocks, banned and
// joined users, and bad send_knock bodies get the spec's errors, nothing
// stored, never a 500.
func TestFederationMakeSendKnock(t *testing.T) {
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) {
			n := newFedNet(t, "hs.test", "remote.test", "other.test", "evil.test")
			srv := n.start(t, backend, "hs.test")
			ctx := ctxT(t)
			remote := newFakeRemote(t, n, srv, "remote.test")
			other := newFakeRemote(t, n, srv, "other.test")
			evil := newFakeRemote(t, n, srv, "evil.test")
			alice := srv.Register(t, "alice")
			knockRules := []*event.Event{{Type: event.StateJoinRules, Content: event.Content{Raw: map[string]any{"join_rule": "knock"}}}}
			room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Knockable", InitialState: knockRules})
			public := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
			v6 := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat", RoomVersion: "6", InitialState: knockRules})
			must(alice.BanUser(ctx, room, &mautrix.ReqBanUser{UserID: "@carol:remote.test"}))
			remote.join(t, srv, public, "bob")
			must(alice.SendStateEvent(ctx, room, event.StateServerACL, "", map[string]any{"allow": []string{"*"}, "deny": []string{"evil.test"}}))
			version := id.RoomVersion(must(srv.DB.GetRoom(ctx, string(room))).RoomVersion)
			path := func(parts ...any) mfed.URLPath { return mfed.URLPath(parts) }
			bob := id.UserID("@bob:remote.test")
			vers := url.Values{"ver": {"6", string(version)}}
			since := must(alice.SyncRequest(ctx, 0, "", "", false, "")).NextBatch

			got, err := remote.get(ctx, "GET", path("v1", "make_knock", room, bob), vers, nil)
			if err != nil {
				t.Fatalf("make_knock: %v", err)
			}
			tmpl := got.Get("event")
			if got.Get("room_version").Str != string(version) || tmpl.Get("content.membership").Str != "knock" ||
				tmpl.Get("sender").Str != string(bob) || tmpl.Get("state_key").Str != string(bob) {
				t.Fatalf("make_knock answer: %s", got.Raw)
			}

			// Bad make_knock input.
			_, err = remote.get(ctx, "GET", path("v1", "make_knock", v6, bob), vers, nil)
			assertMatrixErr(t, err, 400, "M_INCOMPATIBLE_ROOM_VERSION")
			_, err = remote.get(ctx, "GET", path("v1", "make_knock", room, bob), url.Values{"ver": {"6"}}, nil)
			assertMatrixErr(t, err, 400, "M_INCOMPATIBLE_ROOM_VERSION")
			_, err = remote.get(ctx, "GET", path("v1", "make_knock", room, bob), nil, nil)
			assertMatrixErr(t, err, 400, "M_MISSING_PARAM")
			_, err = remote.get(ctx, "GET", path("v1", "make_knock", public, "@dave:remote.test"), vers, nil)
			assertMatrixErr(t, err, 403, "M_FORBIDDEN") // public: join, don't knock
			_, err = remote.get(ctx, "GET", path("v1", "make_knock", room, "@carol:remote.test"), vers, nil)
			assertMatrixErr(t, err, 403, "M_FORBIDDEN") // banned
			_, err = remote.get(ctx, "GET", path("v1", "make_knock", room, "@bob:other.test"), vers, nil)
			assertMatrixErr(t, err, 403, "M_FORBIDDEN")
			_, err = remote.get(ctx, "GET", path("v1", "make_knock", "!nope:hs.test", bob), vers, nil)
			assertMatrixErr(t, err, 404, "M_NOT_FOUND")
			_, err = evil.get(ctx, "GET", path("v1", "make_knock", room, "@eve:evil.test"), vers, nil)
			assertMatrixErr(t, err, 403, "M_FORBIDDEN")

			// Bad send_knock input: nothing stored.
			knock, knockID := remote.signTemplate(t, version, tmpl.Raw, nil)
			carolKnock, carolID := remote.signTemplate(t, version, strings.ReplaceAll(tmpl.Raw, string(bob), "@carol:remote.test"), nil)
			tampered, tamperedID := remote.signTemplate(t, version, tmpl.Raw, func(p *pdu.PDU) { p.Content = []byte(`{"membership":"knock","reason":"x"}`) })
			tampered = []byte(strings.Replace(string(tampered), `"reason":"x"`, `"reason":"y"`, 1))
			unsigned, unsignedID := remote.signTemplate(t, version, tmpl.Raw, func(p *pdu.PDU) { p.Content = []byte(`{"membership":"knock","reason":"u"}`) })
			unsigned = unsignedPDU(t, unsigned)
			leave, leaveID := remote.signTemplate(t, version, tmpl.Raw, func(p *pdu.PDU) { p.Content = []byte(`{"membership":"leave"}`) })
			publicTmpl := strings.ReplaceAll(tmpl.Raw, string(room), string(public))
			publicKnock, publicID := remote.signTemplate(t, version, publicTmpl, func(p *pdu.PDU) {
				p.Content = []byte(`{"membership":"knock","reason":"p"}`)
			})
			runResidentCases(t, srv, []string{"v1", "send_knock"}, []residentCase{
				{"banned", remote, room, carolID, json.RawMessage(carolKnock), 403, "M_FORBIDDEN"},
				{"unsigned", remote, room, unsignedID, json.RawMessage(unsigned), 403, "M_FORBIDDEN"},
				{"bad hash", remote, room, tamperedID, json.RawMessage(tampered), 403, "M_FORBIDDEN"},
				{"user of another server", other, room, knockID, json.RawMessage(knock), 403, "M_FORBIDDEN"},
				{"wrong membership", remote, room, leaveID, json.RawMessage(leave), 400, "M_BAD_JSON"},
				{"wrong room", remote, public, knockID, json.RawMessage(knock), 400, "M_BAD_JSON"},
				{"knock on a public room", remote, public, publicID, json.RawMessage(publicKnock), 403, "M_FORBIDDEN"},
				{"unknown room", remote, "!nope:hs.test", knockID, json.RawMessage(knock), 404, "M_NOT_FOUND"},
				{"ACL-denied origin", evil, room, knockID, json.RawMessage(knock), 403, "M_FORBIDDEN"},
				{"not an object", remote, room, knockID, json.RawMessage(`"knock"`), 400, "M_BAD_JSON"},
			})

			notJSON(t, srv, "/_matrix/federation/v1/send_knock/"+url.PathEscape(string(room))+"/"+url.PathEscape(string(knockID)))

			// The knock: knock_room_state with the create event whole.
			got, err = remote.get(ctx, "PUT", path("v1", "send_knock", room, knockID), nil, json.RawMessage(knock))
			if err != nil {
				t.Fatalf("send_knock: %v", err)
			}
			types := map[string]gjson.Result{}
			for _, e := range got.Get("knock_room_state").Array() {
				types[e.Get("type").Str] = e
			}
			if c := types["m.room.create"]; !c.Get("signatures").Exists() || types["m.room.join_rules"].Get("content.join_rule").Str != "knock" ||
				types["m.room.name"].Get("content.name").Str != "Knockable" {
				t.Fatalf("knock_room_state: %s", got.Raw)
			}
			// Retried: the same answer. Knocking again while knocking is allowed by the auth rules.
			if _, err := remote.get(ctx, "PUT", path("v1", "send_knock", room, knockID), nil, json.RawMessage(knock)); err != nil {
				t.Fatalf("send_knock again: %v", err)
			}
			// alice sees the knock.
			syncUntil(t, alice, since, "", func(r *mautrix.RespSync) bool {
				for _, e := range timelineOf(r, room) {
					if e.ID == knockID && e.Content.Raw["membership"] == "knock" {
						return true
					}
				}
				return false
			})
			if m, err := srv.DB.GetMembership(ctx, string(room), string(bob)); err != nil || m.Membership != "knock" {
				t.Fatalf("bob's membership: %+v %v", m, err)
			}
			// A knocking user may leave (withdraw the knock) over make_leave.
			if _, err := remote.get(ctx, "GET", path("v1", "make_leave", room, bob), nil, nil); err != nil {
				t.Fatalf("make_leave of a knock: %v", err)
			}
		})
	}
}

// notJSON PUTs a body that is not JSON to path (a signature cannot cover it):
// 400 M_NOT_JSON, before any handler.
func notJSON(t *testing.T, srv *testserver.Server, path string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPut, "http://"+srv.Config.Listen.HTTP+path, strings.NewReader(`{"type":`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", `X-Matrix origin="remote.test",destination="hs.test",key="ed25519:a",sig="AAAA"`)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 400 || gjson.GetBytes(body, "errcode").Str != "M_NOT_JSON" {
		t.Fatalf("%s with a body that is not JSON: %d %s", path, resp.StatusCode, body)
	}
}

// inviteServer is a fake invitee server: it answers PUT /v2/invite (and
// /v1/invite) as mode says, signing with the fake remote's key, and keeps
// the last request body.
type inviteServer struct {
	remote *fakeRemote
	mode   atomic.Value // string: sign, refuse, tamper, badsig, v1, fail
	last   atomic.Value // []byte
	hits   atomic.Int32
}

func newInviteServer(t *testing.T, n *fedNet, remote *fakeRemote) *inviteServer {
	s := &inviteServer{remote: remote}
	s.mode.Store("sign")
	ts := httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(ts.Close)
	n.relays[remote.name].point(ts.Listener.Addr().String())
	return s
}

func (s *inviteServer) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	mode := s.mode.Load().(string)
	reply := func(status int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(v)
	}
	v2 := strings.HasPrefix(r.URL.Path, "/_matrix/federation/v2/invite/")
	v1 := strings.HasPrefix(r.URL.Path, "/_matrix/federation/v1/invite/")
	if !v1 && !v2 || (v2 && mode == "v1") {
		reply(404, map[string]string{"errcode": "M_UNRECOGNIZED", "error": "Unrecognized request"})
		return
	}
	s.hits.Add(1)
	s.last.Store(body)
	raw := []byte(gjson.GetBytes(body, "event").Raw)
	version := id.RoomVersion(gjson.GetBytes(body, "room_version").Str)
	if v1 {
		raw = body
		version = "10"
	}
	switch mode {
	case "refuse":
		reply(403, map[string]string{"errcode": "M_FORBIDDEN", "error": "no thanks"})
		return
	case "fail":
		reply(500, map[string]string{"errcode": "M_UNKNOWN", "error": "oops"})
		return
	}
	var p pdu.PDU
	if err := jsonv2.Unmarshal(raw, &p); err != nil {
		reply(400, map[string]string{"errcode": "M_BAD_JSON", "error": err.Error()})
		return
	}
	if mode == "tamper" {
		p.Content = []byte(`{"membership":"join"}`)
	}
	p.Unsigned = nil
	if err := p.Sign(version, s.remote.name, s.remote.key.ID, s.remote.key.Priv); err != nil {
		reply(500, map[string]string{"errcode": "M_UNKNOWN", "error": err.Error()})
		return
	}
	if mode == "badsig" {
		p.Signatures[s.remote.name][s.remote.key.ID] = strings.Repeat("A", 86)
	}
	if v1 {
		reply(200, []any{200, map[string]any{"event": &p}})
		return
	}
	reply(200, map[string]any{"event": &p})
}

// TestFederationRemoteInvite: a local user invites users of another server.
// The invitee's server gets the invite signed by us with invite_room_state
// (the create event whole), signs it, and the invite is stored with both
// signatures and shown in the inviter's /sync; a server that only knows v1
// is asked over v1. A refusal is 403 M_FORBIDDEN with the remote's reason, a
// tampered or badly signed answer 403, a failing or unreachable server 502
// M_UNKNOWN, a server the policy denies 403 without being asked: nothing is
// stored in any of them. createRoom's invite list reaches remote users too,
// and a moderator lets in a remote knocker by inviting them. With federation
// off, inviting a remote user is 403 as before.
func TestFederationRemoteInvite(t *testing.T) {
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) {
			n := newFedNet(t, "hs.test", "remote.test", "gone.test", "denied.test")
			srv := n.start(t, backend, "hs.test", func(cfg *config.Config) { cfg.Federation.DeniedServers = []string{"denied.test"} })
			ctx := ctxT(t)
			remote := newFakeRemote(t, n, srv, "remote.test")
			denied := newFakeRemote(t, n, srv, "denied.test")
			fake := newInviteServer(t, n, remote)
			deniedFake := newInviteServer(t, n, denied)
			alice := srv.Register(t, "alice")
			room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Invites"})
			since := must(alice.SyncRequest(ctx, 0, "", "", false, "")).NextBatch
			membership := func(room id.RoomID, u id.UserID) string {
				m, err := srv.DB.GetMembership(ctx, string(room), string(u))
				if err != nil {
					return ""
				}
				return m.Membership
			}

			// Signed and returned: stored with both signatures.
			bob := id.UserID("@bob:remote.test")
			if _, err := alice.InviteUser(ctx, room, &mautrix.ReqInviteUser{UserID: bob, Reason: "come"}); err != nil {
				t.Fatalf("invite: %v", err)
			}
			last := gjson.ParseBytes(fake.last.Load().([]byte))
			inv := last.Get("event")
			if inv.Get("content.membership").Str != "invite" || inv.Get("content.reason").Str != "come" || inv.Get("state_key").Str != string(bob) ||
				!inv.Get("signatures.hs\\.test").Exists() || last.Get("room_version").Str == "" {
				t.Fatalf("invite request: %s", last.Raw)
			}
			var types []string
			for _, e := range last.Get("invite_room_state").Array() {
				types = append(types, e.Get("type").Str)
				if e.Get("type").Str == "m.room.create" && !e.Get("signatures").Exists() {
					t.Fatalf("create event not whole: %s", e.Raw)
				}
			}
			if !slices.Contains(types, "m.room.create") || !slices.Contains(types, "m.room.name") || !slices.Contains(types, "m.room.join_rules") {
				t.Fatalf("invite_room_state types %v", types)
			}
			if membership(room, bob) != "invite" {
				t.Fatalf("bob's membership %q", membership(room, bob))
			}
			stateEv := must(srv.DB.CurrentStateEvent(ctx, string(room), "m.room.member", string(bob)))
			if !gjson.GetBytes(stateEv.JSON, "signatures.remote\\.test").Exists() || !gjson.GetBytes(stateEv.JSON, "signatures.hs\\.test").Exists() ||
				gjson.GetBytes(stateEv.JSON, "content.reason").Str != "come" {
				t.Fatalf("stored invite: %s", stateEv.JSON)
			}
			syncUntil(t, alice, since, "", func(r *mautrix.RespSync) bool {
				for _, e := range timelineOf(r, room) {
					if e.GetStateKey() == string(bob) && e.Content.Raw["membership"] == "invite" {
						return true
					}
				}
				return false
			})

			// Refusals: nothing stored.
			refused := func(mode string, u id.UserID, status int, code string, msg ...string) {
				t.Helper()
				fake.mode.Store(mode)
				_, err := alice.InviteUser(ctx, room, &mautrix.ReqInviteUser{UserID: u})
				if errStatus(err) != status {
					t.Fatalf("%s: want %d, got %v", mode, status, err)
				}
				assertMatrixErr(t, err, status, code, msg...)
				if m := membership(room, u); m != "" {
					t.Fatalf("%s: %s's membership is %q", mode, u, m)
				}
			}
			refused("refuse", "@carol:remote.test", 403, "M_FORBIDDEN", "no thanks")
			refused("tamper", "@carol:remote.test", 403, "M_FORBIDDEN")
			refused("badsig", "@carol:remote.test", 403, "M_FORBIDDEN")
			refused("fail", "@carol:remote.test", 502, "M_UNKNOWN")
			refused("sign", "@carol:gone.test", 502, "M_UNKNOWN") // nobody listens
			hits := deniedFake.hits.Load()
			refused("sign", "@dan:denied.test", 403, "M_FORBIDDEN", "policy")
			if deniedFake.hits.Load() != hits {
				t.Fatal("the policy's denied server was asked")
			}

			// v1 only: asked over v1 after v2's 404.
			fake.mode.Store("v1")
			if _, err := alice.InviteUser(ctx, room, &mautrix.ReqInviteUser{UserID: "@erin:remote.test"}); err != nil {
				t.Fatalf("v1 invite: %v", err)
			}
			if membership(room, "@erin:remote.test") != "invite" {
				t.Fatal("erin is not invited")
			}
			if !gjson.GetBytes(fake.last.Load().([]byte), "unsigned.invite_room_state").IsArray() {
				t.Fatalf("v1 request: %s", fake.last.Load())
			}
			fake.mode.Store("sign")

			// createRoom's invite list.
			dm := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "trusted_private_chat", IsDirect: true, Invite: []id.UserID{"@frank:remote.test"}})
			if membership(dm, "@frank:remote.test") != "invite" || !gjson.GetBytes(fake.last.Load().([]byte), "event.content.is_direct").Bool() {
				t.Fatalf("createRoom invite: %q %s", membership(dm, "@frank:remote.test"), fake.last.Load())
			}

			// A remote knocker, let in by an invite.
			knockRules := []*event.Event{{Type: event.StateJoinRules, Content: event.Content{Raw: map[string]any{"join_rule": "knock"}}}}
			knockRoom := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat", InitialState: knockRules})
			version := must(srv.DB.GetRoom(ctx, string(knockRoom))).RoomVersion
			grace := id.UserID("@grace:remote.test")
			tmpl := must(remote.get(ctx, "GET", mfed.URLPath{"v1", "make_knock", knockRoom, grace}, url.Values{"ver": {version}}, nil))
			knock, knockID := remote.signTemplate(t, id.RoomVersion(version), tmpl.Get("event").Raw, nil)
			must(remote.get(ctx, "PUT", mfed.URLPath{"v1", "send_knock", knockRoom, knockID}, nil, json.RawMessage(knock)))
			if membership(knockRoom, grace) != "knock" {
				t.Fatal("grace is not knocking")
			}
			if _, err := alice.InviteUser(ctx, knockRoom, &mautrix.ReqInviteUser{UserID: grace}); err != nil {
				t.Fatalf("inviting the knocker: %v", err)
			}
			if membership(knockRoom, grace) != "invite" {
				t.Fatal("grace is not invited")
			}

			// Federation off: 403 as before.
			off := testserver.Start(t, backend, testserver.Options{ServerName: "off.test", Configure: func(cfg *config.Config) { cfg.Federation.Enabled = false }})
			olive := off.Register(t, "olive")
			offRoom := createRoom(t, olive, nil)
			_, err := olive.InviteUser(ctx, offRoom, &mautrix.ReqInviteUser{UserID: bob})
			assertMatrixErr(t, err, 403, "M_FORBIDDEN")
		})
	}
}

// TestFederationRemoteMemberships: two Myelin servers. bob of b.test has
// joined a room of a.test; he leaves (b.test's sender delivers the leave to
// a.test's /send), rejoins, is kicked by alice, a.test's moderator (a local
// event, delivered by a.test's sender while b.test is still in the room at
// the kick), rejoins and is banned; each change is in both servers' /sync,
// and the ban keeps him out on both.
func TestFederationRemoteMemberships(t *testing.T) {
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) {
			n := newFedNet(t, "a.test", "b.test")
			a := n.start(t, backend, "a.test")
			b := n.start(t, backend, "b.test")
			ctx := ctxT(t)
			alice := a.Register(t, "alice")
			bob := b.Register(t, "bob")
			room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
			aSince := must(alice.SyncRequest(ctx, 0, "", "", false, "")).NextBatch
			if _, err := bob.JoinRoom(ctx, string(room), &mautrix.ReqJoinRoom{Via: []string{"a.test"}}); err != nil {
				t.Fatalf("remote join: %v", err)
			}
			bSince := must(bob.SyncRequest(ctx, 0, "", "", false, "")).NextBatch

			// member waits until c's /sync shows bob's membership m set by sender.
			member := func(c *mautrix.Client, since *string, m string, sender id.UserID) {
				t.Helper()
				resp := syncUntil(t, c, *since, "", func(r *mautrix.RespSync) bool {
					var evs []*event.Event
					if jr, ok := r.Rooms.Join[room]; ok {
						evs = append(evs, jr.Timeline.Events...)
					}
					if lr, ok := r.Rooms.Leave[room]; ok {
						evs = append(evs, lr.Timeline.Events...)
					}
					for _, e := range evs {
						if e.Type == event.StateMember && e.GetStateKey() == string(bob.UserID) && e.Content.Raw["membership"] == m && e.Sender == sender {
							return true
						}
					}
					return false
				})
				*since = resp.NextBatch
			}
			joinedOnA := func(want bool) {
				t.Helper()
				_, ok := must(alice.JoinedMembers(ctx, room)).Joined[bob.UserID]
				if ok != want {
					t.Fatalf("bob joined on a.test: %v, want %v", ok, want)
				}
			}
			member(alice, &aSince, "join", bob.UserID)

			// bob leaves: his leave reaches a.test.
			must(bob.LeaveRoom(ctx, room))
			member(bob, &bSince, "leave", bob.UserID)
			member(alice, &aSince, "leave", bob.UserID)
			joinedOnA(false)

			// bob rejoins, alice kicks him.
			if _, err := bob.JoinRoom(ctx, string(room), &mautrix.ReqJoinRoom{Via: []string{"a.test"}}); err != nil {
				t.Fatalf("rejoin: %v", err)
			}
			member(alice, &aSince, "join", bob.UserID)
			member(bob, &bSince, "join", bob.UserID)
			joinedOnA(true)
			must(alice.KickUser(ctx, room, &mautrix.ReqKickUser{UserID: bob.UserID, Reason: "out"}))
			member(alice, &aSince, "leave", alice.UserID)
			member(bob, &bSince, "leave", alice.UserID)
			joinedOnA(false)

			// bob rejoins, alice bans him: kept out on both servers.
			if _, err := bob.JoinRoom(ctx, string(room), &mautrix.ReqJoinRoom{Via: []string{"a.test"}}); err != nil {
				t.Fatalf("rejoin after the kick: %v", err)
			}
			member(alice, &aSince, "join", bob.UserID)
			member(bob, &bSince, "join", bob.UserID)
			must(alice.BanUser(ctx, room, &mautrix.ReqBanUser{UserID: bob.UserID, Reason: "gone"}))
			member(alice, &aSince, "ban", alice.UserID)
			member(bob, &bSince, "ban", alice.UserID)
			joinedOnA(false)
			_, err := bob.JoinRoom(ctx, string(room), &mautrix.ReqJoinRoom{Via: []string{"a.test"}})
			assertMatrixErr(t, err, 403, "M_FORBIDDEN")
			if m, err := b.DB.GetMembership(ctx, string(room), string(bob.UserID)); err != nil || m.Membership != "ban" {
				t.Fatalf("bob's membership on b.test: %+v %v", m, err)
			}
		})
	}
}
