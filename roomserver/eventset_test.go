package roomserver

import (
	"testing"
	"time"

	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"
)

// TestEventSetCycle: events whose auth events name each other (possible with
// the sender-chosen IDs of room versions 1 and 2, or IDs a remote lies about)
// are refused, without endless recursion; the create event they lean on is
// accepted, and an event authorized by it alone too.
func TestEventSetCycle(t *testing.T) {
	key := mfed.GenerateSigningKey()
	s := newTestServerWith(t, Options{Keys: fixedKeys{"remote.test": key}})
	remote := &Server{key: key, serverName: "remote.test"}
	const version = id.RoomVersion("10")
	room := id.RoomID("!cycle:remote.test")
	creator := id.UserID("@c:remote.test")
	now := time.Now().UnixMilli()
	build := func(p *proto, auth []ref, depth int64) *Event {
		t.Helper()
		e, err := remote.buildEvent(version, room, p, auth, auth, depth, now)
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	create := build(&proto{Type: "m.room.create", StateKey: stateKeyPtr(""), Sender: creator,
		Content: MustJSON(map[string]string{"room_version": "10", "creator": string(creator)})}, nil, 1)
	join := func(name string) *Event {
		return build(&proto{Type: "m.room.member", StateKey: stateKeyPtr(string(creator)), Sender: creator,
			Content: MustJSON(map[string]string{"membership": "join", "displayname": name})}, []ref{{create.ID, create.PDU.Hashes}}, 2)
	}
	first, l1, l2 := join("first"), join("l1"), join("l2")
	// l1 and l2 claim IDs that make each the other's auth event.
	l1.ID, l2.ID = "$l1", "$l2"
	l1.PDU.InternalMeta.EventID, l2.PDU.InternalMeta.EventID = l1.ID, l2.ID
	l1.PDU.AuthEvents = append(l1.PDU.AuthEvents, l2.ID)
	l2.PDU.AuthEvents = append(l2.PDU.AuthEvents, l1.ID)
	es := s.newEventSet(version)
	for _, e := range []*Event{create, first, l1, l2} {
		es.byID[e.ID] = e
	}
	if es.visit(l1, 0) || es.visit(l2, 0) {
		t.Fatal("a cycle of auth events accepted")
	}
	if !es.visit(first, 0) || !es.ok[create.ID] {
		t.Fatalf("the create event and a join on it refused: %v", es.ok)
	}
	if es.ok[l1.ID] || es.ok[l2.ID] || len(es.ordered) != 2 {
		t.Fatalf("accepted %v", es.ordered)
	}
}
