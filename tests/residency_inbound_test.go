package tests

import (
	"context"
	"encoding/json"
	jsonv2 "encoding/json/v2"
	"errors"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/audit"
	"github.com/myelin-chat/myelin/homeserver/testserver"
	"github.com/myelin-chat/myelin/internal/config"
)

// peerOf is a server speaking to a1 as name with key: the federation client
// signing as it, and a fake remote to sign PDUs as it.
type peerOf struct {
	*fakeRemote
	to string
}

func newPeer(t *testing.T, n *residencyNet, srv *testserver.Server, to string) *peerOf {
	t.Helper()
	name := srv.Config.ServerName
	return &peerOf{fakeRemote: &fakeRemote{name: name, key: srv.SigningKey, client: n.net.client(t, name, srv.SigningKey)}, to: to}
}

// call makes a signed request of the peer's destination.
func (p *peerOf) call(ctx context.Context, method string, path mfed.URLPath, query url.Values, body any) (gjson.Result, error) {
	raw, _, err := p.client.MakeFullRequest(ctx, mfed.RequestParams{ServerName: p.to, Method: method, Path: path, Query: query,
		Authenticate: true, RequestJSON: body})
	return gjson.ParseBytes(raw), err
}

// pduOn builds a PDU of the peer's user in roomID on top of a1's copy of the
// room (its extremities, the auth events the type needs), signed by the peer.
func (p *peerOf) pduOn(t *testing.T, srv *testserver.Server, roomID id.RoomID, sender id.UserID, typ string, stateKey *string, content string) (json.RawMessage, id.EventID) {
	t.Helper()
	ctx := context.Background()
	row := must(srv.DB.GetRoom(ctx, string(roomID)))
	version := id.RoomVersion(row.RoomVersion)
	state := must(srv.DB.CurrentStateEvents(ctx, string(roomID)))
	byKey := map[pdu.StateKey]id.EventID{}
	for _, e := range state {
		byKey[pdu.StateKey{Type: e.Type, StateKey: *e.StateKey}] = id.EventID(e.EventID)
	}
	ev := &pdu.PDU{RoomID: roomID, Sender: sender, Type: typ, StateKey: stateKey, Content: []byte(content),
		Depth: row.MaxDepth + 1, OriginServerTS: time.Now().UnixMilli()}
	for _, x := range row.Extremities {
		ev.PrevEvents = append(ev.PrevEvents, id.EventID(x))
	}
	for _, k := range ev.AuthEventSelection(version) {
		if x, ok := byKey[k]; ok {
			ev.AuthEvents = append(ev.AuthEvents, x)
		}
	}
	if err := ev.Sign(version, p.name, p.key.ID, p.key.Priv); err != nil {
		t.Fatal(err)
	}
	evID := must(ev.GetEventID(version))
	return must(jsonv2.Marshal(ev)), evID
}

// wantRefused asserts a 403 M_FORBIDDEN whose error is the policy's reason.
func wantRefused(t *testing.T, what string, err error, reason string) {
	t.Helper()
	var httpErr mautrix.HTTPError
	if !errors.As(err, &httpErr) || httpErr.Response == nil || httpErr.Response.StatusCode != 403 ||
		httpErr.RespError == nil || httpErr.RespError.ErrCode != "M_FORBIDDEN" {
		t.Fatalf("%s: want 403 M_FORBIDDEN, got %v", what, err)
	}
	if !strings.Contains(httpErr.RespError.Err, reason) {
		t.Fatalf("%s: want the policy's reason (%q) in the error, got %q", what, reason, httpErr.RespError.Err)
	}
}

// inboundAuditRecords waits for a1's audit trail to hold a record that ok accepts
// (records are queued) and returns every record.
func inboundAuditRecords(t *testing.T, srv *testserver.Server, ok func([]audit.Record) bool) []audit.Record {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		recs, err := srv.Audit.Records(context.Background(), 1, 100000)
		if err != nil {
			t.Fatal(err)
		}
		if ok(recs) || time.Now().After(deadline) {
			return recs
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func inboundRefusalRecords(recs []audit.Record) []audit.Refusal {
	var out []audit.Refusal
	for _, r := range recs {
		if r.Kind != audit.KindRefusal {
			continue
		}
		var x audit.Refusal
		if json.Unmarshal(r.Body, &x) == nil {
			out = append(out, x)
		}
	}
	return out
}

func servedFlows(recs []audit.Record) []audit.Flow {
	var out []audit.Flow
	for _, r := range recs {
		if r.Kind != audit.KindFlow {
			continue
		}
		var x audit.Flow
		if json.Unmarshal(r.Body, &x) == nil {
			out = append(out, x)
		}
	}
	return out
}

// TestResidencyInbound: b (zone open) acts as an attacker against a1 (zone
// a): every request about a room of zone a (joins, knocks, invites, room
// reads, directory, /send of its PDUs and EDUs) is refused with the policy's
// reason and changes nothing on a1; the same requests about a room of zone
// open succeed; keys and devices are refused to zone open (its share
// settings) and answered to a2; a2 (zone a) may read the zone-a room; the
// audit trail holds the refusals with their rules and a flow record per
// query served.
func TestResidencyInbound(t *testing.T) {
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) {
			n := newResidencyNet(t, backend, residencyPolicy(func(r *config.Residency) {
				r.Zones[1].Share = map[string]bool{"keys": false, "device_keys": false, "profile": false}
			}))
			ctx := ctxT(t)
			a1 := n.a1
			alice := a1.Register(t, "alice")
			roomA := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomAliasName: "a-room", Visibility: "public"})
			roomO := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomAliasName: "open-room", Visibility: "public"})
			space := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomAliasName: "open-space", Visibility: "public",
				CreationContent: map[string]any{"type": "m.space"},
				InitialState: []*event.Event{
					{Type: event.StateSpaceChild, StateKey: ptr(string(roomA)), Content: event.Content{Raw: map[string]any{"via": []string{"a1.test"}}}},
					{Type: event.StateSpaceChild, StateKey: ptr(string(roomO)), Content: event.Content{Raw: map[string]any{"via": []string{"a1.test"}}}},
				}})
			msgA := sendText(t, alice, roomA, "zone a only")
			msgO := sendText(t, alice, roomO, "open to all")
			rowA := must(a1.DB.GetRoom(ctx, string(roomA)))
			versionA := id.RoomVersion(rowA.RoomVersion)
			membersA := must(a1.DB.JoinedMembers(ctx, string(roomA)))

			b := newPeer(t, n, n.b, "a1.test")
			a2 := newPeer(t, n, n.a2, "a1.test")
			mallory := id.UserID("@mallory:b.test")
			path := func(parts ...any) mfed.URLPath { return mfed.URLPath(parts) }
			vers := url.Values{}
			for v := 1; v <= 12; v++ {
				vers.Add("ver", strconv.Itoa(v))
			}
			const zoneA = "the room is resident in zone a"
			const noKeys = "does not let"

			// Joins and knocks of the zone-a room: refused; of the open room: served.
			_, err := b.call(ctx, "GET", path("v1", "make_join", roomA, mallory), vers, nil)
			wantRefused(t, "make_join A", err, zoneA)
			forged, forgedID := b.pduOn(t, a1, roomA, mallory, "m.room.member", ptr(string(mallory)), `{"membership":"join"}`)
			_, err = b.call(ctx, "PUT", path("v2", "send_join", roomA, forgedID), nil, forged)
			wantRefused(t, "send_join v2 A", err, zoneA)
			_, err = b.call(ctx, "PUT", path("v1", "send_join", roomA, forgedID), nil, forged)
			wantRefused(t, "send_join v1 A", err, zoneA)
			_, err = b.call(ctx, "GET", path("v1", "make_knock", roomA, mallory), vers, nil)
			wantRefused(t, "make_knock A", err, zoneA)
			_, err = b.call(ctx, "PUT", path("v1", "send_knock", roomA, forgedID), nil, forged)
			wantRefused(t, "send_knock A", err, zoneA)
			_, err = b.call(ctx, "GET", path("v1", "make_leave", roomA, mallory), nil, nil)
			wantRefused(t, "make_leave A", err, zoneA)
			invite, inviteID := b.pduOn(t, a1, roomA, mallory, "m.room.member", ptr(string(alice.UserID)), `{"membership":"invite"}`)
			_, err = b.call(ctx, "PUT", path("v2", "invite", roomA, inviteID), nil,
				map[string]any{"room_version": versionA, "event": invite, "invite_room_state": []any{}})
			wantRefused(t, "invite v2 A", err, zoneA)

			tmpl, err := b.call(ctx, "GET", path("v1", "make_join", roomO, mallory), vers, nil)
			if err != nil {
				t.Fatalf("make_join of the open room: %v", err)
			}
			versionO := id.RoomVersion(tmpl.Get("room_version").Str)
			join, joinID := b.signTemplate(t, versionO, tmpl.Get("event").Raw, nil)
			if _, err := b.call(ctx, "PUT", path("v2", "send_join", roomO, joinID), nil, json.RawMessage(join)); err != nil {
				t.Fatalf("send_join of the open room: %v", err)
			}
			if !slices.Contains(must(a1.DB.JoinedMembers(ctx, string(roomO))), string(mallory)) {
				t.Fatal("mallory's join of the open room was not stored")
			}

			// Room reads: refused for A (before "not in the room": the
			// policy's reason), served for the open room b is now in.
			reads := []struct {
				name, method string
				path         func(room id.RoomID, ev id.EventID) mfed.URLPath
				query        func(ev id.EventID) url.Values
				body         func(ev id.EventID) any
			}{
				{"state", "GET", func(r id.RoomID, _ id.EventID) mfed.URLPath { return path("v1", "state", r) },
					func(ev id.EventID) url.Values { return url.Values{"event_id": {string(ev)}} }, nil},
				{"state_ids", "GET", func(r id.RoomID, _ id.EventID) mfed.URLPath { return path("v1", "state_ids", r) },
					func(ev id.EventID) url.Values { return url.Values{"event_id": {string(ev)}} }, nil},
				{"event", "GET", func(_ id.RoomID, ev id.EventID) mfed.URLPath { return path("v1", "event", ev) }, nil, nil},
				{"event_auth", "GET", func(r id.RoomID, ev id.EventID) mfed.URLPath { return path("v1", "event_auth", r, ev) }, nil, nil},
				{"backfill", "GET", func(r id.RoomID, _ id.EventID) mfed.URLPath { return path("v1", "backfill", r) },
					func(ev id.EventID) url.Values { return url.Values{"v": {string(ev)}, "limit": {"10"}} }, nil},
				{"get_missing_events", "POST", func(r id.RoomID, _ id.EventID) mfed.URLPath { return path("v1", "get_missing_events", r) }, nil,
					func(ev id.EventID) any {
						return map[string]any{"earliest_events": []string{}, "latest_events": []string{string(ev)}, "limit": 10}
					}},
				{"timestamp_to_event", "GET", func(r id.RoomID, _ id.EventID) mfed.URLPath { return path("v1", "timestamp_to_event", r) },
					func(id.EventID) url.Values {
						return url.Values{"ts": {strconv.FormatInt(time.Now().UnixMilli(), 10)}, "dir": {"b"}}
					}, nil},
			}
			for _, rd := range reads {
				for _, c := range []struct {
					room id.RoomID
					ev   id.EventID
				}{{roomA, msgA}, {roomO, msgO}} {
					var q url.Values
					var body any
					if rd.query != nil {
						q = rd.query(c.ev)
					}
					if rd.body != nil {
						body = rd.body(c.ev)
					}
					_, err := b.call(ctx, rd.method, rd.path(c.room, c.ev), q, body)
					if c.room == roomA {
						wantRefused(t, rd.name+" A", err, zoneA)
					} else if err != nil {
						t.Fatalf("%s of the open room: %v", rd.name, err)
					}
				}
			}

			// Directory: aliases, public rooms, hierarchy.
			_, err = b.call(ctx, "GET", path("v1", "query", "directory"), url.Values{"room_alias": {"#a-room:a1.test"}}, nil)
			wantRefused(t, "query/directory A", err, zoneA)
			got, err := b.call(ctx, "GET", path("v1", "query", "directory"), url.Values{"room_alias": {"#open-room:a1.test"}}, nil)
			if err != nil || got.Get("room_id").Str != string(roomO) {
				t.Fatalf("query/directory of the open room: %v %s", err, got.Raw)
			}
			listed := func(p *peerOf) []string {
				t.Helper()
				got, err := p.call(ctx, "GET", path("v1", "publicRooms"), nil, nil)
				if err != nil {
					t.Fatalf("publicRooms for %s: %v", p.name, err)
				}
				var ids []string
				for _, r := range got.Get("chunk").Array() {
					ids = append(ids, r.Get("room_id").Str)
				}
				return ids
			}
			if ids := listed(b); slices.Contains(ids, string(roomA)) || !slices.Contains(ids, string(roomO)) {
				t.Fatalf("publicRooms for b: %v, want the open room and not %s", ids, roomA)
			}
			if ids := listed(a2); !slices.Contains(ids, string(roomA)) {
				t.Fatalf("publicRooms for a2: %v, want %s", ids, roomA)
			}
			_, err = b.call(ctx, "GET", path("v1", "hierarchy", roomA), nil, nil)
			wantRefused(t, "hierarchy A", err, zoneA)
			h, err := b.call(ctx, "GET", path("v1", "hierarchy", space), nil, nil)
			if err != nil {
				t.Fatalf("hierarchy of the open space: %v", err)
			}
			if strings.Contains(h.Raw, string(roomA)) || !strings.Contains(h.Raw, string(roomO)) {
				t.Fatalf("hierarchy of the open space for b names the zone-a room or misses the open one: %s", h.Raw)
			}
			if h, err := a2.call(ctx, "GET", path("v1", "hierarchy", space), nil, nil); err != nil || !strings.Contains(h.Raw, string(roomA)) {
				t.Fatalf("hierarchy of the open space for a2: %v %s", err, h.Raw)
			}

			// Devices and keys: zone open may not have them; zone a may.
			_, err = b.call(ctx, "GET", path("v1", "user", "devices", alice.UserID), nil, nil)
			wantRefused(t, "user/devices", err, noKeys)
			_, err = b.call(ctx, "POST", path("v1", "user", "keys", "query"), nil, map[string]any{"device_keys": map[string]any{alice.UserID.String(): []string{}}})
			wantRefused(t, "user/keys/query", err, noKeys)
			_, err = b.call(ctx, "POST", path("v1", "user", "keys", "claim"), nil,
				map[string]any{"one_time_keys": map[string]any{alice.UserID.String(): map[string]string{string(alice.DeviceID): "signed_curve25519"}}})
			wantRefused(t, "user/keys/claim", err, noKeys)
			if _, err := a2.call(ctx, "GET", path("v1", "user", "devices", alice.UserID), nil, nil); err != nil {
				t.Fatalf("user/devices for a2: %v", err)
			}
			if _, err := a2.call(ctx, "POST", path("v1", "user", "keys", "query"), nil, map[string]any{"device_keys": map[string]any{alice.UserID.String(): []string{}}}); err != nil {
				t.Fatalf("user/keys/query for a2: %v", err)
			}

			// Invites to rooms a1 holds nothing of: classified from the
			// stripped state (not recorded); a room of zone a (the default)
			// refused, one whose alias puts it in zone open accepted.
			hidden := id.RoomID("!hidden:b.test")
			inv, invID := b.invitePDU(t, "10", hidden, mallory, alice.UserID, nil)
			_, err = b.call(ctx, "PUT", path("v2", "invite", hidden, invID), nil,
				map[string]any{"room_version": "10", "event": inv, "invite_room_state": strippedOf(mallory, "10", "Hidden")})
			wantRefused(t, "invite v2 to a zone-a room hosted on b", err, zoneA)
			openB := id.RoomID("!openb:b.test")
			inv, invID = b.invitePDU(t, "10", openB, mallory, alice.UserID, nil)
			stripped := append(strippedOf(mallory, "10", "Open on b"),
				map[string]any{"type": "m.room.canonical_alias", "state_key": "", "sender": mallory, "content": map[string]any{"alias": "#open-b:b.test"}})
			if _, err := b.call(ctx, "PUT", path("v2", "invite", openB, invID), nil,
				map[string]any{"room_version": "10", "event": inv, "invite_room_state": stripped}); err != nil {
				t.Fatalf("invite to an open room hosted on b: %v", err)
			}
			if _, err := a1.DB.GetRoomResidency(ctx, string(openB)); err == nil {
				t.Fatal("an invite's stripped state was recorded as the room's zone")
			}

			// Profiles: likewise (the transport's question, with its reason).
			_, err = b.call(ctx, "GET", path("v1", "query", "profile"), url.Values{"user_id": {alice.UserID.String()}}, nil)
			wantRefused(t, "query/profile", err, noKeys)
			if _, err := a2.call(ctx, "GET", path("v1", "query", "profile"), url.Values{"user_id": {alice.UserID.String()}}, nil); err != nil {
				t.Fatalf("query/profile for a2: %v", err)
			}

			// a2, in zone a, may join the zone-a room.
			if _, err := a2.call(ctx, "GET", path("v1", "make_join", roomA, "@dave:a2.test"), vers, nil); err != nil {
				t.Fatalf("make_join of the zone-a room for a2: %v", err)
			}

			// /send: the zone-a room's PDU is refused with the reason, the open
			// room's accepted; typing and receipts of the zone-a room dropped.
			pduA, pduAID := b.pduOn(t, a1, roomA, mallory, "m.room.message", nil, `{"msgtype":"m.text","body":"intrusion"}`)
			pduO, pduOID := b.pduOn(t, a1, roomO, mallory, "m.room.message", nil, `{"msgtype":"m.text","body":"hello"}`)
			now := time.Now().UnixMilli()
			res, err := b.call(ctx, "PUT", path("v1", "send", "txn-residency-1"), nil, map[string]any{
				"origin": "b.test", "origin_server_ts": now, "pdus": []json.RawMessage{pduA, pduO},
				"edus": []any{
					map[string]any{"edu_type": "m.typing", "content": map[string]any{"room_id": roomA, "user_id": mallory, "typing": true}},
					map[string]any{"edu_type": "m.receipt", "content": map[string]any{
						string(roomA): map[string]any{"m.read": map[string]any{string(mallory): map[string]any{"event_ids": []string{string(msgA)}, "data": map[string]any{"ts": now}}}},
						string(roomO): map[string]any{"m.read": map[string]any{string(mallory): map[string]any{"event_ids": []string{string(msgO)}, "data": map[string]any{"ts": now}}}},
					}},
				},
			})
			if err != nil {
				t.Fatalf("/send: %v", err)
			}
			if e := res.Get("pdus").Get(gjson.Escape(string(pduAID)) + ".error").Str; !strings.Contains(e, zoneA) {
				t.Fatalf("/send: the zone-a PDU's result %q, want the policy's reason (%s)", e, res.Raw)
			}
			if e := res.Get("pdus").Get(gjson.Escape(string(pduOID)) + ".error").Str; e != "" {
				t.Fatalf("/send: the open room's PDU was refused: %q", e)
			}
			if got, _ := a1.DB.GetEvents(ctx, []string{string(pduAID), string(forgedID), string(inviteID)}); len(got) != 0 {
				t.Fatalf("a1 stored b's events of the zone-a room: %v", got)
			}
			if _, ok := must(a1.DB.GetEvents(ctx, []string{string(pduOID)}))[string(pduOID)]; !ok {
				t.Fatal("a1 did not store b's event of the open room")
			}

			// Nothing changed in the zone-a room.
			after := must(a1.DB.GetRoom(ctx, string(roomA)))
			if after.MaxDepth != rowA.MaxDepth || !slices.Equal(after.Extremities, rowA.Extremities) {
				t.Fatalf("the zone-a room's timeline changed: depth %d → %d, extremities %v → %v", rowA.MaxDepth, after.MaxDepth, rowA.Extremities, after.Extremities)
			}
			if got := must(a1.DB.JoinedMembers(ctx, string(roomA))); !slices.Equal(got, membersA) {
				t.Fatalf("the zone-a room's members changed: %v → %v", membersA, got)
			}

			// The audit trail: the refusals with their rules, inbound; the
			// queries served as flows.
			want := map[string]bool{"make_join": false, "send_join": false, "make_knock": false, "send_knock": false, "make_leave": false,
				"invite": false, "state": false, "state_ids": false, "event": false, "event_auth": false, "backfill": false,
				"get_missing_events": false, "timestamp_to_event": false, "query/directory": false, "hierarchy": false,
				"user/devices": false, "user/keys/query": false, "user/keys/claim": false, "send": false, "profile": false}
			recs := inboundAuditRecords(t, a1, func(recs []audit.Record) bool {
				for _, r := range inboundRefusalRecords(recs) {
					if r.Purpose == "send" {
						return true
					}
				}
				return false
			})
			for _, r := range inboundRefusalRecords(recs) {
				if r.Server != "b.test" || r.Direction != audit.Inbound {
					continue
				}
				if _, ok := want[r.Purpose]; ok {
					want[r.Purpose] = true
				}
				switch r.Purpose {
				case "state":
					if r.Rule != "residency.zones.a.includes" || r.Room != string(roomA) || !strings.Contains(r.Reason, zoneA) {
						t.Errorf("state refusal: %+v", r)
					}
				case "user/keys/query":
					if r.Rule != "residency.zones.open.share.keys" {
						t.Errorf("keys refusal: %+v", r)
					}
				case "send":
					if r.Rooms[string(roomA)] != 1 || r.EDUs["m.typing"] != 1 || r.EDUs["m.receipt"] != 1 || r.Rooms[string(roomO)] != 0 {
						t.Errorf("send refusal: %+v", r)
					}
				}
			}
			for p, seen := range want {
				if !seen {
					t.Errorf("no inbound refusal record for %s", p)
				}
			}
			served := map[string]bool{}
			for _, f := range servedFlows(recs) {
				if f.Server == "b.test" && f.Direction == audit.Outbound && f.Endpoint != "" {
					served[f.Endpoint] = true
					if f.Endpoint == "state" && f.Rooms[string(roomO)] == 0 {
						t.Errorf("state flow: %+v", f)
					}
				}
			}
			for _, e := range []string{"state", "backfill", "event", "get_missing_events", "send_join", "query/directory", "publicRooms", "hierarchy"} {
				if !served[e] {
					t.Errorf("no flow record of %s served to b (have %v)", e, served)
				}
			}
			toA2 := map[string]bool{}
			for _, f := range servedFlows(recs) {
				if f.Server == "a2.test" && f.Direction == audit.Outbound {
					toA2[f.Endpoint] = true
				}
			}
			for _, e := range []string{"query/profile", "user/devices", "user/keys/query", "publicRooms"} {
				if !toA2[e] {
					t.Errorf("no flow record of %s served to a2 (have %v)", e, toA2)
				}
			}
		})
	}
}

// TestResidencyInboundUnlisted: a server in no zone is refused at
// authentication with a reason naming it, and however many requests it
// makes, the audit trail holds one refusal of it per minute.
func TestResidencyInboundUnlisted(t *testing.T) {
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) {
			n := newResidencyNet(t, backend, residencyPolicy(func(r *config.Residency) {
				r.Zones, r.Rooms.Rules = r.Zones[:1], nil
			}))
			ctx := ctxT(t)
			b := newPeer(t, n, n.b, "a1.test")
			for i := range 5 {
				_, err := b.call(ctx, "GET", mfed.URLPath{"v1", "publicRooms"}, nil, nil)
				wantRefused(t, "publicRooms #"+strconv.Itoa(i), err, "b.test is in no zone of this server's data-localization policy")
			}
			_, err := b.call(ctx, "GET", mfed.URLPath{"v1", "query", "profile"}, url.Values{"user_id": {"@x:a1.test"}}, nil)
			wantRefused(t, "profile", err, "b.test is in no zone")
			fromB := func(recs []audit.Record) bool {
				for _, r := range inboundRefusalRecords(recs) {
					if r.Server == "b.test" {
						return true
					}
				}
				return false
			}
			inboundAuditRecords(t, n.a1, fromB)
			time.Sleep(300 * time.Millisecond) // whatever else was queued is written by now
			recs := inboundAuditRecords(t, n.a1, fromB)
			var got []audit.Refusal
			for _, r := range inboundRefusalRecords(recs) {
				if r.Server == "b.test" {
					got = append(got, r)
				}
			}
			if len(got) != 1 || got[0].Purpose != "inbound" || got[0].Rule != "residency.unlisted_server" || got[0].Direction != audit.Inbound {
				t.Fatalf("refusal records of b: %+v, want one (inbound, residency.unlisted_server)", got)
			}
		})
	}
}
