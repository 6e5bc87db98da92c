package tests

import (
	"context"
	"encoding/json"
	jsonv2 "encoding/json/v2"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tidwall/gjson"
	"go.mau.fi/util/jsontime"
	"maunium.net/go/mautrix"
	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

// Out-of-band memberships: invites of our users to rooms hosted elsewhere
// that this server is not in, their rejection, acceptance, and knocks.

// invitePDU builds an invite of target to roomID sent by sender, signed by
// the fake remote (no signature if unsigned); edit changes it before signing.
func (f *fakeRemote) invitePDU(t *testing.T, version id.RoomVersion, roomID id.RoomID, sender, target id.UserID, edit func(*pdu.PDU)) (json.RawMessage, id.EventID) {
	t.Helper()
	sk := string(target)
	p := &pdu.PDU{RoomID: roomID, Sender: sender, Type: "m.room.member", StateKey: &sk, Content: []byte(`{"membership":"invite"}`),
		Depth: 7, OriginServerTS: time.Now().UnixMilli(), PrevEvents: []id.EventID{"$prevprevprevprevprevprevprevprevprevprevprev"},
		AuthEvents: []id.EventID{"$authauthauthauthauthauthauthauthauthauthauth"}}
	if edit != nil {
		edit(p)
	}
	if err := p.Sign(version, f.name, f.key.ID, f.key.Priv); err != nil {
		t.Fatal(err)
	}
	evID, err := p.GetEventID(version)
	if err != nil {
		t.Fatal(err)
	}
	return must(jsonv2.Marshal(p)), evID
}

// strippedOf is an invite's stripped state: the create event and a name.
func strippedOf(creator id.UserID, version, name string) []any {
	return []any{
		map[string]any{"type": "m.room.create", "state_key": "", "sender": creator, "content": map[string]any{"room_version": version, "creator": creator}},
		map[string]any{"type": "m.room.name", "state_key": "", "sender": creator, "content": map[string]any{"name": name}},
	}
}

// sendInviteV2 PUTs a v2 invite as the fake remote.
func (f *fakeRemote) sendInviteV2(ctx context.Context, to string, roomID id.RoomID, eventID id.EventID, body any) (gjson.Result, error) {
	raw, _, err := f.client.MakeFullRequest(ctx, mfed.RequestParams{ServerName: to, Method: http.MethodPut,
		Path: mfed.URLPath{"v2", "invite", roomID, eventID}, Authenticate: true, RequestJSON: body})
	return gjson.ParseBytes(raw), err
}

// rawSync is /sync as JSON.
func oobSync(t *testing.T, c *mautrix.Client, since string) gjson.Result {
	t.Helper()
	path := "/_matrix/client/v3/sync?timeout=0"
	if since != "" {
		path += "&since=" + since
	}
	r := clientCall(t, c, "GET", path, nil)
	if r.Status != 200 {
		t.Fatalf("sync: %d %s", r.Status, r.Raw)
	}
	return gjson.Parse(r.Raw)
}

func syncRoomPath(section string, room id.RoomID) string {
	return "rooms." + section + "." + gjson.Escape(string(room))
}

// strippedHas reports whether a stripped state list holds an event of type
// typ (with content.name name when given).
func strippedHas(list gjson.Result, typ, name string) bool {
	for _, e := range list.Array() {
		if e.Get("type").Str == typ && (name == "" || e.Get("content.name").Str == name) {
			return true
		}
	}
	return false
}

// eventsOfRoom counts the stored events of a room.
func eventsOfRoom(t *testing.T, srv *testserver.Server, room id.RoomID) int {
	t.Helper()
	var n int
	if err := srv.DB.QueryRow(context.Background(), `SELECT COUNT(*) FROM events WHERE room_id = $1`, string(room)).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestFederationInviteInbound: signed invites (v1 and v2) of a local user to
// a room this server is not in appear in the invitee's /sync and sliding
// sync with their stripped state; the room stays unknown; the same invite
// again answers the same and stores nothing more; bad invites get the
// spec's errors and store nothing; after a restart the old token still
// syncs correctly.
func TestFederationInviteInbound(t *testing.T) {
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) {
			n := newFedNet(t, "a.test", "remote.test")
			conf := restartableOptions(t, n.configure)
			conf.ServerName = "a.test"
			a := testserver.Start(t, backend, conf)
			n.relays["a.test"].point(a.Config.Listen.HTTP)
			f := newFakeRemote(t, n, a, "remote.test")
			ctx := ctxT(t)
			alice := a.Register(t, "alice")
			bob := id.UserID("@bob:remote.test")
			before := oobSync(t, alice, "").Get("next_batch").Str

			// v2, while alice long-polls: the invite wakes her /sync.
			room := id.RoomID("!oob:remote.test")
			ev, evID := f.invitePDU(t, "10", room, bob, alice.UserID, nil)
			body := map[string]any{"room_version": "10", "event": ev, "invite_room_state": strippedOf(bob, "10", "Remote room")}
			woken := make(chan *mautrix.RespSync, 1)
			go func() {
				r, _ := alice.SyncRequest(ctx, 20000, before, "", false, "")
				woken <- r
			}()
			time.Sleep(200 * time.Millisecond)
			start := time.Now()
			resp, err := f.sendInviteV2(ctx, "a.test", room, evID, body)
			if err != nil {
				t.Fatalf("v2 invite: %v", err)
			}
			if r := <-woken; r == nil || r.Rooms.Invite[room] == nil || time.Since(start) > 10*time.Second {
				t.Fatalf("the long-poll was not woken with the invite: %+v", r)
			}
			if !resp.Get("event.signatures.a\\.test").Exists() || !resp.Get("event.signatures.remote\\.test").Exists() {
				t.Fatalf("v2 answer lacks a signature: %s", resp.Raw)
			}
			if _, err := a.DB.GetRoom(ctx, string(room)); err == nil {
				t.Fatal("an invite made the room known")
			}
			again, err := f.sendInviteV2(ctx, "a.test", room, evID, body)
			if err != nil || again.Get("event.signatures").String() != resp.Get("event.signatures").String() {
				t.Fatalf("the same invite again: %v %s", err, again.Raw)
			}
			if got := eventsOfRoom(t, a, room); got != 1 {
				t.Fatalf("%d events stored for the invite, want 1", got)
			}

			// v1: the event with its stripped state in unsigned; the array answer.
			room1 := id.RoomID("!oob1:remote.test")
			ev1, evID1 := f.invitePDU(t, "10", room1, bob, alice.UserID, func(p *pdu.PDU) {
				p.Unsigned = must(json.Marshal(map[string]any{"invite_room_state": strippedOf(bob, "10", "Old API room")}))
			})
			raw1, _, err := f.client.MakeFullRequest(ctx, mfed.RequestParams{ServerName: "a.test", Method: http.MethodPut,
				Path: mfed.URLPath{"v1", "invite", room1, evID1}, Authenticate: true, RequestJSON: ev1})
			if err != nil {
				t.Fatalf("v1 invite: %v", err)
			}
			v1 := gjson.ParseBytes(raw1)
			if v1.Get("0").Int() != 200 || !v1.Get("1.event.signatures.a\\.test").Exists() {
				t.Fatalf("v1 answer: %s", raw1)
			}

			// A room of version 1 (event IDs of the sender's choosing) by v1.
			roomV1 := id.RoomID("!oldroom:remote.test")
			sk := string(alice.UserID)
			old := &pdu.RoomV1PDU{EventID: "$oldinvite:remote.test", RoomID: roomV1, Sender: bob, Type: "m.room.member", StateKey: &sk,
				Content: []byte(`{"membership":"invite"}`), Depth: 4, OriginServerTS: time.Now().UnixMilli(),
				PrevEvents: []pdu.V1EventReference{}, AuthEvents: []pdu.V1EventReference{},
				Unsigned: must(json.Marshal(map[string]any{"invite_room_state": strippedOf(bob, "1", "Version one")}))}
			if err := old.Sign("1", f.name, f.key.ID, f.key.Priv); err != nil {
				t.Fatal(err)
			}
			rawOld, _, err := f.client.MakeFullRequest(ctx, mfed.RequestParams{ServerName: "a.test", Method: http.MethodPut,
				Path: mfed.URLPath{"v1", "invite", roomV1, old.EventID}, Authenticate: true, RequestJSON: old})
			if err != nil || !gjson.GetBytes(rawOld, "1.event.signatures.a\\.test").Exists() || gjson.GetBytes(rawOld, "1.event.event_id").Str != string(old.EventID) {
				t.Fatalf("v1 invite of a version 1 room: %v %s", err, rawOld)
			}

			// /sync: all under invite with their stripped state.
			s := oobSync(t, alice, before)
			for r, name := range map[id.RoomID]string{room: "Remote room", room1: "Old API room", roomV1: "Version one"} {
				st := s.Get(syncRoomPath("invite", r) + ".invite_state.events")
				if !strippedHas(st, "m.room.name", name) || !strippedHas(st, "m.room.member", "") {
					t.Fatalf("sync invite of %s: %s", r, s.Get("rooms").Raw)
				}
			}
			if s.Get("rooms.join").Exists() {
				t.Fatalf("invited rooms under join: %s", s.Get("rooms").Raw)
			}
			// Sliding sync lists them as invites.
			ss := slidingSync(t, alice, "", 0, allRoomsList(5, [][]string{}))
			if r := obj(ssRooms(ss)[string(room)]); r == nil || r["invite_state"] == nil {
				t.Fatalf("sliding sync: %v", ssRooms(ss))
			}

			invitesBadInput(t, ctx, a, f, alice)
			if got := eventsOfRoom(t, a, room); got != 1 {
				t.Fatalf("bad input stored events: %d", got)
			}

			// Restart: the old token still shows the invites.
			sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := a.Shutdown(sctx); err != nil {
				t.Fatal(err)
			}
			a2 := testserver.Start(t, backend, conf)
			alice2 := a2.Client(t)
			alice2.SetCredentials(alice.UserID, alice.AccessToken)
			s2 := oobSync(t, alice2, before)
			if !strippedHas(s2.Get(syncRoomPath("invite", room)+".invite_state.events"), "m.room.name", "Remote room") ||
				!s2.Get(syncRoomPath("invite", room1)).Exists() {
				t.Fatalf("sync after restart: %s", s2.Get("rooms").Raw)
			}
			if next := oobSync(t, alice2, s2.Get("next_batch").Str); next.Get("rooms.invite").Exists() {
				t.Fatalf("invites repeated after restart: %s", next.Get("rooms").Raw)
			}
		})
	}
}

// invitesBadInput: each bad invite gets the spec's error and nothing is stored.
func invitesBadInput(t *testing.T, ctx context.Context, a *testserver.Server, f *fakeRemote, alice *mautrix.Client) {
	bob := id.UserID("@bob:remote.test")
	other := mfed.GenerateSigningKey()
	// Alice ignores mallory and blocks evil.test's invites (MSC4155).
	if err := alice.SetAccountData(ctx, "m.ignored_user_list", map[string]any{"ignored_users": map[string]any{"@mallory:remote.test": map[string]any{}}}); err != nil {
		t.Fatal(err)
	}
	if err := alice.SetAccountData(ctx, "org.matrix.msc4155.invite_permission_config", map[string]any{"blocked_users": []string{"@spam*:remote.test"}}); err != nil {
		t.Fatal(err)
	}
	dave := a.Register(t, "dave")
	if _, err := a.DB.DeactivateUser(ctx, string(dave.UserID), false); err != nil {
		t.Fatal(err)
	}
	bigState := strippedOf(bob, "10", "x")
	for i := 0; i < 70; i++ {
		bigState = append(bigState, map[string]any{"type": "m.room.topic", "state_key": fmt.Sprint(i), "sender": bob, "content": map[string]any{}})
	}
	hugeState := []any{map[string]any{"type": "m.room.topic", "state_key": "", "sender": bob, "content": map[string]any{"topic": strings.Repeat("x", 70<<10)}}}
	type tc struct {
		name   string
		room   id.RoomID
		body   func(room id.RoomID) (any, id.EventID)
		status int
		code   string
	}
	v2 := func(version string, ev json.RawMessage, stripped any) any {
		return map[string]any{"room_version": version, "event": ev, "invite_room_state": stripped}
	}
	invite := func(edit func(*pdu.PDU), sender, target id.UserID) func(room id.RoomID) (any, id.EventID) {
		return func(room id.RoomID) (any, id.EventID) {
			ev, evID := f.invitePDU(t, "10", room, sender, target, edit)
			return v2("10", ev, strippedOf(bob, "10", "bad")), evID
		}
	}
	cases := []tc{
		{"unsigned", "!b1:remote.test", func(room id.RoomID) (any, id.EventID) {
			ev, evID := f.invitePDU(t, "10", room, bob, alice.UserID, nil)
			var m map[string]any
			_ = json.Unmarshal(ev, &m)
			delete(m, "signatures")
			return v2("10", must(json.Marshal(m)), nil), evID
		}, 403, "M_FORBIDDEN"},
		{"wrong signature", "!b2:remote.test", func(room id.RoomID) (any, id.EventID) {
			sk := string(alice.UserID)
			p := &pdu.PDU{RoomID: room, Sender: bob, Type: "m.room.member", StateKey: &sk, Content: []byte(`{"membership":"invite"}`),
				Depth: 3, OriginServerTS: time.Now().UnixMilli(), PrevEvents: []id.EventID{"$p"}, AuthEvents: []id.EventID{}}
			_ = p.Sign("10", "remote.test", f.key.ID, other.Priv) // the fake's key ID, another key
			evID, _ := p.GetEventID("10")
			return v2("10", must(jsonv2.Marshal(p)), nil), evID
		}, 403, "M_FORBIDDEN"},
		{"forged sender", "!b3:remote.test", invite(nil, "@eve:elsewhere.test", alice.UserID), 403, "M_FORBIDDEN"},
		{"not a local user", "!b4:remote.test", invite(nil, bob, "@carol:elsewhere.test"), 403, "M_FORBIDDEN"},
		{"no such local user", "!b5:remote.test", invite(nil, bob, "@nobody:a.test"), 404, "M_NOT_FOUND"},
		{"deactivated user", "!b16:remote.test", invite(nil, bob, dave.UserID), 403, "M_FORBIDDEN"},
		{"unknown version", "!b6:remote.test", func(room id.RoomID) (any, id.EventID) {
			ev, evID := f.invitePDU(t, "10", room, bob, alice.UserID, nil)
			return v2("999", ev, nil), evID
		}, 400, "M_INCOMPATIBLE_ROOM_VERSION"},
		{"wrong event ID", "!b7:remote.test", func(room id.RoomID) (any, id.EventID) {
			ev, _ := f.invitePDU(t, "10", room, bob, alice.UserID, nil)
			return v2("10", ev, nil), "$notthiseventnotthiseventnotthiseventnotthise"
		}, 400, "M_BAD_JSON"},
		{"membership not invite", "!b8:remote.test", invite(func(p *pdu.PDU) { p.Content = []byte(`{"membership":"join"}`) }, bob, alice.UserID), 400, "M_BAD_JSON"},
		{"too many stripped events", "!b9:remote.test", func(room id.RoomID) (any, id.EventID) {
			ev, evID := f.invitePDU(t, "10", room, bob, alice.UserID, nil)
			return v2("10", ev, bigState), evID
		}, 413, "M_TOO_LARGE"},
		{"stripped state too large", "!b10:remote.test", func(room id.RoomID) (any, id.EventID) {
			ev, evID := f.invitePDU(t, "10", room, bob, alice.UserID, nil)
			return v2("10", ev, hugeState), evID
		}, 413, "M_TOO_LARGE"},
		{"malformed stripped event", "!b11:remote.test", func(room id.RoomID) (any, id.EventID) {
			ev, evID := f.invitePDU(t, "10", room, bob, alice.UserID, nil)
			return v2("10", ev, []any{map[string]any{"type": 5}}), evID
		}, 400, "M_BAD_JSON"},
		{"malformed body", "!b12:remote.test", func(room id.RoomID) (any, id.EventID) {
			_, evID := f.invitePDU(t, "10", room, bob, alice.UserID, nil)
			return map[string]any{"room_version": "10", "event": "not an event"}, evID
		}, 400, "M_BAD_JSON"},
		{"ignored inviter", "!b13:remote.test", invite(nil, "@mallory:remote.test", alice.UserID), 403, "M_FORBIDDEN"},
		{"blocked inviter", "!b14:remote.test", invite(nil, "@spammer:remote.test", alice.UserID), 403, "M_FORBIDDEN"},
	}
	for _, c := range cases {
		body, evID := c.body(c.room)
		_, err := f.sendInviteV2(ctx, "a.test", c.room, evID, body)
		var httpErr mautrix.HTTPError
		if !errors.As(err, &httpErr) || httpErr.Response == nil || httpErr.Response.StatusCode != c.status ||
			httpErr.RespError == nil || httpErr.RespError.ErrCode != c.code {
			t.Fatalf("%s: want %d %s, got %v", c.name, c.status, c.code, err)
		}
		if c.code == "M_INCOMPATIBLE_ROOM_VERSION" && httpErr.RespError.ExtraData["room_version"] != "999" {
			t.Fatalf("%s: no room_version in %v", c.name, httpErr.RespError.ExtraData)
		}
		if got := eventsOfRoom(t, a, c.room); got != 0 {
			t.Fatalf("%s: %d events stored", c.name, got)
		}
	}
	// v1 with a body that is not an event.
	_, _, err := f.client.MakeFullRequest(ctx, mfed.RequestParams{ServerName: "a.test", Method: http.MethodPut,
		Path: mfed.URLPath{"v1", "invite", "!b15:remote.test", "$x"}, Authenticate: true, RequestJSON: []int{1, 2}})
	assertMatrixErr(t, err, 400, "M_BAD_JSON")
}

// fakeResident is remote.test answering make_leave/send_leave and
// make_knock/send_knock for the rooms it hosts, and recording what it got.
type fakeResident struct {
	mu       sync.Mutex
	got      []string          // "make_leave <room>", "send_leave <room>", …
	sent     map[string][]byte // last send_leave / send_knock body by kind
	failRoom id.RoomID         // make_leave of this room answers 500
}

func (r *fakeResident) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	parts := strings.Split(strings.TrimPrefix(req.URL.Path, "/_matrix/federation/"), "/")
	if len(parts) < 4 {
		http.NotFound(w, req)
		return
	}
	kind, room := parts[1], id.RoomID(parts[2])
	r.mu.Lock()
	r.got = append(r.got, kind+" "+string(room))
	r.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	switch kind {
	case "make_leave", "make_knock":
		if room == r.failRoom {
			w.WriteHeader(500)
			_, _ = w.Write([]byte(`{"errcode":"M_UNKNOWN","error":"down"}`))
			return
		}
		user := parts[3]
		membership := strings.TrimPrefix(kind, "make_")
		_ = json.NewEncoder(w).Encode(map[string]any{"room_version": "10", "event": map[string]any{
			"type": "m.room.member", "room_id": room, "sender": user, "state_key": user, "content": map[string]any{"membership": membership},
			"prev_events": []string{"$prevprevprevprevprevprevprevprevprevprevprev"}, "auth_events": []string{},
			"depth": 9, "origin_server_ts": time.Now().UnixMilli()}})
	case "send_leave", "send_knock":
		body, _ := io.ReadAll(io.LimitReader(req.Body, 1<<16))
		r.mu.Lock()
		if r.sent == nil {
			r.sent = map[string][]byte{}
		}
		r.sent[kind] = body
		r.mu.Unlock()
		if kind == "send_knock" {
			_ = json.NewEncoder(w).Encode(map[string]any{"knock_room_state": strippedOf("@bob:remote.test", "10", "Knock room")})
			return
		}
		_, _ = w.Write([]byte(`{}`))
	default:
		http.NotFound(w, req)
	}
}

func (r *fakeResident) saw(s string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, g := range r.got {
		if g == s {
			return true
		}
	}
	return false
}

// TestFederationOutOfBandLeaveKnock: rejecting a remote invite sends
// make_leave/send_leave to the inviter's server and /sync moves the room to
// leave; with no server reachable the invite is rejected locally; a knock on
// a remote room goes through make_knock/send_knock and /sync shows it under
// knock with the answer's stripped state; withdrawing it is a leave.
func TestFederationOutOfBandLeaveKnock(t *testing.T) {
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) {
			n := newFedNet(t, "a.test", "remote.test", "gone.test")
			a := n.start(t, backend, "a.test")
			f := newFakeRemote(t, n, a, "remote.test")
			resident := &fakeResident{failRoom: "!down:gone.test"}
			ts := httptest.NewServer(resident)
			t.Cleanup(ts.Close)
			n.relays["remote.test"].point(ts.Listener.Addr().String())
			ctx := ctxT(t)
			alice := a.Register(t, "alice")
			bob := id.UserID("@bob:remote.test")
			invite := func(room id.RoomID) {
				ev, evID := f.invitePDU(t, "10", room, bob, alice.UserID, nil)
				if _, err := f.sendInviteV2(ctx, "a.test", room, evID, map[string]any{"room_version": "10", "event": ev,
					"invite_room_state": strippedOf(bob, "10", "R")}); err != nil {
					t.Fatalf("invite to %s: %v", room, err)
				}
			}

			// Reject: the leave reaches remote.test's send_leave.
			room := id.RoomID("!reject:remote.test")
			invite(room)
			since := oobSync(t, alice, "").Get("next_batch").Str
			if r := clientCall(t, alice, "POST", "/_matrix/client/v3/rooms/"+string(room)+"/leave", map[string]any{"reason": "no thanks"}); r.Status != 200 {
				t.Fatalf("reject: %d %s", r.Status, r.Raw)
			}
			if !resident.saw("make_leave "+string(room)) || !resident.saw("send_leave "+string(room)) {
				t.Fatalf("remote.test saw %v", resident.got)
			}
			leave := gjson.ParseBytes(resident.sent["send_leave"])
			if leave.Get("sender").Str != string(alice.UserID) || leave.Get("content.membership").Str != "leave" ||
				leave.Get("content.reason").Str != "no thanks" || !leave.Get("signatures.a\\.test").Exists() {
				t.Fatalf("send_leave body: %s", leave.Raw)
			}
			s := oobSync(t, alice, since)
			if !s.Get(syncRoomPath("leave", room)).Exists() || s.Get(syncRoomPath("invite", room)).Exists() {
				t.Fatalf("sync after reject: %s", s.Get("rooms").Raw)
			}
			// Forgetting it is fine; forgetting a room never seen is not.
			if r := clientCall(t, alice, "POST", "/_matrix/client/v3/rooms/"+string(room)+"/forget", map[string]any{}); r.Status != 200 {
				t.Fatalf("forget: %d %s", r.Status, r.Raw)
			}
			if r := clientCall(t, alice, "POST", "/_matrix/client/v3/rooms/!never:remote.test/forget", map[string]any{}); r.Status != 404 {
				t.Fatalf("forget a room never seen: %d %s", r.Status, r.Raw)
			}
			// Rejecting again: nothing to do.
			if r := clientCall(t, alice, "POST", "/_matrix/client/v3/rooms/"+string(room)+"/leave", map[string]any{}); r.Status != 200 {
				t.Fatalf("reject again: %d %s", r.Status, r.Raw)
			}

			// No server reachable (remote.test fails, gone.test is nobody): rejected locally.
			down := id.RoomID("!down:gone.test")
			invite(down)
			since = oobSync(t, alice, "").Get("next_batch").Str
			if r := clientCall(t, alice, "POST", "/_matrix/client/v3/rooms/"+string(down)+"/leave", map[string]any{}); r.Status != 200 {
				t.Fatalf("local reject: %d %s", r.Status, r.Raw)
			}
			if !resident.saw("make_leave " + string(down)) {
				t.Fatalf("the inviter's server was not asked first: %v", resident.got)
			}
			s = oobSync(t, alice, since)
			if !s.Get(syncRoomPath("leave", down)).Exists() {
				t.Fatalf("sync after local reject: %s", s.Get("rooms").Raw)
			}
			// Leaving a room we know nothing of is still 404.
			if r := clientCall(t, alice, "POST", "/_matrix/client/v3/rooms/!nothing:remote.test/leave", map[string]any{}); r.Status != 404 {
				t.Fatalf("leave of an unknown room: %d %s", r.Status, r.Raw)
			}

			// Knock.
			knockRoom := id.RoomID("!knock:remote.test")
			since = oobSync(t, alice, "").Get("next_batch").Str
			if r := clientCall(t, alice, "POST", "/_matrix/client/v3/knock/"+string(knockRoom)+"?server_name=remote.test", map[string]any{"reason": "let me in"}); r.Status != 200 {
				t.Fatalf("knock: %d %s", r.Status, r.Raw)
			}
			if !resident.saw("make_knock "+string(knockRoom)) || !resident.saw("send_knock "+string(knockRoom)) {
				t.Fatalf("remote.test saw %v", resident.got)
			}
			knock := gjson.ParseBytes(resident.sent["send_knock"])
			if knock.Get("content.membership").Str != "knock" || knock.Get("content.reason").Str != "let me in" {
				t.Fatalf("send_knock body: %s", knock.Raw)
			}
			s = oobSync(t, alice, since)
			if !strippedHas(s.Get(syncRoomPath("knock", knockRoom)+".knock_state.events"), "m.room.name", "Knock room") {
				t.Fatalf("sync after knock: %s", s.Get("rooms").Raw)
			}
			// Withdraw: a leave to remote.test.
			since = s.Get("next_batch").Str
			if r := clientCall(t, alice, "POST", "/_matrix/client/v3/rooms/"+string(knockRoom)+"/leave", map[string]any{}); r.Status != 200 {
				t.Fatalf("withdraw knock: %d %s", r.Status, r.Raw)
			}
			if !resident.saw("send_leave " + string(knockRoom)) {
				t.Fatalf("remote.test saw %v", resident.got)
			}
			if s = oobSync(t, alice, since); !s.Get(syncRoomPath("leave", knockRoom)).Exists() {
				t.Fatalf("sync after withdrawing: %s", s.Get("rooms").Raw)
			}
		})
	}
}

// TestFederationOutOfBandAccept: bob on b.test invites alice of a.test to
// his invite-only room; a.test, not in the room, records the invite; alice's
// /join is a remote join through the inviter's server, after which both
// servers have her joined and her /sync shows the room joined.
func TestFederationOutOfBandAccept(t *testing.T) {
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) {
			n := newFedNet(t, "a.test", "b.test")
			a := n.start(t, backend, "a.test")
			b := n.start(t, backend, "b.test")
			ctx := ctxT(t)
			alice := a.Register(t, "alice")
			bob := b.Register(t, "bob")
			room := createRoom(t, bob, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Invite only"})

			// b.test's invite of alice in the room's DAG, signed by b.test.
			row := must(b.DB.GetRoom(ctx, string(room)))
			version := id.RoomVersion(row.RoomVersion)
			state := must(b.DB.CurrentStateEvents(ctx, string(room)))
			byKey := map[pdu.StateKey]id.EventID{}
			for _, e := range state {
				byKey[pdu.StateKey{Type: e.Type, StateKey: *e.StateKey}] = id.EventID(e.EventID)
			}
			sk := string(alice.UserID)
			p := &pdu.PDU{RoomID: room, Sender: bob.UserID, Type: "m.room.member", StateKey: &sk, Content: []byte(`{"membership":"invite"}`),
				Depth: row.MaxDepth + 1, OriginServerTS: time.Now().UnixMilli()}
			for _, x := range row.Extremities {
				p.PrevEvents = append(p.PrevEvents, id.EventID(x))
			}
			for _, k := range p.AuthEventSelection(version) {
				if x, ok := byKey[k]; ok {
					p.AuthEvents = append(p.AuthEvents, x)
				}
			}
			if err := p.Sign(version, "b.test", b.SigningKey.ID, b.SigningKey.Priv); err != nil {
				t.Fatal(err)
			}
			evID := must(p.GetEventID(version))
			raw := must(jsonv2.Marshal(p))
			if _, err := b.Rooms.Input(ctx, room, raw, "b.test"); err != nil {
				t.Fatalf("b.test's invite: %v", err)
			}
			asB := n.client(t, "b.test", b.SigningKey)
			if _, _, err := asB.MakeFullRequest(ctx, mfed.RequestParams{ServerName: "a.test", Method: http.MethodPut,
				Path: mfed.URLPath{"v2", "invite", room, evID}, Authenticate: true,
				RequestJSON: map[string]any{"room_version": version, "event": json.RawMessage(raw), "invite_room_state": strippedOf(bob.UserID, string(version), "Invite only")}}); err != nil {
				t.Fatalf("invite to a.test: %v", err)
			}
			since := oobSync(t, alice, "")
			if !since.Get(syncRoomPath("invite", room)).Exists() {
				t.Fatalf("no invite in sync: %s", since.Get("rooms").Raw)
			}
			// Accept: a remote join (no server_name: the inviter's server is asked).
			if _, err := alice.JoinRoom(ctx, string(room), nil); err != nil {
				t.Fatalf("accepting: %v", err)
			}
			for _, c := range []*mautrix.Client{bob, alice} {
				members := must(c.JoinedMembers(ctx, room))
				if _, ok := members.Joined[alice.UserID]; !ok || len(members.Joined) != 2 {
					t.Fatalf("%s's members: %v", c.UserID.Homeserver(), members.Joined)
				}
			}
			s := oobSync(t, alice, since.Get("next_batch").Str)
			if !s.Get(syncRoomPath("join", room)).Exists() || s.Get(syncRoomPath("invite", room)).Exists() {
				t.Fatalf("sync after accepting: %s", s.Get("rooms").Raw)
			}
			// An invite to a room a.test is in now is signed and answered, not
			// stored out of band (the event comes by /send).
			carol := a.Register(t, "carol")
			inv := &pdu.PDU{RoomID: room, Sender: bob.UserID, Type: "m.room.member", StateKey: ptr(string(carol.UserID)),
				Content: []byte(`{"membership":"invite"}`), Depth: p.Depth + 5, OriginServerTS: time.Now().UnixMilli(),
				PrevEvents: p.PrevEvents, AuthEvents: p.AuthEvents}
			if err := inv.Sign(version, "b.test", b.SigningKey.ID, b.SigningKey.Priv); err != nil {
				t.Fatal(err)
			}
			invID := must(inv.GetEventID(version))
			answer, _, err := asB.MakeFullRequest(ctx, mfed.RequestParams{ServerName: "a.test", Method: http.MethodPut,
				Path: mfed.URLPath{"v2", "invite", room, invID}, Authenticate: true,
				RequestJSON: map[string]any{"room_version": version, "event": inv, "invite_room_state": []any{}}})
			if err != nil || !gjson.GetBytes(answer, "event.signatures.a\\.test").Exists() {
				t.Fatalf("invite to a known room: %v %s", err, answer)
			}
			var oobRows int
			if err := a.DB.QueryRow(ctx, `SELECT COUNT(*) FROM events WHERE event_id = $1 AND out_of_band_version IS NOT NULL`, string(invID)).Scan(&oobRows); err != nil || oobRows != 0 {
				t.Fatalf("an invite to a known room was stored out of band: %d %v", oobRows, err)
			}

			// The out-of-band invite made way for the room's own copy.
			var oob int
			if err := a.DB.QueryRow(ctx, `SELECT COUNT(*) FROM events WHERE room_id = $1 AND out_of_band_version IS NOT NULL`, string(room)).Scan(&oob); err != nil || oob != 0 {
				t.Fatalf("out-of-band rows left: %d %v", oob, err)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

// TestFederationOutOfBandRescind: a resident server's moderator rescinds
// (kicks) alice's invite to a room a.test is not in: the leave arrives by
// PUT /send (the room is unknown here) and is recorded out of band, so her
// /sync moves the room from invite to leave; a repeat is accepted again. Any
// other PDU of the unknown room stays "room not found" and stores nothing: a
// leave of a user with no invite, a message, a leave whose sender is of
// another server than the origin, and one whose content hash is wrong (the
// last two rejected as naming alice).
func TestFederationOutOfBandRescind(t *testing.T) {
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) { testOutOfBandRescind(t, backend) })
	}
}

func testOutOfBandRescind(t *testing.T, backend string) {
	{
		n := newFedNet(t, "a.test", "remote.test")
		a := n.start(t, backend, "a.test")
		f := newFakeRemote(t, n, a, "remote.test")
		ctx := ctxT(t)
		alice, carol := a.Register(t, "alice"), a.Register(t, "carol")
		bob := id.UserID("@bob:remote.test")
		room := id.RoomID("!rescind:remote.test")
		ev, inviteID := f.invitePDU(t, "10", room, bob, alice.UserID, nil)
		if _, err := f.sendInviteV2(ctx, "a.test", room, inviteID, map[string]any{"room_version": "10", "event": ev,
			"invite_room_state": strippedOf(bob, "10", "R")}); err != nil {
			t.Fatalf("invite: %v", err)
		}
		since := oobSync(t, alice, "").Get("next_batch").Str
		member := func(target id.UserID, content string, edit func(*pdu.PDU)) (json.RawMessage, id.EventID) {
			return f.invitePDU(t, "10", room, bob, target, func(p *pdu.PDU) {
				p.Content = json.RawMessage(content)
				p.PrevEvents, p.AuthEvents = []id.EventID{inviteID}, []id.EventID{inviteID}
				p.Depth = 8
				if edit != nil {
					edit(p)
				}
			})
		}
		txn := 0
		send := func(pdus ...json.RawMessage) map[id.EventID]string {
			t.Helper()
			txn++
			resp, err := f.client.SendTransaction(ctx, &mfed.ReqSendTransaction{Destination: "a.test", TxnID: fmt.Sprint("t", txn),
				Origin: "remote.test", OriginServerTS: jsontime.UM(time.Now()), PDUs: pdus})
			if err != nil {
				t.Fatalf("transaction: %v", err)
			}
			out := map[id.EventID]string{}
			for evID, r := range resp.PDUs {
				out[evID] = r.Error
			}
			return out
		}
		before := eventsOfRoom(t, a, room)

		noInvite, noInviteID := member(carol.UserID, `{"membership":"leave"}`, nil)
		msg, msgID := f.invitePDU(t, "10", room, bob, alice.UserID, func(p *pdu.PDU) {
			p.Type, p.StateKey, p.Content = "m.room.message", nil, json.RawMessage(`{"body":"hi"}`)
		})
		alien, alienID := member(alice.UserID, `{"membership":"leave"}`, func(p *pdu.PDU) { p.Sender = "@eve:other.test" })
		badHash, badHashID := member(alice.UserID, `{"membership":"leave","reason":"x"}`, nil)
		badHash = json.RawMessage(strings.Replace(string(badHash), `"reason":"x"`, `"reason":"y"`, 1))
		// A kick by someone other than the inviter, though of the same server.
		notInviter, notInviterID := member(alice.UserID, `{"membership":"leave"}`, func(p *pdu.PDU) { p.Sender = "@dave:remote.test" })
		res := send(noInvite, msg, alien, badHash, notInviter)
		if res[noInviteID] != "room not found" || res[msgID] != "room not found" {
			t.Errorf("PDUs for no invite: %v", res)
		}
		if !strings.Contains(res[notInviterID], "only the inviter") {
			t.Errorf("a kick by another user than the inviter: %q", res[notInviterID])
		}
		if !strings.Contains(res[alienID], "origin") {
			t.Errorf("leave by another server's user: %q", res[alienID])
		}
		for evID, r := range res {
			if evID != noInviteID && evID != msgID && evID != alienID && evID != notInviterID && r == "" {
				t.Errorf("the leave with a wrong hash was accepted (%s)", evID)
			}
		}
		_ = badHashID // its ID as sent differs: the hash covers the changed content
		if got := eventsOfRoom(t, a, room); got != before {
			t.Fatalf("refused PDUs stored: %d events, want %d", got, before)
		}
		if s := oobSync(t, alice, since); s.Get(syncRoomPath("leave", room)).Exists() {
			t.Fatalf("a refused leave retired the invite: %s", s.Get("rooms").Raw)
		}

		// A leave from before the invite (lower depth: it ended an earlier
		// invite or knock, and federation delivered it late) leaves the
		// invite in place (Complement TestKnocking: a rejected knock's leave
		// arriving after the user knocked again).
		stale, staleID := member(alice.UserID, `{"membership":"leave","reason":"old"}`, func(p *pdu.PDU) { p.Depth = 3 })
		if res := send(stale); res[staleID] != "" {
			t.Fatalf("stale leave: %v", res)
		}
		if s := oobSync(t, alice, ""); !s.Get(syncRoomPath("invite", room)).Exists() {
			t.Fatalf("a leave older than the invite retired it: %s", s.Get("rooms").Raw)
		}

		leave, leaveID := member(alice.UserID, `{"membership":"leave","reason":"rescinded"}`, nil)
		if res := send(leave); res[leaveID] != "" {
			t.Fatalf("rescinding leave: %v", res)
		}
		s := oobSync(t, alice, since)
		left := s.Get(syncRoomPath("leave", room))
		if !left.Exists() || s.Get(syncRoomPath("invite", room)).Exists() {
			t.Fatalf("sync after the rescind: %s", s.Get("rooms").Raw)
		}
		if !strings.Contains(left.Raw, string(leaveID)) {
			t.Errorf("the leave is not in the left room: %s", left.Raw)
		}
		if res := send(leave); res[leaveID] != "" {
			t.Fatalf("repeated leave: %v", res)
		}
		if s := oobSync(t, alice, ""); s.Get(syncRoomPath("invite", room)).Exists() {
			t.Errorf("initial sync still shows the invite: %s", s.Get("rooms").Raw)
		}
		if _, err := a.DB.GetRoom(ctx, string(room)); err == nil {
			t.Errorf("the room became known")
		}
	}
}
