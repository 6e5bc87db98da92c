package federationsender

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/myelin-chat/myelin/audit"
	"github.com/myelin-chat/myelin/internal/config"
	"github.com/myelin-chat/myelin/residency"
	"github.com/myelin-chat/myelin/storage"
)

// zoneStore is the residency policy's store: every room recorded, in zone
// "a" unless its ID starts with "!open".
type zoneStore struct{}

func (zoneStore) GetRoomResidency(_ context.Context, roomID string) (storage.RoomResidency, error) {
	zone := "a"
	if len(roomID) >= 5 && roomID[:5] == "!open" {
		zone = "open"
	}
	return storage.RoomResidency{RoomID: roomID, Zone: zone, Rule: "test", Source: "created"}, nil
}
func (zoneStore) PinRoomResidency(_ context.Context, r storage.RoomResidency) (storage.RoomResidency, error) {
	return r, nil
}
func (zoneStore) GetRoomFacts(context.Context, string) (storage.RoomFacts, error) {
	return storage.RoomFacts{}, storage.ErrNotFound
}
func (zoneStore) RoomEncrypted(context.Context, string) (bool, error) { return false, nil }

// testPolicy: hs.test and a2.test in zone a; every other server in zone
// open, which admits zone a's rooms' servers but shares no presence.
func testPolicy() *residency.Policy {
	cfg := &config.Config{ServerName: "hs.test", Residency: config.Residency{Enabled: true, Zone: "a",
		Zones: []config.ResidencyZone{
			{Name: "a", Servers: []string{"hs.test", "a2.test"}},
			{Name: "open", Servers: []string{"*"}, Includes: []string{"a"}, Share: map[string]bool{"presence": false}},
			{Name: "c", Servers: []string{"c.invalid"}},
		},
		Rooms: config.ResidencyRooms{DefaultZone: "a"}}}
	return residency.New(residency.Options{Config: cfg, Store: zoneStore{}})
}

// TestHandleResidency: a zone-a room's events are queued for a2 (zone a)
// and not for b (zone open); an open room's for both. One refusal record
// for b, outbound, with the zone-a room's PDUs counted.
func TestHandleResidency(t *testing.T) {
	var evs []*storage.Event
	add := func(room, typ, sender, stateKey, membership string) {
		e := &storage.Event{EventID: fmt.Sprintf("$%d", len(evs)+1), StreamPos: int64(len(evs) + 1), RoomID: room, Type: typ,
			Sender: sender, Membership: membership}
		if stateKey != "" {
			e.StateKey = &stateKey
		}
		evs = append(evs, e)
	}
	for _, room := range []string{"!a:hs.test", "!open:hs.test"} {
		add(room, "m.room.member", "@u:hs.test", "@u:hs.test", "join")
		add(room, "m.room.member", "@v:a2.test", "@v:a2.test", "join")
		add(room, "m.room.member", "@w:b.test", "@w:b.test", "join")
		add(room, "m.room.message", "@u:hs.test", "", "")
		add(room, "m.room.message", "@u:hs.test", "", "")
	}
	store := &timelineStore{events: evs}
	rec := &recordingAudit{}
	s, err := New(context.Background(), Options{ServerName: "hs.test", Store: store, Policy: allowPolicy{}, Audit: rec,
		Residency: testPolicy()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Handle(context.Background(), evs); err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for _, it := range store.queued {
		got[it.Destination+" "+it.RoomID]++
	}
	if got["b.test !a:hs.test"] != 0 || got["a2.test !a:hs.test"] != 2 || got["b.test !open:hs.test"] != 2 || got["a2.test !open:hs.test"] != 2 {
		t.Fatalf("queued %v", got)
	}
	if len(rec.refusals) != 1 {
		t.Fatalf("%d refusal records, want 1: %+v", len(rec.refusals), rec.refusals)
	}
	r := rec.refusals[0]
	if r.Server != "b.test" || r.Direction != audit.Outbound || r.Kind != string(residency.Events) || r.Rule != residency.RuleIncludes("a") ||
		r.Room != "!a:hs.test" || r.Rooms["!a:hs.test"] != 2 || len(r.Rooms) != 1 || r.Reason == "" {
		t.Fatalf("refusal %+v", r)
	}
}

// TestTransactionResidency: a transaction is decided again when it is
// built: after the trust list places b in zone c, queued PDUs of the open
// room are kept from b, with one refusal record counting them.
func TestTransactionResidency(t *testing.T) {
	p := testPolicy()
	rec := &recordingAudit{}
	s, err := New(context.Background(), Options{ServerName: "hs.test", Store: &timelineStore{}, Policy: allowPolicy{}, Audit: rec,
		Residency: p})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var batch []storage.FederationQueueItem
	for i := range 6 {
		room := "!open1:hs.test"
		if i%2 == 1 {
			room = "!open2:hs.test"
		}
		batch = append(batch, storage.FederationQueueItem{Destination: "b.test", StreamPos: int64(i + 1), RoomID: room, EventID: fmt.Sprint("$", i)})
	}
	if got := s.admitted(context.Background(), "b.test", batch); len(got) != len(batch) {
		t.Fatalf("before the cut: %d of %d admitted", len(got), len(batch))
	}
	if len(rec.refusals) != 0 {
		t.Fatalf("refusals before the cut: %+v", rec.refusals)
	}
	p.SetTrustList(&residency.TrustList{Version: 1, Servers: map[string]string{"b.test": "c"}})
	if got := s.admitted(context.Background(), "b.test", batch); len(got) != 0 {
		t.Fatalf("after the cut: %d admitted, want 0", len(got))
	}
	if len(rec.refusals) != 1 {
		t.Fatalf("%d refusal records, want 1: %+v", len(rec.refusals), rec.refusals)
	}
	r := rec.refusals[0]
	if r.Server != "b.test" || r.DroppedPDUs != 6 || r.Rooms["!open1:hs.test"] != 3 || r.Rooms["!open2:hs.test"] != 3 ||
		r.Rule != residency.RuleIncludes("open") || r.Direction != audit.Outbound {
		t.Fatalf("refusal %+v", r)
	}
	// a2 is still admitted: nothing removed, nothing recorded.
	if got := s.admitted(context.Background(), "a2.test", batch); len(got) != len(batch) {
		t.Fatalf("a2: %d of %d admitted", len(got), len(batch))
	}
}

// eduRecStore records the EDUs queued.
type eduRecStore struct{ edus []storage.FederationEDU }

func (s *eduRecStore) EnqueueFederationEDUs(_ context.Context, edus []storage.FederationEDU, _ int) ([]string, error) {
	s.edus = append(s.edus, edus...)
	return nil, nil
}

// TestQueueEDUResidency: typing and receipts are decided per room, presence
// per the destination's zone; a refused EDU is one record per destination.
func TestQueueEDUResidency(t *testing.T) {
	store, rec := &eduRecStore{}, &recordingAudit{}
	q, err := NewQueue(QueueOptions{ServerName: "hs.test", Store: store, Policy: allowPolicy{}, Audit: rec, Residency: testPolicy()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	dests := []string{"a2.test", "b.test", "b.test"}
	queue := func(typ string, content any) {
		t.Helper()
		raw, _ := json.Marshal(content)
		if err := q.QueueEDU(ctx, dests, typ, raw, false); err != nil {
			t.Fatal(err)
		}
	}
	queue("m.typing", map[string]any{"room_id": "!a:hs.test", "user_id": "@u:hs.test", "typing": true})
	queue("m.typing", map[string]any{"room_id": "!open:hs.test", "user_id": "@u:hs.test", "typing": true})
	queue("m.receipt", map[string]any{"!a:hs.test": map[string]any{}})
	queue("m.receipt", map[string]any{"!open:hs.test": map[string]any{}})
	queue("m.presence", map[string]any{"push": []any{}})
	queue("m.direct_to_device", map[string]any{"sender": "@u:hs.test"})
	queue("m.typing", map[string]any{"user_id": "@u:hs.test"}) // no room: refused
	got := map[string]int{}
	for _, e := range store.edus {
		got[e.Destination+" "+e.Type]++
	}
	want := map[string]int{"a2.test m.typing": 2, "a2.test m.receipt": 2, "a2.test m.presence": 1, "a2.test m.direct_to_device": 1,
		"b.test m.typing": 1, "b.test m.receipt": 1, "b.test m.direct_to_device": 1}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("queued %v, want %v", got, want)
	}
	if len(rec.refusals) != 5 { // b: typing, receipt, presence; both: the typing of no room
		t.Fatalf("%d refusal records, want 5 (one per refused call and destination): %+v", len(rec.refusals), rec.refusals)
	}
	kinds := map[string]int{}
	for _, r := range rec.refusals {
		if r.Direction != audit.Outbound || r.Reason == "" {
			t.Fatalf("refusal %+v", r)
		}
		kinds[r.Kind]++
	}
	if kinds["typing"] != 3 || kinds["receipts"] != 1 || kinds["presence"] != 1 {
		t.Fatalf("refusal kinds %v", kinds)
	}
	if rec.refusals[0].Room != "!a:hs.test" || rec.refusals[0].EDUs["m.typing"] != 1 {
		t.Fatalf("typing refusal %+v", rec.refusals[0])
	}
}

// BenchmarkTransactionResidency: the per-transaction decision for 50 PDUs
// of 5 rooms to one destination, all admitted.
func BenchmarkTransactionResidency(b *testing.B) {
	s, err := New(context.Background(), Options{ServerName: "hs.test", Store: &timelineStore{}, Policy: allowPolicy{},
		Residency: testPolicy()})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	batch := make([]storage.FederationQueueItem, MaxPDUsPerTxn)
	for i := range batch {
		batch[i] = storage.FederationQueueItem{Destination: "b.test", StreamPos: int64(i + 1),
			RoomID: fmt.Sprintf("!open%d:hs.test", i%5), EventID: fmt.Sprint("$", i)}
	}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if got := s.admitted(ctx, "b.test", batch); len(got) != len(batch) {
			b.Fatal("refused")
		}
	}
}

// TestTransactionEDUResidency: a transaction's EDUs are decided again when
// it is built, as its PDUs are: after the trust list moves b to zone c, a
// typing notice and a receipt of an open room queued for b are kept from
// it (one refusal record), a to-device message (zone c shares it) is not.
func TestTransactionEDUResidency(t *testing.T) {
	p := testPolicy()
	rec := &recordingAudit{}
	s, err := New(context.Background(), Options{ServerName: "hs.test", Store: &timelineStore{}, Policy: allowPolicy{}, Audit: rec,
		Residency: p})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	edus := []storage.FederationEDU{
		{ID: 1, Destination: "b.test", Type: "m.typing", Content: json.RawMessage(`{"room_id":"!open:hs.test","user_id":"@u:hs.test","typing":true}`)},
		{ID: 2, Destination: "b.test", Type: "m.receipt", Content: json.RawMessage(`{"!open:hs.test":{}}`)},
		{ID: 3, Destination: "b.test", Type: "m.direct_to_device", Content: json.RawMessage(`{"sender":"@u:hs.test"}`)},
	}
	if got := s.admittedEDUs(context.Background(), "b.test", edus); len(got) != 3 {
		t.Fatalf("before the move: %d of 3 admitted", len(got))
	}
	p.SetTrustList(&residency.TrustList{Version: 1, Servers: map[string]string{"b.test": "c"}})
	got := s.admittedEDUs(context.Background(), "b.test", edus)
	if len(got) != 1 || got[0].Type != "m.direct_to_device" {
		t.Fatalf("after the move: admitted %+v, want the to-device message only", got)
	}
	if len(rec.refusals) != 1 {
		t.Fatalf("%d refusal records, want 1: %+v", len(rec.refusals), rec.refusals)
	}
	if r := rec.refusals[0]; r.Server != "b.test" || r.EDUs["m.typing"] != 1 || r.EDUs["m.receipt"] != 1 || r.Direction != audit.Outbound {
		t.Fatalf("refusal %+v", r)
	}
}
