package ingest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	mfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/internal/mxhttp"
	"github.com/myelin-chat/myelin/roomserver"
	"github.com/myelin-chat/myelin/storage"
)

// Fakes for the stage tests: a store of rooms and events in memory, a writer
// that records what it is given, a remote serving a chain backwards.

type fakeStore struct {
	mu     sync.Mutex
	rooms  map[string]*storage.RoomRow
	events map[string]*storage.Event
	txns   map[string]map[string]string
}

func newFakeStore() *fakeStore {
	return &fakeStore{rooms: map[string]*storage.RoomRow{"!r:x.test": {RoomID: "!r:x.test", RoomVersion: "10", Extremities: []string{"$head"}}},
		events: map[string]*storage.Event{"$head": {EventID: "$head"}}, txns: map[string]map[string]string{}}
}

// fakeStore remembers no rejections.
func (s *fakeStore) RecordRejected(context.Context, storage.RejectedEvent, int64, int) error {
	return nil
}

func (s *fakeStore) RejectedEvents(context.Context, []string) (map[string]storage.RejectedEvent, error) {
	return nil, nil
}

func (s *fakeStore) GetRoom(_ context.Context, roomID string) (*storage.RoomRow, error) {
	if r, ok := s.rooms[roomID]; ok {
		return r, nil
	}
	return nil, storage.ErrNotFound
}

func (s *fakeStore) GetEvents(_ context.Context, ids []string) (map[string]*storage.Event, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]*storage.Event{}
	for _, x := range ids {
		if e, ok := s.events[x]; ok {
			out[x] = e
		}
	}
	return out, nil
}

func (s *fakeStore) CurrentStateEvent(context.Context, string, string, string) (*storage.Event, error) {
	return nil, storage.ErrNotFound
}

func (s *fakeStore) GetFederationTxn(_ context.Context, origin, txnID string) (map[string]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r, ok := s.txns[origin+" "+txnID]; ok {
		return r, nil
	}
	return nil, storage.ErrNotFound
}

func (s *fakeStore) PutFederationTxn(_ context.Context, origin, txnID string, results map[string]string, _, _ int64, _ int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.txns[origin+" "+txnID] = results
	return nil
}

// fakeRooms stores every event it is given unless its ID is in reject; block
// holds Input until closed.
type fakeRooms struct {
	store  *fakeStore
	reject map[id.EventID]bool
	block  chan struct{}
	mu     sync.Mutex
	inputs []id.EventID
}

func (r *fakeRooms) Input(_ context.Context, roomID id.RoomID, raw []byte, origin string) (*roomserver.Event, error) {
	if r.block != nil {
		<-r.block
	}
	p, err := parsePDU(raw, func(id.RoomID) (id.RoomVersion, error) { return "10", nil })
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	r.inputs = append(r.inputs, p.EventID)
	r.mu.Unlock()
	if r.reject[p.EventID] {
		return nil, fmt.Errorf("%w: no", roomserver.ErrRejected)
	}
	r.store.mu.Lock()
	r.store.events[string(p.EventID)] = &storage.Event{EventID: string(p.EventID)}
	r.store.mu.Unlock()
	return &roomserver.Event{ID: p.EventID}, nil
}

func (r *fakeRooms) InputWithState(ctx context.Context, roomID id.RoomID, raw []byte, origin string, _ []roomserver.PrevState, _ []json.RawMessage) (*roomserver.Event, error) {
	return r.Input(ctx, roomID, raw, origin)
}

// InputGroup is Input in order, stopping at the first PDU with a prev not stored.
func (r *fakeRooms) InputGroup(ctx context.Context, roomID id.RoomID, raws [][]byte, origin string) []roomserver.GroupResult {
	out := make([]roomserver.GroupResult, len(raws))
	stopped := false
	for i, raw := range raws {
		p, err := parsePDU(raw, func(id.RoomID) (id.RoomVersion, error) { return "10", nil })
		if err == nil && !stopped {
			r.store.mu.Lock()
			for _, x := range p.PrevEvents {
				if r.store.events[string(x)] == nil {
					stopped = true
				}
			}
			r.store.mu.Unlock()
		}
		if stopped {
			out[i].Err = roomserver.ErrNotAttempted
			continue
		}
		out[i].Event, out[i].Err = r.Input(ctx, roomID, raw, origin)
	}
	return out
}

type chainRemote struct {
	byLatest  map[id.EventID][]json.RawMessage
	calls     int
	limits    []int
	earliests [][]id.EventID
	latests   [][]id.EventID
}

func (c *chainRemote) GetMissingEvents(_ context.Context, _ string, _ id.RoomID, earliest, latest []id.EventID, limit int) ([]json.RawMessage, error) {
	c.calls++
	c.limits = append(c.limits, limit)
	c.earliests, c.latests = append(c.earliests, slices.Clone(earliest)), append(c.latests, slices.Clone(latest))
	var out []json.RawMessage
	for _, l := range latest {
		out = append(out, c.byLatest[l]...)
	}
	return out, nil
}

var remoteKey = mfed.GenerateSigningKey()

type keys map[string]*mfed.SigningKey

func (k keys) GetKey(server string, keyID id.KeyID, _ time.Time) (id.SigningKey, time.Time, error) {
	if key, ok := k[server]; ok && key.ID == keyID {
		return key.Pub, time.Now().Add(time.Hour), nil
	}
	return "", time.Time{}, errors.New("unknown key")
}

// mk builds a v10 event in !r:x.test by @u:remote.test, signed by remote.test.
func mk(t testing.TB, body string, depth int64, prevs ...id.EventID) (json.RawMessage, id.EventID) {
	t.Helper()
	p := &pdu.PDU{Type: "m.room.message", Sender: "@u:remote.test", RoomID: "!r:x.test", Content: json.RawMessage(`{"body":"` + body + `"}`),
		PrevEvents: prevs, AuthEvents: []id.EventID{}, Depth: depth, OriginServerTS: 1}
	if err := p.Sign("10", "remote.test", remoteKey.ID, remoteKey.Priv); err != nil {
		t.Fatal(err)
	}
	evID, err := p.GetEventID("10")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	return raw, evID
}

func newEngine(t testing.TB, remote Remote) (*Engine, *fakeStore, *fakeRooms) {
	store := newFakeStore()
	rooms := &fakeRooms{store: store, reject: map[id.EventID]bool{}}
	o := Options{Rooms: rooms, Store: store, Keys: keys{"remote.test": remoteKey}}
	if remote != nil {
		o.Remote = remote
	}
	e, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return e, store, rooms
}

func TestParseTransaction(t *testing.T) {
	many := func(key string, n int) string {
		return `{"origin":"a","pdus":[],"` + key + `":[` + strings.Repeat(`{},`, n-1) + `{}]}`
	}
	for _, c := range []struct {
		name, body, code string
	}{
		{"ok", `{"origin":"a","pdus":[],"edus":[]}`, ""},
		{"not json", `{`, "M_BAD_JSON"},
		{"pdus not array", `{"pdus":{}}`, "M_BAD_JSON"},
		{"no pdus", `{"origin":"a"}`, "M_BAD_JSON"},
		{"50 pdus", many("pdus", 50), ""},
		{"51 pdus", many("pdus", 51), "M_TOO_LARGE"},
		{"100 edus", many("edus", 100), ""},
		{"101 edus", many("edus", 101), "M_TOO_LARGE"},
	} {
		txn, err := ParseTransaction([]byte(c.body))
		var me *mxhttp.Error
		switch {
		case c.code == "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.code != "" && (!errors.As(err, &me) || me.Code != c.code):
			t.Errorf("%s: got %v, want %s", c.name, err, c.code)
		case c.name == "100 edus" && len(txn.EDUs) != 100:
			t.Errorf("EDUs counted %d", len(txn.EDUs))
		}
	}
}

func TestCheck(t *testing.T) {
	e, _, _ := newEngine(t, nil)
	ctx := context.Background()
	good, goodID := mk(t, "hi", 2, "$head")
	versions := map[id.RoomID]id.RoomVersion{}
	if p, err := e.Check(ctx, "remote.test", good, versions); err != nil || p.EventID != goodID || p.Depth != 2 || versions["!r:x.test"] != "10" {
		t.Fatalf("good PDU: %+v %v", p, err)
	}
	// Relayed by another server (as a resident passes on a join it took
	// through send_join): the sender's signature, checked by the writer,
	// vouches for it, not the origin.
	if p, err := e.Check(ctx, "other.test", good, versions); err != nil || p.EventID != goodID {
		t.Fatalf("relayed PDU: %+v %v", p, err)
	}
	for name, c := range map[string]struct {
		raw    string
		reason string
	}{
		"not json":     {`[`, "bad_json"},
		"no room":      {`{"type":"m.room.message"}`, "bad_json"},
		"unknown room": {`{"room_id":"!nowhere:x.test","type":"m.room.message"}`, "unknown_room"},
		"bad sender":   {`{"room_id":"!r:x.test","type":"m.room.message","sender":"nobody","prev_events":[],"auth_events":[],"depth":1,"content":{}}`, "bad_json"},
		"too large":    {`{"room_id":"!r:x.test","pad":"` + strings.Repeat("x", roomserver.MaxPDUBytes) + `"}`, "too_large"},
	} {
		if _, err := e.Check(ctx, "remote.test", []byte(c.raw), versions); reasonOf(err) != c.reason {
			t.Errorf("%s: %v, want reason %s", name, err, c.reason)
		}
	}
}

func TestFetchMissing(t *testing.T) {
	ctx := context.Background()
	a, aID := mk(t, "a", 2, "$head")
	b, bID := mk(t, "b", 3, aID)
	c, cID := mk(t, "c", 4, bID)
	// The remote answers the latest event with its two ancestors, newest first.
	remote := &chainRemote{byLatest: map[id.EventID][]json.RawMessage{cID: {b, a}}}
	e, store, rooms := newEngine(t, remote)
	p, err := e.Check(ctx, "remote.test", c, map[id.RoomID]id.RoomVersion{})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.FetchMissing(ctx, "remote.test", p); err != nil {
		t.Fatal(err)
	}
	if store.events[string(aID)] == nil || store.events[string(bID)] == nil || len(rooms.inputs) != 2 || rooms.inputs[0] != aID {
		t.Fatalf("inputs %v (want a then b)", rooms.inputs)
	}
	if remote.calls != 1 || remote.limits[0] > 10 {
		t.Fatalf("calls %d limits %v", remote.calls, remote.limits)
	}
	// Asked between our extremities and the PDU alone.
	if !slices.Equal(remote.earliests[0], []id.EventID{"$head"}) || !slices.Equal(remote.latests[0], []id.EventID{cID}) {
		t.Fatalf("asked earliest %v latest %v", remote.earliests, remote.latests)
	}

	// An answer that leaves a gap is not chased with another request from
	// what it sent (Synapse asks once; Complement's TestCorruptedAuthChain
	// refuses any other latest_events): the PDU's prevs stay missing.
	x, xID := mk(t, "x", 2, "$head")
	y, yID := mk(t, "y", 3, xID)
	z, zID := mk(t, "z", 4, yID)
	gappy := &chainRemote{byLatest: map[id.EventID][]json.RawMessage{zID: {y}, yID: {x}}}
	e, store, rooms = newEngine(t, gappy)
	p, _ = e.Check(ctx, "remote.test", z, map[id.RoomID]id.RoomVersion{})
	if err := e.FetchMissing(ctx, "remote.test", p); reasonOf(err) != "missing_prev" {
		t.Fatalf("gap left: %v", err)
	}
	if gappy.calls != 1 || !slices.Equal(gappy.latests[0], []id.EventID{zID}) || len(rooms.inputs) != 0 || store.events[string(yID)] != nil {
		t.Fatalf("gap chased: %d calls, latest %v, inputs %v", gappy.calls, gappy.latests, rooms.inputs)
	}

	// A remote that keeps answering with unconnected events is bounded.
	endless := &endlessRemote{t: t}
	e, _, _ = newEngine(t, endless)
	d, _ := mk(t, "d", 10, "$gone")
	p, _ = e.Check(ctx, "remote.test", d, map[id.RoomID]id.RoomVersion{})
	if err := e.FetchMissing(ctx, "remote.test", p); reasonOf(err) != "missing_prev" {
		t.Fatalf("endless remote: %v", err)
	}
	if endless.calls != 1 || endless.sent > missingLimit {
		t.Fatalf("unbounded: %d calls, %d events", endless.calls, endless.sent)
	}

	// No remote: the gap is the PDU's error.
	e, _, _ = newEngine(t, nil)
	p, _ = e.Check(ctx, "remote.test", d, map[id.RoomID]id.RoomVersion{})
	if err := e.FetchMissing(ctx, "remote.test", p); reasonOf(err) != "missing_prev" {
		t.Fatalf("no remote: %v", err)
	}
}

// endlessRemote answers every request with fresh events whose prevs are unknown.
type endlessRemote struct {
	t     testing.TB
	calls int
	sent  int
}

func (r *endlessRemote) GetMissingEvents(_ context.Context, _ string, _ id.RoomID, _, _ []id.EventID, limit int) ([]json.RawMessage, error) {
	r.calls++
	var out []json.RawMessage
	for i := range 50 { // more than asked
		raw, _ := mk(r.t, fmt.Sprintf("e%d-%d", r.calls, i), 5, id.EventID(fmt.Sprintf("$missing%d-%d", r.calls, i)))
		out = append(out, raw)
	}
	r.sent += min(len(out), limit)
	return out, nil
}

func TestPersist(t *testing.T) {
	ctx := context.Background()
	e, _, rooms := newEngine(t, nil)
	raw, evID := mk(t, "x", 2, "$head")
	p, _ := e.Check(ctx, "remote.test", raw, map[id.RoomID]id.RoomVersion{})
	if res := e.Persist(ctx, "remote.test", p); res != "" {
		t.Fatalf("accepted: %q", res)
	}
	rooms.reject[evID] = true
	if res := e.Persist(ctx, "remote.test", p); !strings.Contains(res, "rejected") {
		t.Fatalf("rejected: %q", res)
	}
}

// TestTransactionOrderAndLimits: PDUs of a room go in depth order whatever
// the order sent; a third concurrent transaction of one origin gets 429; a
// retry of an in-flight transaction waits for it instead of reprocessing.
func TestTransactionOrderAndLimits(t *testing.T) {
	ctx := context.Background()
	e, _, rooms := newEngine(t, nil)
	a, aID := mk(t, "a", 2, "$head")
	b, bID := mk(t, "b", 3, aID)
	body, _ := json.Marshal(map[string]any{"pdus": []json.RawMessage{b, a}})
	res, err := e.Transaction(ctx, "remote.test", "1", body)
	if err != nil || res[string(aID)] != "" || res[string(bID)] != "" || rooms.inputs[0] != aID {
		t.Fatalf("order: %v %v inputs %v", res, err, rooms.inputs)
	}

	rooms.block = make(chan struct{})
	c, _ := mk(t, "c", 4, bID)
	bodyC, _ := json.Marshal(map[string]any{"pdus": []json.RawMessage{c}})
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i, txn := range []string{"2", "3", "2"} {
		wg.Add(1)
		go func() { defer wg.Done(); _, errs[i] = e.Transaction(ctx, "remote.test", txn, bodyC) }()
		time.Sleep(50 * time.Millisecond)
	}
	_, err = e.Transaction(ctx, "remote.test", "4", bodyC)
	var me *mxhttp.Error
	if !errors.As(err, &me) || me.Code != "M_LIMIT_EXCEEDED" || me.Status != 429 {
		t.Fatalf("third concurrent transaction: %v", err)
	}
	// Another origin is not held up by remote.test's.
	if _, err := e.Transaction(ctx, "other.test", "1", []byte(`{"pdus":[]}`)); err != nil {
		t.Fatalf("other origin: %v", err)
	}
	close(rooms.block)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("transaction %d: %v", i, err)
		}
	}
	if n := len(rooms.inputs); n != 4 { // a, b, then c once per distinct transaction (2 and 3)
		t.Fatalf("inputs %v", rooms.inputs)
	}
}

// FuzzParse: the parse stage never panics and bounds what it accepts.
func FuzzParse(f *testing.F) {
	good, _ := mk(f, "x", 2, "$head")
	f.Add([]byte(`{"origin":"a","pdus":[` + string(good) + `],"edus":[]}`))
	f.Add([]byte(`{"pdus":[{"room_id":"!r:x.test"}]}`))
	f.Add([]byte(`{"pdus":[{"room_id":"!r:x.test","event_id":"$x","prev_events":[["$a",{}]]}]}`))
	e, _, _ := newEngine(f, nil)
	f.Fuzz(func(t *testing.T, body []byte) {
		txn, err := ParseTransaction(body)
		if err != nil {
			return
		}
		if len(txn.PDUs) > MaxPDUs || len(txn.EDUs) > MaxEDUs {
			t.Fatalf("bounds not applied: %d PDUs %d EDUs", len(txn.PDUs), len(txn.EDUs))
		}
		for _, raw := range txn.PDUs {
			p, err := e.Check(context.Background(), "remote.test", raw, map[id.RoomID]id.RoomVersion{})
			if err == nil && (len(p.PrevEvents) > maxPrevEvents || p.EventID == "" || len(p.Raw) > roomserver.MaxPDUBytes) {
				t.Fatalf("accepted out of bounds: %+v", p)
			}
		}
	})
}

func TestReasonOf(t *testing.T) {
	for err, want := range map[error]string{
		fail("origin", "x"): "origin",
		fmt.Errorf("%w: ed25519 signature mismatch", roomserver.ErrRejected): "signature",
		fmt.Errorf("%w: prev event $x is unknown", roomserver.ErrRejected):   "missing_prev",
		fmt.Errorf("%w: state before event: no", roomserver.ErrRejected):     "auth",
		errors.New("db down"): "internal",
	} {
		if got := reasonOf(err); got != want {
			t.Errorf("reasonOf(%v) = %s, want %s", err, got, want)
		}
	}
}
