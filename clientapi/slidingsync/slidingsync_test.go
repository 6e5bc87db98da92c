package slidingsync

import (
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/myelin-chat/myelin/internal/mxhttp"
)

func TestConnectionsOwnershipRetryAndAck(t *testing.T) {
	c := newConnections(10, time.Hour)
	a, b := connKey("@a:x", "D", ""), connKey("@b:x", "D", "")
	p1 := c.put(a, &snapshot{}, true)
	if c.get(b, p1) != nil {
		t.Fatal("another user's connection resolved a pos it was not issued")
	}
	if c.get(connKey("@a:x", "D", "other"), p1) != nil {
		t.Fatal("another conn_id resolved the pos")
	}
	if c.get(a, p1) == nil || c.get(a, p1) == nil {
		t.Fatal("the latest pos must resolve, also when retried")
	}
	p2 := c.put(a, &snapshot{}, false)
	if c.get(a, p1) == nil {
		t.Fatal("a pos whose successor was never used must still resolve (the response may be lost)")
	}
	if c.get(a, p2) == nil {
		t.Fatal("new pos does not resolve")
	}
	if c.get(a, p1) != nil {
		t.Fatal("using a newer pos must drop the older one")
	}
	if c.get(a, "nonsense") != nil || c.get(a, "") != nil {
		t.Fatal("garbage pos resolved")
	}
	// A new connection on the same conn_id replaces the old state.
	p3 := c.put(a, &snapshot{}, true)
	if c.get(a, p2) != nil || c.get(a, p3) == nil {
		t.Fatal("an initial request did not replace the connection")
	}
}

func TestConnectionsBoundedAndExpiring(t *testing.T) {
	now := time.Unix(1000, 0)
	c := newConnections(3, time.Minute)
	c.now = func() time.Time { return now }
	var first string
	for i := range 5 {
		now = now.Add(time.Second)
		p := c.put(connKey("@a:x", "D", string(rune('a'+i))), &snapshot{}, true)
		if i == 0 {
			first = p
		}
	}
	if c.size() != 3 {
		t.Fatalf("%d connections held, cap 3", c.size())
	}
	if c.get(connKey("@a:x", "D", "a"), first) != nil {
		t.Fatal("the least recently used connection was not evicted")
	}
	key := connKey("@a:x", "D", "e")
	p := c.put(key, &snapshot{}, false)
	now = now.Add(2 * time.Minute)
	if c.get(key, p) != nil {
		t.Fatal("an idle connection did not expire")
	}
	// Snapshots per connection stay bounded.
	for range 10 {
		c.put(key, &snapshot{}, false)
	}
	c.mu.Lock()
	n := len(c.m[key].snaps)
	c.mu.Unlock()
	if n > maxSnapshotsPerConn {
		t.Fatalf("%d snapshots kept, cap %d", n, maxSnapshotsPerConn)
	}
}

func TestRequiredStateMatching(t *testing.T) {
	const me = "@me:x"
	cases := []struct {
		raw        string
		typ, key   string
		want, lazy bool
	}{
		{`[["m.room.name",""]]`, "m.room.name", "", true, false},
		{`[["m.room.name",""]]`, "m.room.topic", "", false, false},
		{`[["*","*"]]`, "m.room.member", "@u:x", true, false},
		{`[["m.room.member","*"]]`, "m.room.member", "@u:x", true, false},
		{`[["*",""]]`, "m.room.member", "@u:x", false, false},
		{`[["m.room.member","$ME"]]`, "m.room.member", me, true, false},
		{`[["m.room.member","$ME"]]`, "m.room.member", "@u:x", false, false},
		{`[["m.room.member","$LAZY"]]`, "m.room.member", "@u:x", false, true},
		{`{"include":[{}],"exclude":[{"type":"m.room.create","state_key":""}]}`, "m.room.create", "", false, false},
		{`{"include":[{}],"exclude":[{"type":"m.room.create","state_key":""}]}`, "m.room.topic", "", true, false},
		{`{"include":[{"state_key":""}],"lazy_members":true}`, "m.room.topic", "", true, true},
		{`{"include":[{"state_key":""}]}`, "m.room.member", "@u:x", false, false},
	}
	for _, tc := range cases {
		st, err := parseRequiredState(json.RawMessage(tc.raw))
		if err != nil {
			t.Fatalf("%s: %v", tc.raw, err)
		}
		cfg := combined{states: []stateConfig{st}}
		if got := cfg.wants(tc.typ, tc.key, me); got != tc.want || cfg.lazy() != tc.lazy {
			t.Errorf("%s wants (%s, %s) = %v lazy %v; want %v lazy %v", tc.raw, tc.typ, tc.key, got, cfg.lazy(), tc.want, tc.lazy)
		}
	}
	// Combining is a union: an exclude of one config does not hide what another includes.
	a, _ := parseRequiredState(json.RawMessage(`{"include":[{}],"exclude":[{"type":"m.room.create"}]}`))
	b, _ := parseRequiredState(json.RawMessage(`[["m.room.create",""]]`))
	if cfg := (combined{states: []stateConfig{a, b}}); !cfg.wants("m.room.create", "", me) {
		t.Error("combined configs are not a superset")
	}
	for _, bad := range []string{`5`, `"x"`, `[["a"]]`, `[["a","b","c"]]`, `[[1,2]]`, `{"include":5}`} {
		if _, err := parseRequiredState(json.RawMessage(bad)); err == nil {
			t.Errorf("%s parsed", bad)
		}
	}
}

func TestFilterEntriesDedupedAndCapped(t *testing.T) {
	spaces := func(n, distinct int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = fmt.Sprintf("!s%d:x", i%distinct)
		}
		return out
	}
	list := func(f *listFilters) map[string]listConfig { return map[string]listConfig{"a": {Filters: f}} }
	// 10,000 entries naming 50 spaces: accepted, 50 kept.
	req := &request{Lists: list(&listFilters{Spaces: spaces(10_000, 50), Tags: []string{"t", "t", "u"}})}
	if err := req.validate(); err != nil {
		t.Fatalf("duplicates refused: %v", err)
	}
	if f := req.Lists["a"].Filters; len(f.Spaces) != 50 || len(f.Tags) != 2 {
		t.Errorf("kept %d spaces, %d tags; want 50, 2", len(f.Spaces), len(f.Tags))
	}
	many := make([]*string, 51)
	for i := range many {
		s := fmt.Sprint("t", i)
		many[i] = &s
	}
	lists := map[string]listConfig{}
	for i := range 3 {
		sp := make([]string, 50)
		for j := range sp {
			sp[j] = fmt.Sprintf("!s%d-%d:x", i, j)
		}
		lists[fmt.Sprint("l", i)] = listConfig{Filters: &listFilters{Spaces: sp}}
	}
	for name, bad := range map[string]*request{
		"51 spaces":             {Lists: list(&listFilters{Spaces: spaces(51, 51)})},
		"51 tags":               {Lists: list(&listFilters{Tags: spaces(51, 51)})},
		"51 not_tags":           {Lists: list(&listFilters{NotTags: spaces(51, 51)})},
		"51 room_types":         {Lists: list(&listFilters{RoomTypes: many})},
		"51 not_room_types":     {Lists: list(&listFilters{NotRoomTypes: many})},
		"150 spaces in 3 lists": {Lists: lists},
	} {
		err := bad.validate()
		var mx *mxhttp.Error
		if !errors.As(err, &mx) || mx.Code != "M_INVALID_PARAM" || mx.Status != 400 {
			t.Errorf("%s: %v, want 400 M_INVALID_PARAM", name, err)
		}
	}
}

func TestConnectionsCappedPerDevice(t *testing.T) {
	now := time.Unix(1000, 0)
	c := newConnections(100, time.Hour)
	c.now = func() time.Time { return now }
	victim := connKey("@victim:x", "V", "")
	vpos := c.put(victim, &snapshot{}, true)
	var first string
	for i := range 50 {
		now = now.Add(time.Second)
		p := c.put(connKey("@mallory:x", "M", fmt.Sprint("c", i)), &snapshot{}, true)
		if i == 0 {
			first = p
		}
	}
	if c.get(victim, vpos) == nil {
		t.Fatal("one device's connections evicted another user's")
	}
	if n := c.size(); n != maxConnsPerDevice+1 {
		t.Errorf("%d connections held, want %d for the device plus the victim's", n, maxConnsPerDevice+1)
	}
	if c.get(connKey("@mallory:x", "M", "c0"), first) != nil {
		t.Error("the device's least recently used connection was kept")
	}
	if c.get(connKey("@mallory:x", "M", "c49"), "") != nil {
		t.Error("garbage pos resolved")
	}
	// A NUL in conn_id does not move a connection to another device.
	c.put(connKey("@mallory:x", "M", "x\x00y"), &snapshot{}, true)
	if c.get(victim, vpos) == nil {
		t.Fatal("a NUL conn_id evicted another device's connection")
	}
	// Rooms per snapshot stay bounded.
	rooms := map[string]roomSent{}
	for i := range maxRoomsPerConn + 100 {
		rooms[fmt.Sprint("!r", i)] = roomSent{}
	}
	key := connKey("@a:x", "D", "")
	p := c.put(key, &snapshot{rooms: rooms}, true)
	if n := len(c.get(key, p).rooms); n != maxRoomsPerConn {
		t.Errorf("%d rooms remembered, cap %d", n, maxRoomsPerConn)
	}
}

// Remembered subscriptions are bounded: past maxSubscriptions, those given
// least recently go first, never one of the current request's; unsubscribe
// and re-subscribe apply in that order, on a copy (snapshots are immutable).
func TestSubscriptionsRememberedAndBounded(t *testing.T) {
	prev := &snapshot{}
	for i := range maxSubscriptions {
		req := &request{RoomSubscriptions: map[string]roomConfig{fmt.Sprintf("!r%03d:x", i): {}}}
		prev.subs, prev.reqs = nextSubscriptions(prev, req)
	}
	if len(prev.subs) != maxSubscriptions {
		t.Fatalf("remembered %d subscriptions, want %d", len(prev.subs), maxSubscriptions)
	}
	before := prev.subs
	// r050 is dropped, r000 given again, two rooms added: one over the cap,
	// so r001, now the one given least recently, goes.
	req := &request{RoomSubscriptions: map[string]roomConfig{"!r000:x": {}, "!new1:x": {}, "!new2:x": {}},
		UnsubscribeRooms: []string{"!r050:x"}}
	subs, _ := nextSubscriptions(prev, req)
	if len(subs) != maxSubscriptions {
		t.Fatalf("%d subscriptions after the cap, want %d", len(subs), maxSubscriptions)
	}
	for _, gone := range []string{"!r001:x", "!r050:x"} {
		if _, ok := subs[gone]; ok {
			t.Errorf("%s still subscribed", gone)
		}
	}
	for _, kept := range []string{"!r000:x", "!r002:x", "!new1:x", "!new2:x", "!r099:x"} {
		if _, ok := subs[kept]; !ok {
			t.Errorf("%s dropped", kept)
		}
	}
	if len(before) != maxSubscriptions || before["!r050:x"].last == 0 {
		t.Error("the previous snapshot's subscriptions were modified")
	}
}

func TestMemberSetCopyOnWrite(t *testing.T) {
	var s memberSet
	if s.has("@a:x") {
		t.Fatal("empty set has a member")
	}
	a := s.with([]string{"@b:x", "@a:x", "@b:x"})
	b := a.with([]string{"@c:x"})
	if len(a) != 2 || !a.has("@a:x") || !a.has("@b:x") || a.has("@c:x") {
		t.Fatalf("a = %v", a)
	}
	if len(b) != 3 || !b.has("@c:x") || !b.has("@a:x") {
		t.Fatalf("b = %v", b)
	}
	if a.has("@c:x") {
		t.Fatal("adding to a copy changed the original (shared by older snapshots)")
	}
}

func TestRoomScopeCovers(t *testing.T) {
	sl := func(v ...string) *[]string { return &v }
	cases := []struct {
		scope      roomScope
		lists      []string
		subscribed bool
		want       bool
	}{
		{roomScope{}, []string{"a"}, false, true},
		{roomScope{}, nil, true, true},
		{roomScope{}, nil, false, false},
		{roomScope{Lists: sl()}, []string{"a"}, false, false},
		{roomScope{Lists: sl("*")}, []string{"a"}, false, true},
		{roomScope{Lists: sl("b")}, []string{"a"}, false, false},
		{roomScope{Lists: sl("b")}, []string{"a", "b"}, false, true},
		{roomScope{Rooms: sl()}, nil, true, false},
		{roomScope{Rooms: sl("!r")}, nil, true, true},
		{roomScope{Rooms: sl("!other")}, nil, true, false},
		{roomScope{Lists: sl(), Rooms: sl("*")}, []string{"a"}, true, true},
	}
	for i, c := range cases {
		if got := c.scope.covers("!r", c.lists, c.subscribed); got != c.want {
			t.Errorf("case %d: covers = %v, want %v", i, got, c.want)
		}
	}
}
