package federationsender

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/myelin-chat/myelin/audit"
	"github.com/myelin-chat/myelin/federation"
	"github.com/myelin-chat/myelin/storage"
)

// recordingAudit keeps what the sender records.
type recordingAudit struct {
	mu       sync.Mutex
	flows    []audit.Flow
	refusals []audit.Refusal
}

func (r *recordingAudit) Flow(_ string, f audit.Flow) {
	r.mu.Lock()
	r.flows = append(r.flows, f)
	r.mu.Unlock()
}

func (r *recordingAudit) Refusal(_ string, f audit.Refusal) {
	r.mu.Lock()
	r.refusals = append(r.refusals, f)
	r.mu.Unlock()
}

// TestHandleRecordsRefusals: the events the policy keeps from a server in
// one page make one refusal record for that server (rooms and PDU counts,
// the purpose and rule), and nothing is queued for it; allowed servers get
// no record.
func TestHandleRecordsRefusals(t *testing.T) {
	var evs []*storage.Event
	add := func(room, typ, sender, stateKey, membership string) {
		e := &storage.Event{EventID: fmt.Sprintf("$%d", len(evs)+1), StreamPos: int64(len(evs) + 1), RoomID: room, Type: typ,
			Sender: sender, Membership: membership}
		if stateKey != "" {
			e.StateKey = &stateKey
		}
		evs = append(evs, e)
	}
	add("!r1:hs.test", "m.room.member", "@a:hs.test", "@a:hs.test", "join")
	add("!r1:hs.test", "m.room.member", "@b:denied.test", "@b:denied.test", "join")
	add("!r1:hs.test", "m.room.member", "@c:ok.test", "@c:ok.test", "join")
	add("!r1:hs.test", "m.room.message", "@a:hs.test", "", "")
	add("!r1:hs.test", "m.room.message", "@a:hs.test", "", "")
	add("!r2:hs.test", "m.room.member", "@a:hs.test", "@a:hs.test", "join")
	add("!r2:hs.test", "m.room.member", "@b:denied.test", "@b:denied.test", "join")
	add("!r2:hs.test", "m.room.message", "@a:hs.test", "", "")
	store := &timelineStore{events: evs}
	rec := &recordingAudit{}
	policy := federation.ServerListPolicy{Denied: []string{"denied.test"}}
	s, err := New(context.Background(), Options{ServerName: "hs.test", Store: store, Policy: policy, Audit: rec})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Handle(context.Background(), evs); err != nil {
		t.Fatal(err)
	}
	for _, it := range store.queued {
		if it.Destination == "denied.test" {
			t.Fatalf("queued for the refused server: %+v", it)
		}
	}
	if len(rec.refusals) != 1 {
		t.Fatalf("%d refusal records, want 1: %+v", len(rec.refusals), rec.refusals)
	}
	r := rec.refusals[0]
	if r.Server != "denied.test" || r.Purpose != "send" || r.Rule != audit.RuleFederationPolicy ||
		r.Rooms["!r1:hs.test"] != 2 || r.Rooms["!r2:hs.test"] != 1 || len(r.Rooms) != 2 {
		t.Fatalf("refusal %+v", r)
	}
	if !slices.ContainsFunc(store.queued, func(it storage.FederationQueueItem) bool { return it.Destination == "ok.test" }) {
		t.Fatal("nothing queued for the allowed server")
	}
}
