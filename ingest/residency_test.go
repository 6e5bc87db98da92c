package ingest

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/audit"
	"github.com/myelin-chat/myelin/residency"
)

// refusingPolicy refuses the rooms in rooms and the kinds in kinds.
type refusingPolicy struct {
	rooms map[string]bool
	kinds map[residency.Kind]bool
	mu    sync.Mutex
	asked map[string]int // room and kind
}

func (p *refusingPolicy) Room(_ context.Context, roomID, server string, kind residency.Kind) residency.Decision {
	p.mu.Lock()
	if p.asked == nil {
		p.asked = map[string]int{}
	}
	p.asked[roomID+" "+string(kind)]++
	p.mu.Unlock()
	if p.rooms[roomID] {
		return residency.Decision{Rule: "residency.zones.a.includes", Reason: "the room is resident in zone a; " + server + " is in zone b"}
	}
	return residency.Decision{Allowed: true, Rule: "residency.zones.a"}
}

func (p *refusingPolicy) Server(_ context.Context, server string, kind residency.Kind) residency.Decision {
	if p.kinds[kind] {
		return residency.Decision{Rule: residency.RuleShare("b", kind), Reason: "no " + string(kind) + " for " + server}
	}
	return residency.Decision{Allowed: true}
}

type fakeTrail struct {
	mu       sync.Mutex
	refusals []audit.Refusal
	flows    int
}

func (f *fakeTrail) Flow(string, audit.Flow) { f.mu.Lock(); f.flows++; f.mu.Unlock() }
func (f *fakeTrail) Refusal(_ string, r audit.Refusal) {
	f.mu.Lock()
	f.refusals = append(f.refusals, r)
	f.mu.Unlock()
}

// TestResidencyTransaction: the PDUs of a room the policy refuses the
// origin are answered with its reason and never reach the writer (the room
// asked once for all of them); typing and presence it refuses are dropped,
// receipts lose the refused rooms only; one refusal record sums it all up.
func TestResidencyTransaction(t *testing.T) {
	store := newFakeStore()
	rooms := &fakeRooms{store: store, reject: map[id.EventID]bool{}}
	policy := &refusingPolicy{rooms: map[string]bool{"!r:x.test": true}, kinds: map[residency.Kind]bool{residency.Presence: true}}
	trail := &fakeTrail{}
	var mu sync.Mutex
	var delivered []string
	handler := func(_ context.Context, _ string, content json.RawMessage) error {
		mu.Lock()
		delivered = append(delivered, string(content))
		mu.Unlock()
		return nil
	}
	e, err := New(Options{Rooms: rooms, Store: store, Keys: keys{"remote.test": remoteKey}, Residency: policy, Audit: trail,
		ServerName: "x.test", EDUs: map[string]EDUHandler{"m.typing": handler, "m.receipt": handler, "m.presence": handler}})
	if err != nil {
		t.Fatal(err)
	}
	ev1, id1 := mk(t, "one", 2, "$head")
	ev2, id2 := mk(t, "two", 3, id1)
	edus := []map[string]any{
		{"edu_type": "m.typing", "content": map[string]any{"room_id": "!r:x.test", "user_id": "@u:remote.test", "typing": true}},
		{"edu_type": "m.typing", "content": map[string]any{"room_id": "!open:x.test", "user_id": "@u:remote.test", "typing": true}},
		{"edu_type": "m.receipt", "content": map[string]any{"!r:x.test": map[string]any{}, "!open:x.test": map[string]any{}}},
		{"edu_type": "m.presence", "content": map[string]any{"push": []any{}}},
	}
	body, _ := json.Marshal(map[string]any{"origin": "remote.test", "pdus": []json.RawMessage{ev1, ev2}, "edus": edus})
	res, err := e.Transaction(context.Background(), "remote.test", "t1", body)
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range []id.EventID{id1, id2} {
		if !strings.Contains(res[string(x)], "resident in zone a") {
			t.Errorf("result of %s: %q, want the policy's reason", x, res[string(x)])
		}
	}
	if len(rooms.inputs) != 0 {
		t.Errorf("refused PDUs reached the writer: %v", rooms.inputs)
	}
	if n := policy.asked["!r:x.test events"]; n != 1 {
		t.Errorf("the policy was asked %d times about the room of two PDUs, want once a transaction", n)
	}
	want := []string{`{"room_id":"!open:x.test","typing":true,"user_id":"@u:remote.test"}`, `{"!open:x.test":{}}`}
	if len(delivered) != 2 || delivered[0] != want[0] || delivered[1] != want[1] {
		t.Errorf("delivered %q, want %q", delivered, want)
	}
	if len(trail.refusals) != 1 {
		t.Fatalf("refusal records: %+v, want one for the transaction", trail.refusals)
	}
	r := trail.refusals[0]
	if r.Purpose != "send" || r.Direction != audit.Inbound || r.Server != "remote.test" || r.Rule != "residency.zones.a.includes" ||
		r.Rooms["!r:x.test"] != 2 || r.EDUs["m.typing"] != 1 || r.EDUs["m.receipt"] != 1 || r.EDUs["m.presence"] != 1 {
		t.Errorf("refusal record: %+v", r)
	}
	if n := testutil.ToFloat64(e.m.pdus.WithLabelValues(outcomeRejected, "residency")); n != 2 {
		t.Errorf("pdus{rejected,residency} = %v, want 2", n)
	}
	if n := testutil.ToFloat64(e.m.edus.WithLabelValues("m.presence", eduRefused)); n != 1 {
		t.Errorf("edus{m.presence,refused} = %v, want 1", n)
	}

	// Without a refusal, nothing is recorded and the PDUs go through.
	policy.rooms = nil
	ev3, id3 := mk(t, "three", 2, "$head")
	body, _ = json.Marshal(map[string]any{"origin": "remote.test", "pdus": []json.RawMessage{ev3}})
	res, err = e.Transaction(context.Background(), "remote.test", "t2", body)
	if err != nil || res[string(id3)] != "" {
		t.Fatalf("allowed transaction: %v %v", res, err)
	}
	if len(trail.refusals) != 1 {
		t.Errorf("a refusal recorded for an allowed transaction: %+v", trail.refusals[1:])
	}
}
