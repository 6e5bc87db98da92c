package tests

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix"
	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/homeserver/testserver"
	"github.com/myelin-chat/myelin/internal/config"
	"github.com/myelin-chat/myelin/storage"
)

// creationPolicy is a single server's policy (hs.test, in zone eu): rooms
// are in eu unless their alias is #us-* (zone us); any creator may choose
// zone open (every server).
func creationPolicy(extra ...func(*config.Residency)) func(*config.Config) {
	return func(cfg *config.Config) {
		cfg.Residency = config.Residency{Enabled: true, Zone: "eu",
			Zones: []config.ResidencyZone{
				{Name: "eu", Servers: []string{"*.eu.example"}},
				{Name: "us", Servers: []string{"*.us.example"}},
				{Name: "open", Servers: []string{"*"}, Includes: []string{"eu", "us"}},
			},
			Rooms: config.ResidencyRooms{DefaultZone: "eu", MayChoose: []string{"open"},
				Rules: []config.ResidencyRule{{Zone: "us", Aliases: []string{"#us-*"}}}},
			TrustList: config.TrustList{Refresh: cfg.Residency.TrustList.Refresh},
		}
		for _, f := range extra {
			f(&cfg.Residency)
		}
	}
}

func startCreationServer(t *testing.T, backend string, configure ...func(*config.Config)) *testserver.Server {
	t.Helper()
	return testserver.Start(t, backend, testserver.Options{ServerName: "hs.test", Configure: func(cfg *config.Config) {
		for _, f := range configure {
			f(cfg)
		}
	}})
}

// stateOf reads a room's state event as c (its content; Status 404 when absent).
func stateOf(t *testing.T, c *mautrix.Client, room id.RoomID, evType string) rawResp {
	t.Helper()
	return clientCall(t, c, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(string(room))+"/state/"+evType+"/", nil)
}

// pinnedZone is the zone in a room's m.room.create content.
func pinnedZone(t *testing.T, c *mautrix.Client, room id.RoomID) string {
	t.Helper()
	r := stateOf(t, c, room, "m.room.create")
	if r.Status != 200 {
		t.Fatalf("m.room.create of %s: %d %s", room, r.Status, r.Raw)
	}
	return gjson.Get(r.Raw, `org\.myelin\.residency.zone`).String()
}

// aclAllow is the allow list of a room's m.room.server_acl (nil when the room has none).
func aclAllow(t *testing.T, c *mautrix.Client, room id.RoomID) []string {
	t.Helper()
	r := stateOf(t, c, room, "m.room.server_acl")
	if r.Status == 404 {
		return nil
	}
	if r.Status != 200 {
		t.Fatalf("m.room.server_acl of %s: %d %s", room, r.Status, r.Raw)
	}
	if gjson.Get(r.Raw, "allow_ip_literals").Bool() || gjson.Get(r.Raw, "deny.#").Int() != 0 {
		t.Errorf("m.room.server_acl of %s: %s, want no IP literals and no deny", room, r.Raw)
	}
	out := []string{}
	for _, p := range gjson.Get(r.Raw, "allow").Array() {
		out = append(out, p.String())
	}
	return out
}

func createRaw(t *testing.T, c *mautrix.Client, body map[string]any) rawResp {
	t.Helper()
	return clientCall(t, c, "POST", "/_matrix/client/v3/createRoom", body)
}

func joinedCount(t *testing.T, c *mautrix.Client) int {
	t.Helper()
	resp, err := c.JoinedRooms(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return len(resp.JoinedRooms)
}

// TestResidencyCreationPinsZone: a new room's zone is decided by the rules
// (default zone, a rule by alias, a permitted choice), written by the server
// into m.room.create's content, recorded, and mirrored into
// m.room.server_acl; a choice the rules do not permit, a malformed one, and
// every client attempt to set the zone itself are refused with nothing
// created; the ACL cannot be widened beyond the zone later; an upgrade
// keeps the zone and the ACL.
func TestResidencyCreationPinsZone(t *testing.T) {
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) {
			srv := startCreationServer(t, backend, creationPolicy())
			alice := srv.Register(t, "alice")
			ctx := context.Background()
			euACL := []string{"*.eu.example", "hs.test"}

			create := func(body map[string]any) id.RoomID {
				t.Helper()
				r := createRaw(t, alice, body)
				if r.Status != 200 {
					t.Fatalf("createRoom %v: %d %s", body, r.Status, r.Raw)
				}
				return id.RoomID(r.Body["room_id"].(string))
			}
			recorded := func(room id.RoomID) storage.RoomResidency {
				t.Helper()
				rec, err := srv.DB.GetRoomResidency(ctx, string(room))
				if err != nil {
					t.Fatalf("room_residency of %s: %v", room, err)
				}
				return rec
			}

			// The default zone; a zone a client wrote into initial_state's
			// ACL does not survive: the server's ACL comes after.
			plain := create(map[string]any{"initial_state": []any{map[string]any{"type": "m.room.server_acl", "state_key": "",
				"content": map[string]any{"allow": []string{"*"}}}}})
			if z := pinnedZone(t, alice, plain); z != "eu" {
				t.Fatalf("default room pinned in zone %q, want eu", z)
			}
			if got := aclAllow(t, alice, plain); !slices.Equal(got, euACL) {
				t.Fatalf("default room's ACL allows %v, want %v", got, euACL)
			}
			if rec := recorded(plain); rec.Zone != "eu" || rec.Source != "created" {
				t.Fatalf("recorded %+v, want zone eu, created", rec)
			}

			// A rule by alias.
			us := create(map[string]any{"room_alias_name": "us-team"})
			if z := pinnedZone(t, alice, us); z != "us" {
				t.Fatalf("#us-team pinned in zone %q, want us", z)
			}
			if got := aclAllow(t, alice, us); !slices.Equal(got, []string{"*.us.example", "hs.test"}) {
				t.Fatalf("#us-team's ACL allows %v", got)
			}
			if rec := recorded(us); rec.Zone != "us" || rec.Rule != "residency.rooms.rules[0]" {
				t.Fatalf("recorded %+v, want zone us by rules[0]", rec)
			}

			// A permitted choice: zone open admits every server, so no ACL.
			open := create(map[string]any{"creation_content": map[string]any{"org.myelin.residency": map[string]any{"zone": "open"}}})
			if z := pinnedZone(t, alice, open); z != "open" {
				t.Fatalf("chosen open room pinned in zone %q", z)
			}
			if got := aclAllow(t, alice, open); got != nil {
				t.Fatalf("open room has an ACL allowing %v, want none", got)
			}

			// Refused: nothing created.
			before := joinedCount(t, alice)
			for _, c := range []struct {
				name   string
				body   map[string]any
				status int
				code   string
			}{
				{"forbidden choice", map[string]any{"creation_content": map[string]any{"org.myelin.residency": map[string]any{"zone": "us"}}}, 403, "M_FORBIDDEN"},
				{"undefined zone", map[string]any{"creation_content": map[string]any{"org.myelin.residency": map[string]any{"zone": "mars"}}}, 403, "M_FORBIDDEN"},
				{"not an object", map[string]any{"creation_content": map[string]any{"org.myelin.residency": "eu"}}, 400, "M_BAD_JSON"},
				{"zone not a string", map[string]any{"creation_content": map[string]any{"org.myelin.residency": map[string]any{"zone": 5}}}, 400, "M_BAD_JSON"},
				{"unknown key", map[string]any{"creation_content": map[string]any{"org.myelin.residency": map[string]any{"zone": "eu", "servers": []string{"*"}}}}, 400, "M_INVALID_PARAM"},
				{"state event", map[string]any{"initial_state": []any{map[string]any{"type": "org.myelin.residency", "state_key": "",
					"content": map[string]any{"zone": "open"}}}}, 403, "M_FORBIDDEN"},
			} {
				r := createRaw(t, alice, c.body)
				if r.Status != c.status || r.errcode() != c.code {
					t.Errorf("%s: %d %s, want %d %s", c.name, r.Status, r.Raw, c.status, c.code)
				}
				if c.name == "forbidden choice" {
					if msg, _ := r.Body["error"].(string); !strings.Contains(msg, "eu") || !strings.Contains(msg, "open") {
						t.Errorf("forbidden choice: error %q does not list the zones alice may choose (eu, open)", msg)
					}
				}
			}
			if after := joinedCount(t, alice); after != before {
				t.Fatalf("refused createRooms created %d rooms", after-before)
			}

			// Later state: the zone cannot be set, the ACL not widened.
			put := func(room id.RoomID, evType string, content any) rawResp {
				return clientCall(t, alice, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(string(room))+"/state/"+evType+"/", content)
			}
			for _, c := range []struct {
				evType  string
				content any
				status  int
			}{
				{"org.myelin.residency", map[string]any{"zone": "open"}, 403},
				{"m.room.server_acl", map[string]any{"allow": []string{"*"}}, 403},
				{"m.room.server_acl", map[string]any{"allow": []string{"hs.test", "x.us.example"}}, 403},
				{"m.room.server_acl", map[string]any{"allow": []string{"hs.test", "y.eu.example", "*.eu.example"}}, 200},
			} {
				if r := put(plain, c.evType, c.content); r.Status != c.status {
					t.Errorf("PUT %s %v in an eu room: %d %s, want %d", c.evType, c.content, r.Status, r.Raw, c.status)
				} else if c.status == 403 && r.errcode() != "M_FORBIDDEN" {
					t.Errorf("PUT %s: %s, want M_FORBIDDEN", c.evType, r.Raw)
				}
			}
			if r := put(open, "m.room.server_acl", map[string]any{"allow": []string{"*"}}); r.Status != 200 {
				t.Errorf("ACL allowing * in an open room: %d %s", r.Status, r.Raw)
			}

			// An upgrade keeps the zone and the ACL.
			r := clientCall(t, alice, "POST", "/_matrix/client/v3/rooms/"+url.PathEscape(string(us))+"/upgrade", map[string]any{"new_version": "12"})
			if r.Status != 200 {
				t.Fatalf("upgrade: %d %s", r.Status, r.Raw)
			}
			next := id.RoomID(r.Body["replacement_room"].(string))
			if z := pinnedZone(t, alice, next); z != "us" {
				t.Fatalf("replacement room pinned in zone %q, want us", z)
			}
			if got := aclAllow(t, alice, next); !slices.Equal(got, []string{"*.us.example", "hs.test"}) {
				t.Fatalf("replacement room's ACL allows %v", got)
			}
			if rec := recorded(next); rec.Zone != "us" {
				t.Fatalf("replacement recorded %+v, want zone us", rec)
			}
		})
	}
}

// TestResidencyCreationPolicyOff: without the policy, a client's
// org.myelin.residency in creation_content is dropped (no client claims a
// zone that a later policy would honour) and no ACL is added.
func TestResidencyCreationPolicyOff(t *testing.T) {
	srv := startCreationServer(t, "sqlite")
	alice := srv.Register(t, "alice")
	r := createRaw(t, alice, map[string]any{"creation_content": map[string]any{"org.myelin.residency": map[string]any{"zone": "open"}}})
	if r.Status != 200 {
		t.Fatalf("createRoom: %d %s", r.Status, r.Raw)
	}
	room := id.RoomID(r.Body["room_id"].(string))
	if c := stateOf(t, alice, room, "m.room.create"); gjson.Get(c.Raw, `org\.myelin\.residency`).Exists() {
		t.Fatalf("m.room.create kept the client's zone: %s", c.Raw)
	}
	if got := aclAllow(t, alice, room); got != nil {
		t.Fatalf("ACL %v without a policy", got)
	}
}

// TestResidencyACLEnforcedByPartner: the ACL written at creation is the
// protocol's, so a partner server that runs no residency policy enforces
// it: a2 (no policy) refuses b's make_join of a zone-a room it is in, while
// it lets b join an open room (no ACL). And a1 hides the users of zone
// open (user_directory_visible false) from its directory search, not a2's.
func TestResidencyACLEnforcedByPartner(t *testing.T) {
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) {
			n := newFedNet(t, "a1.test", "a2.test", "b.test")
			a1 := n.start(t, backend, "a1.test", residencyPolicy(func(r *config.Residency) {
				hidden := false
				r.Zones[1].UserDirectoryVisible = &hidden
			}))
			a2 := n.start(t, backend, "a2.test")
			b := n.start(t, backend, "b.test")
			ctx := ctxT(t)
			alice := a1.Register(t, "alice")
			bob := a2.Register(t, "bob")
			carol := b.Register(t, "carol")

			roomA := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
			roomOpen := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomAliasName: "open-lobby"})
			if got := aclAllow(t, alice, roomA); !slices.Equal(got, []string{"a1.test", "a2.test"}) {
				t.Fatalf("zone a room's ACL allows %v", got)
			}
			for _, room := range []id.RoomID{roomA, roomOpen} {
				if _, err := bob.JoinRoom(ctx, string(room), &mautrix.ReqJoinRoom{Via: []string{"a1.test"}}); err != nil {
					t.Fatalf("bob (a2) joins %s via a1: %v", room, err)
				}
			}
			fromB := n.client(t, "b.test", b.SigningKey)
			makeJoin := func(room id.RoomID) error {
				_, err := fromB.MakeJoin(ctx, &mfed.ReqMakeJoin{RoomID: room, UserID: carol.UserID, Via: "a2.test",
					SupportedVersions: []id.RoomVersion{"10", "11", "12"}})
				return err
			}
			if err := makeJoin(roomOpen); err != nil {
				t.Fatalf("b's make_join of the open room via a2: %v, want a template", err)
			}
			err := makeJoin(roomA)
			var he mautrix.HTTPError
			if errStatus(err) != http.StatusForbidden || !errors.As(err, &he) || he.RespError == nil || !strings.Contains(he.RespError.Err, "ACL") {
				t.Fatalf("b's make_join of the zone-a room via a2 (no policy): %v, want 403 by the server ACL", err)
			}

			// Directory scope on a1: carol (b, zone open) shares the open room
			// with alice but is not listed; bob (a2, zone a) is.
			if _, err := carol.JoinRoom(ctx, string(roomOpen), &mautrix.ReqJoinRoom{Via: []string{"a1.test"}}); err != nil {
				t.Fatalf("carol (b) joins the open room via a1: %v", err)
			}
			search := func(term string) []string {
				resp, err := alice.SearchUserDirectory(ctx, term, 10)
				if err != nil {
					t.Fatal(err)
				}
				var ids []string
				for _, u := range resp.Results {
					ids = append(ids, u.UserID.String())
				}
				return ids
			}
			if got := search("bob"); !slices.Contains(got, bob.UserID.String()) {
				t.Fatalf("alice's search for bob: %v, want bob (zone a is listed)", got)
			}
			if got := search("carol"); len(got) != 0 {
				t.Fatalf("alice's search for carol: %v, want nobody (zone open's users are not listed)", got)
			}
			// b lists carol's fellow members as usual (no policy there).
			if resp, err := carol.SearchUserDirectory(ctx, "alice", 10); err != nil || len(resp.Results) != 1 {
				t.Fatalf("carol's search for alice on b: %+v, %v", resp, err)
			}
		})
	}
}

// TestResidencyZoneRetentionDefault: a zone's retention is the default
// policy of its rooms: messages of a room in zone "short" (max_lifetime 1s)
// are purged on schedule, those of a default-zone room are kept, and a
// short-zone room with its own m.room.retention keeps its own.
func TestResidencyZoneRetentionDefault(t *testing.T) {
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) {
			srv := startCreationServer(t, backend, retentionConfig, creationPolicy(func(r *config.Residency) {
				r.Zones = append(r.Zones, config.ResidencyZone{Name: "short", Servers: []string{"*.short.example"},
					Retention: &config.RetentionPolicy{MaxLifetime: config.Duration{Duration: time.Second}}})
				r.Rooms.Rules = append(r.Rooms.Rules, config.ResidencyRule{Zone: "short", Aliases: []string{"#short-*"}})
			}))
			alice := srv.Register(t, "alice")
			short := createRoom(t, alice, &mautrix.ReqCreateRoom{RoomAliasName: "short-lived"})
			r := createRaw(t, alice, map[string]any{"room_alias_name": "short-own", "initial_state": []any{map[string]any{
				"type": "m.room.retention", "state_key": "", "content": map[string]any{"max_lifetime": time.Hour.Milliseconds()}}}})
			if r.Status != 200 {
				t.Fatalf("createRoom: %d %s", r.Status, r.Raw)
			}
			own := id.RoomID(r.Body["room_id"].(string))
			plain := createRoom(t, alice, nil)
			for _, room := range []id.RoomID{short, own, plain} {
				for i := 0; i < 3; i++ {
					sendText(t, alice, room, "message")
				}
			}
			deadline := time.Now().Add(15 * time.Second)
			for purgedCount(t, srv, short) < 3 {
				if time.Now().After(deadline) {
					t.Fatalf("the short-zone room's messages were not purged (%d purged)", purgedCount(t, srv, short))
				}
				time.Sleep(100 * time.Millisecond)
			}
			time.Sleep(300 * time.Millisecond) // a few more runs
			if n := purgedCount(t, srv, plain); n != 0 {
				t.Fatalf("%d messages of a default-zone room purged, want none", n)
			}
			if n := purgedCount(t, srv, own); n != 0 {
				t.Fatalf("%d messages of a short-zone room with its own 1h policy purged, want none", n)
			}
		})
	}
}

// TestResidencyClientIPRetention: our zone's client_ip_retention clears the
// IP of a device last seen longer ago; a device seen now keeps its IP.
func TestResidencyClientIPRetention(t *testing.T) {
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) {
			srv := startCreationServer(t, backend, creationPolicy(func(r *config.Residency) {
				r.Zones[0].ClientIPRetention = config.Duration{Duration: time.Minute}
			}))
			old := srv.Register(t, "alice")
			now, err := loginPassword(t, srv, "alice", "password-alice", "")
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			if err := srv.DB.TouchDevice(ctx, old.UserID.String(), old.DeviceID.String(),
				time.Now().Add(-2*time.Minute).UnixMilli(), "203.0.113.9"); err != nil {
				t.Fatal(err)
			}
			ips := func() map[id.DeviceID]string {
				resp, err := now.GetDevicesInfo(ctx)
				if err != nil {
					t.Fatal(err)
				}
				out := map[id.DeviceID]string{}
				for _, d := range resp.Devices {
					out[d.DeviceID] = d.LastSeenIP
				}
				return out
			}
			deadline := time.Now().Add(15 * time.Second)
			for ips()[old.DeviceID] != "" {
				if time.Now().After(deadline) {
					t.Fatalf("the old device's IP was kept: %v", ips())
				}
				time.Sleep(200 * time.Millisecond)
			}
			if got := ips()[now.DeviceID]; got == "" {
				t.Fatalf("the device seen now lost its IP: %v", ips())
			}
		})
	}
}
