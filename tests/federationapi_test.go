package tests

import (
	"bytes"
	"context"
	"encoding/json"
	jsonv2 "encoding/json/v2"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/homeserver/testserver"
	"github.com/myelin-chat/myelin/storage"
)

// fakeRemote is a server the tests act as: its key is trusted by the server
// under test (stored as fetched), and it signs requests and events with it.
type fakeRemote struct {
	name   string
	key    *mfed.SigningKey
	client *mfed.Client
}

func newFakeRemote(t *testing.T, n *fedNet, srv *testserver.Server, name string) *fakeRemote {
	t.Helper()
	key := mfed.GenerateSigningKey()
	now := time.Now()
	if err := srv.DB.StoreServerKeys(context.Background(), []storage.ServerKey{{ServerName: name, KeyID: string(key.ID),
		VerifyKey: string(key.Pub), ValidUntilTS: now.Add(24 * time.Hour).UnixMilli(), FetchedTS: now.UnixMilli()}}); err != nil {
		t.Fatal(err)
	}
	return &fakeRemote{name: name, key: key, client: n.client(t, name, key)}
}

// join injects user's join (signed by the fake remote) through the roomserver's
// remote input, on top of the room's forward extremities; it returns the
// event ID.
func (f *fakeRemote) join(t *testing.T, srv *testserver.Server, roomID id.RoomID, localpart string) id.EventID {
	t.Helper()
	ctx := context.Background()
	user := id.UserID("@" + localpart + ":" + f.name)
	row, err := srv.DB.GetRoom(ctx, string(roomID))
	if err != nil {
		t.Fatal(err)
	}
	version := id.RoomVersion(row.RoomVersion)
	state, err := srv.DB.CurrentStateEvents(ctx, string(roomID))
	if err != nil {
		t.Fatal(err)
	}
	byKey := map[pdu.StateKey]id.EventID{}
	for _, e := range state {
		byKey[pdu.StateKey{Type: e.Type, StateKey: *e.StateKey}] = id.EventID(e.EventID)
	}
	sk := string(user)
	p := &pdu.PDU{RoomID: roomID, Sender: user, Type: "m.room.member", StateKey: &sk, Content: []byte(`{"membership":"join"}`),
		Depth: row.MaxDepth + 1, OriginServerTS: time.Now().UnixMilli()}
	for _, x := range row.Extremities {
		p.PrevEvents = append(p.PrevEvents, id.EventID(x))
	}
	for _, k := range p.AuthEventSelection(version) {
		if x, ok := byKey[k]; ok {
			p.AuthEvents = append(p.AuthEvents, x)
		}
	}
	if err := p.Sign(version, f.name, f.key.ID, f.key.Priv); err != nil {
		t.Fatal(err)
	}
	raw, err := jsonv2.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	ev, err := srv.Rooms.Input(ctx, roomID, raw, f.name)
	if err != nil {
		t.Fatalf("remote join of %s: %v", user, err)
	}
	return ev.ID
}

// get makes a signed federation request and decodes the answer.
func (f *fakeRemote) get(ctx context.Context, method string, path mfed.URLPath, query url.Values, body any) (gjson.Result, error) {
	raw, _, err := f.client.MakeFullRequest(ctx, mfed.RequestParams{ServerName: "hs.test", Method: method, Path: path, Query: query,
		Authenticate: true, RequestJSON: body})
	return gjson.ParseBytes(raw), err
}

// TestFederationRoomReads: a remote server joined to a local room reads its
// events, state, auth chains, backfill and missing events, as the spec's
// server-server API and history visibility for servers allow; servers not in
// the room, ACL-denied servers and unsigned requests are refused; unknown
// rooms and events are 404; bad input is 400, never 500.
func TestFederationRoomReads(t *testing.T) {
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) {
			n := newFedNet(t, "hs.test", "remote.test", "other.test", "evil.test")
			srv := n.start(t, backend, "hs.test")
			ctx := ctxT(t)
			remote := newFakeRemote(t, n, srv, "remote.test")
			other := newFakeRemote(t, n, srv, "other.test")
			evil := newFakeRemote(t, n, srv, "evil.test")
			alice := srv.Register(t, "alice")

			// A public room with joined history visibility: m1 is sent before
			// remote.test's user joins, m2.. after.
			room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", Visibility: "public", RoomAliasName: "fed"})
			must(alice.SendStateEvent(ctx, room, event.StateHistoryVisibility, "", map[string]string{"history_visibility": "joined"}))
			m1 := sendText(t, alice, room, "m1")
			bobJoin := remote.join(t, srv, room, "bob")
			m2 := sendText(t, alice, room, "m2")
			m3 := sendText(t, alice, room, "m3")
			m4 := sendText(t, alice, room, "m4")
			eveJoin := evil.join(t, srv, room, "eve")
			m5 := sendText(t, alice, room, "m5")

			path := func(parts ...any) mfed.URLPath { return mfed.URLPath(parts) }
			q := func(kv ...string) url.Values {
				v := url.Values{}
				for i := 0; i+1 < len(kv); i += 2 {
					v.Add(kv[i], kv[i+1])
				}
				return v
			}

			// /event: visible after the join, refused before it.
			got, err := remote.get(ctx, "GET", path("v1", "event", m2), nil, nil)
			if err != nil || got.Get("pdus.#").Int() != 1 || got.Get("pdus.0.content.body").Str != "m2" || got.Get("origin").Str != "hs.test" {
				t.Fatalf("/event m2: %s %v", got.Raw, err)
			}
			// Federation format: the stored PDU, signed by us, no client fields.
			if !got.Get("pdus.0.signatures.hs\\.test").Exists() || got.Get("pdus.0.unsigned.age").Exists() || !got.Get("pdus.0.auth_events").IsArray() {
				t.Fatalf("/event is not the PDU: %s", got.Get("pdus.0").Raw)
			}
			_, err = remote.get(ctx, "GET", path("v1", "event", m1), nil, nil)
			assertMatrixErr(t, err, 403, "M_FORBIDDEN")
			// Its own join is visible to the server (the state after it).
			if _, err = remote.get(ctx, "GET", path("v1", "event", bobJoin), nil, nil); err != nil {
				t.Fatalf("/event own join: %v", err)
			}
			// A server with no one in the room sees nothing of a joined room.
			_, err = other.get(ctx, "GET", path("v1", "event", m2), nil, nil)
			assertMatrixErr(t, err, 403, "M_FORBIDDEN")

			// /state_ids at m2: the state before it, and its full auth chain.
			got, err = remote.get(ctx, "GET", path("v1", "state_ids", room), q("event_id", string(m2)), nil)
			if err != nil {
				t.Fatalf("/state_ids: %v", err)
			}
			want, err := srv.DB.StateBeforeEvent(ctx, string(m2))
			if err != nil {
				t.Fatal(err)
			}
			var wantIDs, gotIDs []string
			for _, x := range want {
				wantIDs = append(wantIDs, x)
			}
			for _, x := range got.Get("pdu_ids").Array() {
				gotIDs = append(gotIDs, x.Str)
			}
			slices.Sort(wantIDs)
			slices.Sort(gotIDs)
			if !slices.Equal(wantIDs, gotIDs) || !slices.Contains(gotIDs, string(bobJoin)) {
				t.Fatalf("/state_ids pdu_ids %v, want %v (with %s)", gotIDs, wantIDs, bobJoin)
			}
			var chainIDs []string
			for _, x := range got.Get("auth_chain_ids").Array() {
				chainIDs = append(chainIDs, x.Str)
			}
			checkAuthChain(t, srv, gotIDs, chainIDs)

			// /state: the same, as PDUs.
			got, err = remote.get(ctx, "GET", path("v1", "state", room), q("event_id", string(m2)), nil)
			if err != nil || len(got.Get("pdus").Array()) != len(wantIDs) || len(got.Get("auth_chain").Array()) != len(chainIDs) {
				t.Fatalf("/state: %d pdus, %d auth events (want %d, %d): %v", len(got.Get("pdus").Array()),
					len(got.Get("auth_chain").Array()), len(wantIDs), len(chainIDs), err)
			}
			for _, p := range got.Get("pdus").Array() {
				if !p.Get("type").Exists() || !p.Get("signatures").Exists() {
					t.Fatalf("/state pdu is not a PDU: %s", p.Raw)
				}
			}
			// ... not at an event the server may not see.
			_, err = remote.get(ctx, "GET", path("v1", "state_ids", room), q("event_id", string(m1)), nil)
			assertMatrixErr(t, err, 403, "M_FORBIDDEN")

			// /event_auth: m2's full auth chain.
			got, err = remote.get(ctx, "GET", path("v1", "event_auth", room, m2), nil, nil)
			if err != nil {
				t.Fatalf("/event_auth: %v", err)
			}
			chainIDs = nil
			for _, p := range got.Get("auth_chain").Array() {
				chainIDs = append(chainIDs, eventIDOf(t, srv, p.Raw))
			}
			checkAuthChain(t, srv, []string{string(m2)}, chainIDs)

			// /backfill from m5: deepest first, what the server may see (its
			// user's join onwards: m1 and earlier are hidden), limit applied.
			got, err = remote.get(ctx, "GET", path("v1", "backfill", room), q("v", string(m5), "limit", "3"), nil)
			if ids := pduIDs(t, srv, got); err != nil || !slices.Equal(ids, []string{string(m5), string(eveJoin), string(m4)}) {
				t.Fatalf("/backfill limit 3: %v %v", ids, err)
			}
			// Everything up to m5 but m1: the state events before the switch
			// to joined were shared (the default), the switch itself visible
			// (shared before it), m1 hidden.
			upToM5 := roomEventIDs(t, srv, room, m5)
			wantAll := slices.DeleteFunc(slices.Clone(upToM5), func(x string) bool { return x == string(m1) })
			got, err = remote.get(ctx, "GET", path("v1", "backfill", room), q("v", string(m5), "limit", "1000000"), nil)
			ids := pduIDs(t, srv, got)
			if err != nil || len(ids) != len(wantAll) || slices.Contains(ids, string(m1)) || !sameSet(ids, wantAll) {
				t.Fatalf("/backfill all: %v, want %v (%v)", ids, wantAll, err)
			}

			// /get_missing_events: between bob's join and m4, oldest first.
			body := map[string]any{"earliest_events": []id.EventID{bobJoin}, "latest_events": []id.EventID{m4}, "limit": 10}
			got, err = remote.get(ctx, "POST", path("v1", "get_missing_events", room), nil, body)
			if ids := eventsIDs(t, srv, got.Get("events")); err != nil || !slices.Equal(ids, []string{string(m2), string(m3)}) {
				t.Fatalf("/get_missing_events: %v %v", ids, err)
			}
			body["limit"] = 1
			got, err = remote.get(ctx, "POST", path("v1", "get_missing_events", room), nil, body)
			if ids := eventsIDs(t, srv, got.Get("events")); err != nil || !slices.Equal(ids, []string{string(m3)}) {
				t.Fatalf("/get_missing_events limit 1: %v %v", ids, err)
			}
			// min_depth stops the walk.
			m3Depth := must(srv.DB.GetEvent(ctx, string(m3))).Depth
			body["limit"], body["min_depth"] = 10, m3Depth
			got, err = remote.get(ctx, "POST", path("v1", "get_missing_events", room), nil, body)
			if ids := eventsIDs(t, srv, got.Get("events")); err != nil || !slices.Equal(ids, []string{string(m3)}) {
				t.Fatalf("/get_missing_events min_depth: %v %v", ids, err)
			}
			// Hidden history is served redacted, not left out (Synapse;
			// Complement's TestInboundCanReturnMissingEvents): from the
			// room's creation to bob's join, oldest first, the preset's
			// state without a guest_access event (public_chat's
			// "forbidden" is its absence), m1 without its content.
			create := must(srv.DB.CurrentStateEvent(ctx, string(room), "m.room.create", ""))
			got, err = remote.get(ctx, "POST", path("v1", "get_missing_events", room), nil,
				map[string]any{"earliest_events": []string{create.EventID}, "latest_events": []id.EventID{bobJoin}, "limit": 10, "min_depth": 1})
			var types []string
			for _, e := range got.Get("events").Array() {
				types = append(types, e.Get("type").Str)
			}
			wantTypes := []string{"m.room.member", "m.room.power_levels", "m.room.canonical_alias", "m.room.join_rules",
				"m.room.history_visibility", "m.room.history_visibility", "m.room.message"}
			if ids := eventsIDs(t, srv, got.Get("events")); err != nil || !slices.Equal(types, wantTypes) || ids[len(ids)-1] != string(m1) {
				t.Fatalf("/get_missing_events from the creation: %v %v %v", types, ids, err)
			}
			if last := got.Get("events.6"); last.Get("content.body").Exists() || !last.Get("content").IsObject() ||
				!last.Get("signatures.hs\\.test").Exists() || !last.Get("hashes.sha256").Exists() {
				t.Fatalf("hidden m1 not redacted: %s", last.Raw)
			}
			// Visible events keep their content.
			if got.Get("events.4.content.history_visibility").Str != "shared" {
				t.Fatalf("visible event redacted: %s", got.Get("events.4").Raw)
			}

			// /timestamp_to_event: the latest visible event backwards from now;
			// the room's start is hidden.
			got, err = remote.get(ctx, "GET", path("v1", "timestamp_to_event", room),
				q("ts", fmt.Sprint(time.Now().Add(time.Minute).UnixMilli()), "dir", "b"), nil)
			if err != nil || got.Get("event_id").Str != string(m5) {
				t.Fatalf("/timestamp_to_event: %s %v", got.Raw, err)
			}
			_, err = remote.get(ctx, "GET", path("v1", "timestamp_to_event", room), q("ts", fmt.Sprint(time.Now().Add(time.Hour).UnixMilli()), "dir", "f"), nil)
			assertMatrixErr(t, err, 404, "M_NOT_FOUND")

			// /query/directory: the local alias, with the servers in the room.
			got, err = other.get(ctx, "GET", path("v1", "query", "directory"), q("room_alias", "#fed:hs.test"), nil)
			servers := []string{}
			for _, s := range got.Get("servers").Array() {
				servers = append(servers, s.Str)
			}
			if err != nil || got.Get("room_id").Str != string(room) || !slices.Equal(servers, []string{"hs.test", "evil.test", "remote.test"}) {
				t.Fatalf("/query/directory: %s %v", got.Raw, err)
			}
			_, err = other.get(ctx, "GET", path("v1", "query", "directory"), q("room_alias", "#nope:hs.test"), nil)
			assertMatrixErr(t, err, 404, "M_NOT_FOUND")

			// /publicRooms, GET and POST.
			got, err = other.get(ctx, "GET", path("v1", "publicRooms"), q("limit", "10"), nil)
			if err != nil || got.Get("chunk.0.room_id").Str != string(room) {
				t.Fatalf("GET /publicRooms: %s %v", got.Raw, err)
			}
			got, err = other.get(ctx, "POST", path("v1", "publicRooms"), nil, map[string]any{"limit": 10, "filter": map[string]any{"generic_search_term": "zzz"}})
			if err != nil || len(got.Get("chunk").Array()) != 0 {
				t.Fatalf("POST /publicRooms filtered: %s %v", got.Raw, err)
			}

			// A world_readable room: any server reads its events, but only
			// servers in the room read its state.
			open := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
			must(alice.SendStateEvent(ctx, open, event.StateHistoryVisibility, "", map[string]string{"history_visibility": "world_readable"}))
			w1 := sendText(t, alice, open, "w1")
			if got, err = other.get(ctx, "GET", path("v1", "event", w1), nil, nil); err != nil || got.Get("pdus.0.content.body").Str != "w1" {
				t.Fatalf("/event world_readable: %s %v", got.Raw, err)
			}
			_, err = other.get(ctx, "GET", path("v1", "state_ids", open), q("event_id", string(w1)), nil)
			assertMatrixErr(t, err, 403, "M_FORBIDDEN")

			// /hierarchy: a public space with the room (suggested) and a
			// private room (inaccessible to a server not in it) as children.
			space := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", CreationContent: map[string]any{"type": "m.space"}})
			private := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat"})
			must(alice.SendStateEvent(ctx, space, event.StateSpaceChild, string(room), map[string]any{"via": []string{"hs.test"}, "suggested": true}))
			must(alice.SendStateEvent(ctx, space, event.StateSpaceChild, string(private), map[string]any{"via": []string{"hs.test"}}))
			must(alice.SendStateEvent(ctx, space, event.StateSpaceChild, "!unknown:hs.test", map[string]any{"via": []string{"hs.test"}}))
			got, err = remote.get(ctx, "GET", path("v1", "hierarchy", space), nil, nil)
			if err != nil || got.Get("room.room_id").Str != string(space) || len(got.Get("room.children_state").Array()) != 3 ||
				got.Get("children.#").Int() != 1 || got.Get("children.0.room_id").Str != string(room) ||
				got.Get("inaccessible_children.#").Int() != 1 || got.Get("inaccessible_children.0").Str != string(private) {
				t.Fatalf("/hierarchy: %s %v", got.Raw, err)
			}
			got, err = remote.get(ctx, "GET", path("v1", "hierarchy", space), q("suggested_only", "true"), nil)
			if err != nil || len(got.Get("room.children_state").Array()) != 1 || got.Get("children.#").Int() != 1 || got.Get("inaccessible_children.#").Int() != 0 {
				t.Fatalf("/hierarchy suggested_only: %s %v", got.Raw, err)
			}
			_, err = other.get(ctx, "GET", path("v1", "hierarchy", private), nil, nil)
			assertMatrixErr(t, err, 404, "M_NOT_FOUND")
			_, err = other.get(ctx, "GET", path("v1", "hierarchy", "!unknown:hs.test"), nil, nil)
			assertMatrixErr(t, err, 404, "M_NOT_FOUND")
			_, err = other.get(ctx, "GET", path("v1", "hierarchy", space), q("suggested_only", "maybe"), nil)
			assertMatrixErr(t, err, 400, "M_INVALID_PARAM")

			// Servers not in the room.
			for _, c := range []struct {
				method string
				path   mfed.URLPath
				query  url.Values
				body   any
			}{
				{"GET", path("v1", "state", room), q("event_id", string(m2)), nil},
				{"GET", path("v1", "state_ids", room), q("event_id", string(m2)), nil},
				{"GET", path("v1", "event_auth", room, m2), nil, nil},
				{"GET", path("v1", "backfill", room), q("v", string(m2), "limit", "10"), nil},
				{"POST", path("v1", "get_missing_events", room), nil, map[string]any{"earliest_events": []string{}, "latest_events": []id.EventID{m4}}},
				{"GET", path("v1", "timestamp_to_event", room), q("ts", "0", "dir", "f"), nil},
			} {
				_, err := other.get(ctx, c.method, c.path, c.query, c.body)
				assertMatrixErr(t, err, 403, "M_FORBIDDEN")
			}

			// The server ACL: evil.test is in the room, then denied.
			_, err = evil.get(ctx, "GET", path("v1", "state_ids", room), q("event_id", string(m5)), nil)
			if err != nil {
				t.Fatalf("evil before the ACL: %v", err)
			}
			must(alice.SendStateEvent(ctx, room, event.StateServerACL, "", map[string]any{"allow": []string{"*"}, "deny": []string{"evil.*"}, "allow_ip_literals": false}))
			for _, c := range []struct {
				path  mfed.URLPath
				query url.Values
			}{
				{path("v1", "event", m5), nil},
				{path("v1", "state_ids", room), q("event_id", string(m5))},
				{path("v1", "state", room), q("event_id", string(m5))},
				{path("v1", "event_auth", room, m5), nil},
				{path("v1", "backfill", room), q("v", string(m5), "limit", "5")},
			} {
				_, err := evil.get(ctx, "GET", c.path, c.query, nil)
				assertMatrixErr(t, err, 403, "M_FORBIDDEN", "server ACL")
			}
			if _, err := remote.get(ctx, "GET", path("v1", "event", m5), nil, nil); err != nil {
				t.Fatalf("remote after the ACL: %v", err)
			}

			// Unknown rooms and events.
			_, err = remote.get(ctx, "GET", path("v1", "event", "$nope"), nil, nil)
			assertMatrixErr(t, err, 404, "M_NOT_FOUND")
			_, err = remote.get(ctx, "GET", path("v1", "state_ids", "!nope:hs.test"), q("event_id", string(m2)), nil)
			assertMatrixErr(t, err, 404, "M_NOT_FOUND")
			_, err = remote.get(ctx, "GET", path("v1", "state_ids", room), q("event_id", "$nope"), nil)
			assertMatrixErr(t, err, 404, "M_NOT_FOUND")
			_, err = remote.get(ctx, "GET", path("v1", "event_auth", room, w1), nil, nil) // an event of another room
			assertMatrixErr(t, err, 404, "M_NOT_FOUND")

			// Bad input, per endpoint: 400 with the spec's code, never 500.
			manyV := url.Values{"limit": {"5"}}
			for range 21 {
				manyV.Add("v", string(m2))
			}
			manyLatest := make([]string, 201)
			for i := range manyLatest {
				manyLatest[i] = string(m2)
			}
			for _, c := range []struct {
				method string
				path   mfed.URLPath
				query  url.Values
				body   any
				status int
				code   string
			}{
				{"GET", path("v1", "event", "not-an-event"), nil, nil, 400, "M_INVALID_PARAM"},
				{"GET", path("v1", "state_ids", "not-a-room"), q("event_id", string(m2)), nil, 400, "M_INVALID_PARAM"},
				{"GET", path("v1", "state_ids", room), nil, nil, 400, "M_MISSING_PARAM"},
				{"GET", path("v1", "state_ids", room), q("event_id", "nope"), nil, 400, "M_INVALID_PARAM"},
				{"GET", path("v1", "state", room), q("event_id", strings.Repeat("$", 300)), nil, 400, "M_INVALID_PARAM"},
				{"GET", path("v1", "event_auth", "no-sigil", m2), nil, nil, 400, "M_INVALID_PARAM"},
				{"GET", path("v1", "backfill", room), q("limit", "5"), nil, 400, "M_MISSING_PARAM"},
				{"GET", path("v1", "backfill", room), q("v", string(m2)), nil, 400, "M_MISSING_PARAM"},
				{"GET", path("v1", "backfill", room), q("v", string(m2), "limit", "abc"), nil, 400, "M_INVALID_PARAM"},
				{"GET", path("v1", "backfill", room), q("v", string(m2), "limit", "-5"), nil, 400, "M_INVALID_PARAM"},
				{"GET", path("v1", "backfill", room), q("v", string(m2), "limit", "99999999999999999999999"), nil, 400, "M_INVALID_PARAM"},
				{"GET", path("v1", "backfill", room), q("v", "bad", "limit", "5"), nil, 400, "M_INVALID_PARAM"},
				{"GET", path("v1", "backfill", room), manyV, nil, 400, "M_INVALID_PARAM"},
				{"POST", path("v1", "get_missing_events", room), nil, map[string]any{"latest_events": []id.EventID{m4}}, 400, "M_BAD_JSON"},
				{"POST", path("v1", "get_missing_events", room), nil, map[string]any{"earliest_events": 5, "latest_events": []id.EventID{m4}}, 400, "M_BAD_JSON"},
				{"POST", path("v1", "get_missing_events", room), nil, []int{1}, 400, "M_BAD_JSON"},
				{"POST", path("v1", "get_missing_events", room), nil, map[string]any{"earliest_events": []string{}, "latest_events": []id.EventID{m4}, "limit": 0}, 400, "M_INVALID_PARAM"},
				{"POST", path("v1", "get_missing_events", room), nil, map[string]any{"earliest_events": []string{}, "latest_events": []string{"x"}}, 400, "M_INVALID_PARAM"},
				{"POST", path("v1", "get_missing_events", room), nil, map[string]any{"earliest_events": []string{}, "latest_events": manyLatest}, 400, "M_INVALID_PARAM"},
				{"GET", path("v1", "timestamp_to_event", room), q("ts", "abc", "dir", "f"), nil, 400, "M_INVALID_PARAM"},
				{"GET", path("v1", "timestamp_to_event", room), q("ts", "1", "dir", "x"), nil, 400, "M_INVALID_PARAM"},
				{"GET", path("v1", "query", "directory"), nil, nil, 400, "M_MISSING_PARAM"},
				{"GET", path("v1", "query", "directory"), q("room_alias", "fed"), nil, 400, "M_INVALID_PARAM"},
				{"GET", path("v1", "publicRooms"), q("limit", "-1"), nil, 400, "M_INVALID_PARAM"},
				{"POST", path("v1", "publicRooms"), nil, map[string]any{"limit": "ten"}, 400, "M_BAD_JSON"},
			} {
				_, err := remote.get(ctx, c.method, c.path, c.query, c.body)
				assertMatrixErr(t, err, c.status, c.code)
			}
			// A huge get_missing_events limit is capped, not refused: every
			// event before m5 (the hidden ones redacted).
			got, err = remote.get(ctx, "POST", path("v1", "get_missing_events", room), nil,
				map[string]any{"earliest_events": []string{}, "latest_events": []id.EventID{m5}, "limit": int64(1) << 52})
			if err != nil || len(got.Get("events").Array()) != len(roomEventIDs(t, srv, room, m5))-1 {
				t.Fatalf("/get_missing_events huge limit: %s %v", got.Raw, err)
			}

			// Unsigned requests and bodies that are not JSON.
			for _, p := range []string{"/v1/event/" + url.PathEscape(string(m2)), "/v1/state_ids/" + url.PathEscape(string(room)) + "?event_id=" + url.QueryEscape(string(m2)),
				"/v1/backfill/" + url.PathEscape(string(room)) + "?v=" + url.QueryEscape(string(m2)) + "&limit=5", "/v1/publicRooms", "/v1/query/directory?room_alias=%23fed:hs.test"} {
				resp := must(http.Get(srv.URL + "/_matrix/federation" + p))
				resp.Body.Close()
				if resp.StatusCode != 401 {
					t.Errorf("unsigned %s: %d", p, resp.StatusCode)
				}
			}
			req := must(http.NewRequest("POST", srv.URL+"/_matrix/federation/v1/get_missing_events/"+url.PathEscape(string(room)), bytes.NewReader([]byte("not json"))))
			req.Header.Set("Authorization", `X-Matrix origin="remote.test",destination="hs.test",key="`+string(remote.key.ID)+`",sig="c2ln"`)
			resp := must(http.DefaultClient.Do(req))
			var e struct{ Errcode string }
			_ = json.NewDecoder(resp.Body).Decode(&e)
			resp.Body.Close()
			if resp.StatusCode != 400 || e.Errcode != "M_NOT_JSON" {
				t.Fatalf("not JSON: %d %s", resp.StatusCode, e.Errcode)
			}
		})
	}
}

// checkAuthChain: chain has no duplicates, holds the create event, and is
// closed: every auth event of the events and of the chain is in it.
func checkAuthChain(t *testing.T, srv *testserver.Server, events, chain []string) {
	t.Helper()
	ctx := context.Background()
	in := map[string]bool{}
	for _, x := range chain {
		if in[x] {
			t.Fatalf("auth chain has %s twice", x)
		}
		in[x] = true
	}
	all := must(srv.DB.GetEvents(ctx, append(slices.Clone(events), chain...)))
	create := false
	for _, x := range append(slices.Clone(events), chain...) {
		e := all[x]
		if e == nil {
			t.Fatalf("auth chain names unknown event %s", x)
		}
		create = create || (e.Type == "m.room.create" && in[x])
		for _, a := range gjson.GetBytes(e.JSON, "auth_events").Array() {
			if !in[a.Str] {
				t.Fatalf("auth chain misses %s (an auth event of %s)", a.Str, x)
			}
		}
	}
	if !create && len(chain) > 0 {
		t.Fatalf("auth chain without the create event: %v", chain)
	}
	if len(chain) == 0 {
		t.Fatal("empty auth chain")
	}
}

// eventIDOf finds a served PDU's event ID by matching it to the stored events.
func eventIDOf(t *testing.T, srv *testserver.Server, raw string) string {
	t.Helper()
	p := gjson.Parse(raw)
	var ev storage.Event
	err := srv.DB.QueryRow(context.Background(), `SELECT event_id FROM events WHERE room_id = $1 AND sender = $2 AND origin_server_ts = $3 AND type = $4 AND depth = $5`,
		p.Get("room_id").Str, p.Get("sender").Str, p.Get("origin_server_ts").Int(), p.Get("type").Str, p.Get("depth").Int()).Scan(&ev.EventID)
	if err != nil {
		t.Fatalf("no stored event for %s: %v", raw, err)
	}
	return ev.EventID
}

func pduIDs(t *testing.T, srv *testserver.Server, got gjson.Result) []string {
	return eventsIDs(t, srv, got.Get("pdus"))
}

func eventsIDs(t *testing.T, srv *testserver.Server, list gjson.Result) []string {
	out := []string{}
	for _, p := range list.Array() {
		out = append(out, eventIDOf(t, srv, p.Raw))
	}
	return out
}

// roomEventIDs are the room's events up to and including upTo, in stream order.
func roomEventIDs(t *testing.T, srv *testserver.Server, room id.RoomID, upTo id.EventID) []string {
	t.Helper()
	ctx := context.Background()
	pos := must(srv.DB.GetEvent(ctx, string(upTo))).StreamPos
	rows := must(srv.DB.Query(ctx, `SELECT event_id FROM events WHERE room_id = $1 AND stream_pos <= $2 ORDER BY stream_pos`, string(room), pos))
	defer rows.Close()
	var out []string
	for rows.Next() {
		var x string
		if err := rows.Scan(&x); err != nil {
			t.Fatal(err)
		}
		out = append(out, x)
	}
	return out
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}
