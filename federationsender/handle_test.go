package federationsender

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/myelin-chat/myelin/federation"
	"github.com/myelin-chat/myelin/storage"
)

// timelineStore answers JoinedServersAt from a room's member events, as the
// store does, and records what is queued; its queues always read empty.
type timelineStore struct {
	Store
	events []*storage.Event
	mu     sync.Mutex
	calls  int
	queued []storage.FederationQueueItem
}

func (f *timelineStore) JoinedServersAt(_ context.Context, roomID string, pos int64) ([]string, error) {
	f.mu.Lock()
	f.calls++
	f.mu.Unlock()
	latest := map[string]string{} // user → membership before pos
	set := map[string]bool{}
	for _, e := range f.events {
		if e.RoomID != roomID || e.Type != "m.room.member" {
			continue
		}
		if e.StreamPos < pos {
			latest[*e.StateKey] = e.Membership
		} else if e.StreamPos == pos && e.Membership == "join" {
			set[storage.ServerOfUser(*e.StateKey)] = true
		}
	}
	for u, m := range latest {
		if m == "join" {
			set[storage.ServerOfUser(u)] = true
		}
	}
	var out []string
	for s := range set {
		out = append(out, s)
	}
	slices.Sort(out)
	return out, nil
}

func (f *timelineStore) EnqueueFederation(_ context.Context, items []storage.FederationQueueItem) error {
	f.queued = append(f.queued, items...)
	return nil
}
func (f *timelineStore) FederationQueuedDestinations(context.Context) ([]string, error) {
	return nil, nil
}
func (f *timelineStore) FederationDestinationState(context.Context, string) (*storage.FederationDestination, error) {
	return &storage.FederationDestination{}, nil
}
func (f *timelineStore) FederationBatch(context.Context, string, int64, int) ([]storage.FederationQueueItem, error) {
	return nil, nil
}

// TestHandleJoinBurst: a burst of our users' joins does not ask the store
// for the room's servers at every join (quadratic in the burst: 1,999 joins
// took the sender 86 s), and every event still goes to exactly the servers
// joined at it: not before a remote user's join, still with the kick that
// removes its last member, not after.
func TestHandleJoinBurst(t *testing.T) {
	const room = "!r:hs.test"
	var evs []*storage.Event
	add := func(typ, sender, stateKey, membership string) {
		e := &storage.Event{EventID: fmt.Sprintf("$%d", len(evs)+1), StreamPos: int64(len(evs) + 1), RoomID: room, Type: typ,
			Sender: sender, Membership: membership}
		if stateKey != "" {
			e.StateKey = &stateKey
		}
		evs = append(evs, e)
	}
	add("m.room.member", "@a:hs.test", "@a:hs.test", "join")         // 1: nobody else
	add("m.room.member", "@b:remote.test", "@b:remote.test", "join") // 2: remote.test's own
	for i := range 50 {                                              // 3–52: a burst of local joins
		u := fmt.Sprintf("@u%d:hs.test", i)
		add("m.room.member", u, u, "join")
	}
	add("m.room.message", "@a:hs.test", "", "")                   // 53
	add("m.room.member", "@a:hs.test", "@b:remote.test", "leave") // 54: the kick still goes to remote.test
	add("m.room.message", "@a:hs.test", "", "")                   // 55: nobody else
	store := &timelineStore{events: evs}
	s, err := New(context.Background(), Options{ServerName: "hs.test", Store: store, Policy: federation.AllowAll{}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Handle(context.Background(), evs); err != nil {
		t.Fatal(err)
	}
	var got []int64
	for _, it := range store.queued {
		if it.Destination != "remote.test" {
			t.Fatalf("queued for %s: %+v", it.Destination, it)
		}
		got = append(got, it.StreamPos)
	}
	var want []int64
	for p := int64(3); p <= 54; p++ {
		want = append(want, p)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("queued positions %v, want 3–54", got)
	}
	// At 1 (no servers known), 3 (after the remote join), 54 (the kick), 55 (after it).
	if store.calls > 4 {
		t.Fatalf("JoinedServersAt asked %d times for one page", store.calls)
	}
}

func (f *timelineStore) KnownEvents(_ context.Context, ids []string) (map[string]bool, error) {
	out := map[string]bool{}
	for _, e := range f.events {
		if slices.Contains(ids, e.EventID) {
			out[e.EventID] = true
		}
	}
	return out, nil
}

// TestHandleJoinThroughResidentAndTargets: our user's join that came
// through send_join (its prev_events are the resident's, not in our
// timeline) is not sent again, while one our roomserver built is; a leave or
// ban naming a user of a server not in the room (a rescinded invite) goes to
// that server too.
func TestHandleJoinThroughResidentAndTargets(t *testing.T) {
	const room = "!r:remote.test"
	var evs []*storage.Event
	add := func(typ, sender, stateKey, membership string, prevs ...string) {
		e := &storage.Event{EventID: fmt.Sprintf("$%d", len(evs)+1), StreamPos: int64(len(evs) + 1), RoomID: room, Type: typ,
			Sender: sender, Membership: membership}
		if stateKey != "" {
			e.StateKey = &stateKey
		}
		j, _ := json.Marshal(map[string]any{"prev_events": prevs})
		e.JSON = j
		evs = append(evs, e)
	}
	add("m.room.member", "@b:remote.test", "@b:remote.test", "join")                // 1: the resident's user
	add("m.room.member", "@a:hs.test", "@a:hs.test", "join", "$resident-extremity") // 2: our join via send_join
	add("m.room.message", "@a:hs.test", "", "", "$2")                               // 3
	add("m.room.member", "@u:hs.test", "@u:hs.test", "join", "$3")                  // 4: a join we built
	add("m.room.member", "@a:hs.test", "@c:other.test", "leave", "$4")              // 5: a rescinded invite
	store := &timelineStore{events: evs}
	s, err := New(context.Background(), Options{ServerName: "hs.test", Store: store, Policy: federation.AllowAll{}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Handle(context.Background(), evs); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, it := range store.queued {
		got = append(got, fmt.Sprintf("%d>%s", it.StreamPos, it.Destination))
	}
	want := []string{"3>remote.test", "4>remote.test", "5>remote.test", "5>other.test"}
	if !slices.Equal(got, want) {
		t.Fatalf("queued %v, want %v", got, want)
	}
}

// TestHandleRelay: a remote user's join taken through send_join (Relay) goes
// to the room's other servers, never back to its own nor to ours; a remote
// event without the flag goes nowhere (its origin sends it).
func TestHandleRelay(t *testing.T) {
	const room = "!r:hs.test"
	mk := func(pos int64, sender, membership string, relay bool) *storage.Event {
		sk := sender
		return &storage.Event{EventID: fmt.Sprintf("$%d", pos), StreamPos: pos, RoomID: room, Type: "m.room.member",
			Sender: sender, StateKey: &sk, Membership: membership, Relay: relay}
	}
	evs := []*storage.Event{
		mk(1, "@a:hs.test", "join", false),
		mk(2, "@b:remote.test", "join", true),  // through our send_join: remote.test is the only other
		mk(3, "@c:third.test", "join", true),   // goes to remote.test
		mk(4, "@c:third.test", "leave", false), // over /send from third.test: its to send
	}
	store := &timelineStore{events: evs}
	s, err := New(context.Background(), Options{ServerName: "hs.test", Store: store, Policy: federation.AllowAll{}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Handle(context.Background(), evs); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, it := range store.queued {
		got = append(got, fmt.Sprintf("%d>%s", it.StreamPos, it.Destination))
	}
	if want := []string{"3>remote.test"}; !slices.Equal(got, want) {
		t.Fatalf("queued %v, want %v", got, want)
	}
}
