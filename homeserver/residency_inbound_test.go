package homeserver

import (
	"encoding/json"
	"slices"
	"strconv"
	"testing"
	"time"
)

// TestInboundRefusalsBounded: one record per origin and purpose a minute,
// at most maxRefusedOriginsPerMinute origins a minute; a new minute starts
// afresh.
func TestInboundRefusalsBounded(t *testing.T) {
	now := time.Unix(1000, 0)
	r := &inboundRefusals{now: func() time.Time { return now }}
	if !r.first("b.test inbound") || r.first("b.test inbound") {
		t.Fatal("the same origin twice in a minute: want one record")
	}
	if !r.first("b.test profile") {
		t.Fatal("another purpose of the same origin: want a record")
	}
	n := 0
	for i := range 1000 {
		if r.first("flood" + strconv.Itoa(i) + ".test inbound") {
			n++
		}
	}
	if n != maxRefusedOriginsPerMinute-2 {
		t.Fatalf("%d flooding origins recorded, want %d", n, maxRefusedOriginsPerMinute-2)
	}
	now = now.Add(61 * time.Second)
	if !r.first("b.test inbound") {
		t.Fatal("a new minute: want a record again")
	}
}

// TestStrippedFacts: an invite's stripped state gives the creator, room
// type and aliases the rules classify by; events with a state key are not
// the room's.
func TestStrippedFacts(t *testing.T) {
	raw := func(s string) json.RawMessage { return json.RawMessage(s) }
	f := strippedFacts([]json.RawMessage{
		raw(`{"type":"m.room.create","state_key":"","sender":"@m:b.test","content":{"type":"m.space"}}`),
		raw(`{"type":"m.room.canonical_alias","state_key":"","content":{"alias":"#open-x:b.test","alt_aliases":["#y:b.test"]}}`),
		raw(`{"type":"m.room.canonical_alias","state_key":"x","content":{"alias":"#forged:b.test"}}`),
		raw(`not json`),
	})
	if f.Creator != "@m:b.test" || f.RoomType != "m.space" || !slices.Equal(f.Aliases, []string{"#open-x:b.test", "#y:b.test"}) {
		t.Fatalf("facts: %+v", f)
	}
}
