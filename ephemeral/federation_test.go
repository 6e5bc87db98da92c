package ephemeral

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/myelin-chat/myelin/storage"
)

// fakes: the store, the rooms, the stream, the notifier and the EDU queue,
// enough for the module's federation paths.

type fakeStore struct {
	mu       sync.Mutex
	receipts map[string]storage.Receipt // room|user|type|thread
	presence map[string]storage.Presence
	writes   int
}

func (f *fakeStore) UpsertReceipt(_ context.Context, r storage.Receipt) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.receipts[r.RoomID+"|"+r.UserID+"|"+r.Type+"|"+r.ThreadID] = r
	return nil
}

func (f *fakeStore) GetPresence(_ context.Context, userID string) (*storage.Presence, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p, ok := f.presence[userID]
	if !ok {
		return nil, storage.ErrNotFound
	}
	return &p, nil
}

func (f *fakeStore) SetPresence(_ context.Context, p storage.Presence) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.presence[p.UserID] = p
	f.writes++
	return nil
}

func (f *fakeStore) PresenceSince(_ context.Context, users []string, from, to int64) ([]storage.Presence, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []storage.Presence
	for _, u := range users {
		if p, ok := f.presence[u]; ok && p.Pos > from && p.Pos <= to {
			out = append(out, p)
		}
	}
	return out, nil
}
func (f *fakeStore) UsersNotOffline(context.Context) ([]string, error) { return nil, nil }

type fakeRooms struct {
	members  map[string][]string // room → joined users
	acl      map[string]string   // room → ACL event JSON
	events   map[string]int64    // event → position
	sharing  map[string][]string // user → users sharing a room
	servers  map[string][]string // user → servers sharing a room
	rServers map[string][]string // room → joined servers
	// memberEvents are the membership events a join may replace.
	memberEvents map[string]*storage.Event
}

func (f *fakeRooms) GetMembership(_ context.Context, roomID, userID string) (*storage.Membership, error) {
	if slices.Contains(f.members[roomID], userID) {
		return &storage.Membership{RoomID: roomID, UserID: userID, Membership: "join"}, nil
	}
	return nil, storage.ErrNotFound
}
func (f *fakeRooms) JoinedMembers(_ context.Context, roomID string) ([]string, error) {
	return f.members[roomID], nil
}
func (f *fakeRooms) UsersSharingRooms(_ context.Context, userID string) ([]string, error) {
	return f.sharing[userID], nil
}
func (f *fakeRooms) EventPosition(_ context.Context, _, eventID string) (int64, error) {
	if pos, ok := f.events[eventID]; ok {
		return pos, nil
	}
	return 0, storage.ErrNotFound
}
func (f *fakeRooms) CurrentStateEvent(_ context.Context, roomID, evType, _ string) (*storage.Event, error) {
	if js, ok := f.acl[roomID]; ok && evType == "m.room.server_acl" {
		return &storage.Event{JSON: []byte(js)}, nil
	}
	return nil, storage.ErrNotFound
}
func (f *fakeRooms) JoinedServers(_ context.Context, roomID string) ([]string, error) {
	return slices.Clone(f.rServers[roomID]), nil
}
func (f *fakeRooms) GetEvent(_ context.Context, eventID string) (*storage.Event, error) {
	if ev, ok := f.memberEvents[eventID]; ok {
		return ev, nil
	}
	return nil, storage.ErrNotFound
}
func (f *fakeRooms) ServersSharingRoomsWith(_ context.Context, userID string) ([]string, error) {
	return slices.Clone(f.servers[userID]), nil
}

type fakeStream struct {
	mu  sync.Mutex
	pos int64
}

func (f *fakeStream) Allocate() (int64, func(), error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pos++
	return f.pos, func() {}, nil
}

type fakeNotifier struct{}

func (fakeNotifier) Notify(int64, ...string) {}
func (fakeNotifier) Wake(...string)          {}

type sentEDU struct {
	Dests     []string
	Type      string
	Content   map[string]any
	Ephemeral bool
}

type fakeEDUs struct {
	mu   sync.Mutex
	sent []sentEDU
}

func (f *fakeEDUs) QueueEDU(_ context.Context, dests []string, typ string, content json.RawMessage, ephemeral bool) error {
	var c map[string]any
	if err := json.Unmarshal(content, &c); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sent = append(f.sent, sentEDU{Dests: dests, Type: typ, Content: c, Ephemeral: ephemeral})
	return nil
}

func (f *fakeEDUs) take() []sentEDU {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := f.sent
	f.sent = nil
	return out
}

type movedReceipts struct{ users []string }

func (m *movedReceipts) ReceiptMoved(userID, _ string) { m.users = append(m.users, userID) }

const (
	room       = "!room:a.test"
	deniedRm   = "!acl:a.test"
	alice      = "@alice:a.test" // ours
	bob        = "@bob:b.test"   // b.test's
	carol      = "@carol:c.test" // c.test's, not joined to room
	eventOne   = "$one"
	eventTwo   = "$two"
	threadRoot = "$root"
)

type fixture struct {
	s     *Service
	store *fakeStore
	rooms *fakeRooms
	edus  *fakeEDUs
	moved *movedReceipts
}

func newFixture(t *testing.T, presence bool) *fixture {
	t.Helper()
	f := &fixture{
		store: &fakeStore{receipts: map[string]storage.Receipt{}, presence: map[string]storage.Presence{}},
		rooms: &fakeRooms{
			members:  map[string][]string{room: {alice, bob}, deniedRm: {alice, bob}},
			acl:      map[string]string{deniedRm: `{"content":{"deny":["b.test"]}}`},
			events:   map[string]int64{eventOne: 1, eventTwo: 2, threadRoot: 1},
			sharing:  map[string][]string{alice: {alice, bob}, bob: {alice, bob}, carol: {"@dave:c.test"}},
			servers:  map[string][]string{alice: {"a.test", "b.test"}, bob: {"a.test", "b.test"}},
			rServers: map[string][]string{room: {"a.test", "b.test"}, deniedRm: {"a.test", "b.test"}},
		},
		edus:  &fakeEDUs{},
		moved: &movedReceipts{},
	}
	f.s = New(Options{Store: f.store, Stream: &fakeStream{}, Rooms: f.rooms, Notifier: fakeNotifier{},
		Receipts: f.moved, Presence: presence, ServerName: "a.test", EDUs: f.edus,
		ServerACL: func(pdu []byte, server string) bool { return !strings.Contains(string(pdu), `"`+server+`"`) }})
	t.Cleanup(f.s.Close)
	return f
}

func jsonOf(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestOutboundTyping: our user's typing starts, stops and expires as m.typing
// EDUs to the room's other servers, ephemeral; a remote user's is not echoed.
func TestOutboundTyping(t *testing.T) {
	f := newFixture(t, false)
	ctx := context.Background()
	if err := f.s.SetTyping(ctx, room, alice, true, time.Minute); err != nil {
		t.Fatal(err)
	}
	want := `[{"Dests":["b.test"],"Type":"m.typing","Content":{"room_id":"!room:a.test","typing":true,"user_id":"@alice:a.test"},"Ephemeral":true}]`
	if got := jsonOf(t, f.edus.take()); got != want {
		t.Fatalf("start: %s", got)
	}
	if err := f.s.SetTyping(ctx, room, alice, true, time.Minute); err != nil {
		t.Fatal(err)
	}
	if got := f.edus.take(); len(got) != 0 {
		t.Fatalf("an immediate refresh was sent again: %v", got)
	}
	if err := f.s.SetTyping(ctx, room, alice, false, 0); err != nil {
		t.Fatal(err)
	}
	if got := f.edus.take(); len(got) != 1 || got[0].Content["typing"] != false {
		t.Fatalf("stop: %v", got)
	}
	// Expiry of our user's typing is a stop too.
	if err := f.s.SetTyping(ctx, room, alice, true, 20*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	var got []sentEDU
	for len(got) < 2 && time.Now().Before(deadline) {
		got = append(got, f.edus.take()...)
		time.Sleep(5 * time.Millisecond)
	}
	if len(got) != 2 || got[0].Content["typing"] != true || got[1].Content["typing"] != false {
		t.Fatalf("start then expiry: %v", got)
	}
	// A remote user's typing is applied, not sent on.
	if err := f.s.ReceiveTyping(ctx, "b.test", json.RawMessage(`{"room_id":"`+room+`","user_id":"`+bob+`","typing":true}`)); err != nil {
		t.Fatal(err)
	}
	if got := f.edus.take(); len(got) != 0 {
		t.Fatalf("remote typing echoed: %v", got)
	}
}

// TestOutboundReceipts: m.read (SendReceipt and read_markers) goes out
// durably with ts and thread_id; m.read.private never does.
func TestOutboundReceipts(t *testing.T) {
	f := newFixture(t, false)
	ctx := context.Background()
	if err := f.s.SendReceipt(ctx, room, alice, ReceiptRead, eventOne, ""); err != nil {
		t.Fatal(err)
	}
	got := f.edus.take()
	if len(got) != 1 || got[0].Type != "m.receipt" || got[0].Ephemeral || !slices.Equal(got[0].Dests, []string{"b.test"}) {
		t.Fatalf("receipt: %s", jsonOf(t, got))
	}
	r := got[0].Content[room].(map[string]any)["m.read"].(map[string]any)[alice].(map[string]any)
	data := r["data"].(map[string]any)
	if jsonOf(t, r["event_ids"]) != `["$one"]` || data["ts"].(float64) <= 0 || data["thread_id"] != nil {
		t.Fatalf("receipt content: %s", jsonOf(t, r))
	}
	if err := f.s.SendReceipt(ctx, room, alice, ReceiptRead, eventTwo, threadRoot); err != nil {
		t.Fatal(err)
	}
	got = f.edus.take()
	if len(got) != 1 || !strings.Contains(jsonOf(t, got[0].Content), `"thread_id":"$root"`) {
		t.Fatalf("threaded receipt: %s", jsonOf(t, got))
	}
	if err := f.s.SendReceipt(ctx, room, alice, ReceiptReadPrivate, eventTwo, ""); err != nil {
		t.Fatal(err)
	}
	if got := f.edus.take(); len(got) != 0 {
		t.Fatalf("m.read.private sent: %s", jsonOf(t, got))
	}
	if err := f.s.SetReadMarkers(ctx, room, alice, "", "", eventTwo); err != nil {
		t.Fatal(err)
	}
	if got := f.edus.take(); len(got) != 0 {
		t.Fatalf("read_markers m.read.private sent: %s", jsonOf(t, got))
	}
	if err := f.s.SetReadMarkers(ctx, room, alice, "", eventTwo, ""); err != nil {
		t.Fatal(err)
	}
	if got := f.edus.take(); len(got) != 1 || got[0].Type != "m.receipt" {
		t.Fatalf("read_markers m.read: %s", jsonOf(t, got))
	}
}

// TestOutboundPresence: a visible change of our user's presence goes to the
// servers sharing a room with them (not ours), an invisible one does not,
// decay does, and nothing goes with presence off.
func TestOutboundPresence(t *testing.T) {
	f := newFixture(t, true)
	ctx := context.Background()
	msg := "lunch"
	if err := f.s.SetPresence(ctx, alice, PresenceOnline, &msg, true); err != nil {
		t.Fatal(err)
	}
	got := f.edus.take()
	if len(got) != 1 || got[0].Type != "m.presence" || !got[0].Ephemeral || !slices.Equal(got[0].Dests, []string{"b.test"}) {
		t.Fatalf("presence: %s", jsonOf(t, got))
	}
	push := got[0].Content["push"].([]any)[0].(map[string]any)
	if push["user_id"] != alice || push["presence"] != "online" || push["status_msg"] != "lunch" || push["currently_active"] != true {
		t.Fatalf("presence content: %s", jsonOf(t, push))
	}
	// The same again, and a sync's online: nothing visible changed.
	if err := f.s.SetPresence(ctx, alice, PresenceOnline, &msg, true); err != nil {
		t.Fatal(err)
	}
	if err := f.s.SetPresence(ctx, alice, PresenceOnline, nil, false); err != nil {
		t.Fatal(err)
	}
	if got := f.edus.take(); len(got) != 0 {
		t.Fatalf("unchanged presence sent: %s", jsonOf(t, got))
	}
	other := "back soon"
	if err := f.s.SetPresence(ctx, alice, PresenceOnline, &other, true); err != nil {
		t.Fatal(err)
	}
	if got := f.edus.take(); len(got) != 1 {
		t.Fatalf("status change: %s", jsonOf(t, got))
	}
	// Idle decay: unavailable, sent.
	f.s.SetPresenceTimeouts(20*time.Millisecond, time.Hour)
	f.s.touchPresence(alice)
	deadline := time.Now().Add(5 * time.Second)
	for got = nil; len(got) == 0 && time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		got = f.edus.take()
	}
	if len(got) != 1 || !strings.Contains(jsonOf(t, got[0].Content), `"presence":"unavailable"`) {
		t.Fatalf("decay: %s", jsonOf(t, got))
	}

	off := newFixture(t, false)
	if err := off.s.SetPresence(ctx, alice, PresenceOnline, &msg, true); err != nil {
		t.Fatal(err)
	}
	if got := off.edus.take(); len(got) != 0 {
		t.Fatalf("presence off but sent: %s", jsonOf(t, got))
	}
	// A user sharing rooms with no other server: nothing to send.
	f.rooms.servers[alice] = []string{"a.test"}
	if err := f.s.SetPresence(ctx, alice, PresenceOffline, nil, true); err != nil {
		t.Fatal(err)
	}
	if got := f.edus.take(); len(got) != 0 {
		t.Fatalf("sent with no other server: %s", jsonOf(t, got))
	}
}

// TestReceiveTypingChecks: only origin's own users, joined to a room whose
// ACL lets origin in, type; a remote user's typing times out.
func TestReceiveTypingChecks(t *testing.T) {
	f := newFixture(t, false)
	ctx := context.Background()
	edu := func(roomID, userID string, typing bool) json.RawMessage {
		return json.RawMessage(fmt.Sprintf(`{"room_id":%q,"user_id":%q,"typing":%v}`, roomID, userID, typing))
	}
	for _, c := range []struct {
		name, origin, room, user string
	}{
		{"another server's user", "c.test", room, bob},
		{"a user not joined", "c.test", room, carol},
		{"an unknown room", "b.test", "!nowhere:a.test", bob},
		{"an ACL-denied origin", "b.test", deniedRm, bob},
		{"a bad user ID", "b.test", room, "bob"},
	} {
		if err := f.s.ReceiveTyping(ctx, c.origin, edu(c.room, c.user, true)); err == nil {
			t.Errorf("%s: no error", c.name)
		}
		if users, _ := f.s.TypingSince(c.room, 0); len(users) != 0 {
			t.Errorf("%s: typing applied: %v", c.name, users)
		}
	}
	if err := f.s.ReceiveTyping(ctx, "b.test", json.RawMessage(`{"room_id":`)); err == nil {
		t.Error("bad JSON: no error")
	}
	if err := f.s.ReceiveTyping(ctx, "b.test", edu(room, bob, true)); err != nil {
		t.Fatal(err)
	}
	if users, _ := f.s.TypingSince(room, 0); !slices.Equal(users, []string{bob}) {
		t.Fatalf("typing: %v", users)
	}
	if err := f.s.ReceiveTyping(ctx, "b.test", edu(room, bob, false)); err != nil {
		t.Fatal(err)
	}
	if users, _ := f.s.TypingSince(room, 0); len(users) != 0 {
		t.Fatalf("after stop: %v", users)
	}
}

// TestReceiveReceiptChecks: the parts of an m.receipt EDU origin may speak
// for are stored (threaded too), the rest dropped; unread counts of remote
// users are not touched.
func TestReceiveReceiptChecks(t *testing.T) {
	f := newFixture(t, false)
	ctx := context.Background()
	f.rooms.members[room] = append(f.rooms.members[room], "@bert:b.test", "@bea:b.test", "@bo:b.test")
	content := fmt.Sprintf(`{
		%q: {"m.read": {
			%q: {"event_ids": ["$one", "$two"], "data": {"ts": 1234}},
			%q: {"event_ids": ["$one"], "data": {"ts": 1}},
			"@nobody:b.test": {"event_ids": ["$one"], "data": {"ts": 1}},
			"@bert:b.test": {"event_ids": ["$two"], "data": {"ts": 5, "thread_id": "$root"}},
			"@bea:b.test": {"event_ids": ["$1","$2","$3","$4","$5","$6","$7","$8","$9","$10","$11"], "data": {}},
			"@bo:b.test": {"event_ids": ["not-an-event"], "data": {}}
		}, "m.read.private": {%q: {"event_ids": ["$one"], "data": {}}}},
		%q: {"m.read": {%q: {"event_ids": ["$one"], "data": {}}}},
		"!unknown:a.test": {"m.read": {"@bob:b.test": {"event_ids": ["$one"], "data": {}}}}
	}`, room, bob, alice, bob, deniedRm, bob)
	err := f.s.ReceiveReceipt(ctx, "b.test", json.RawMessage(content))
	if err == nil {
		t.Fatal("no parts reported dropped")
	}
	var keys []string
	for k := range f.store.receipts {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	want := []string{room + "|@bert:b.test|m.read|$root", room + "|" + bob + "|m.read|"}
	if !slices.Equal(keys, want) {
		t.Fatalf("stored %v (err %v), want %v", keys, err, want)
	}
	if r := f.store.receipts[want[1]]; r.EventID != eventTwo || r.TS != 1234 {
		t.Fatalf("bob's receipt: %+v (the latest known event, the sender's ts)", r)
	}
	if len(f.moved.users) != 0 {
		t.Fatalf("remote receipts reset unread counts of %v", f.moved.users)
	}
	if got := f.edus.take(); len(got) != 0 {
		t.Fatalf("remote receipt echoed: %s", jsonOf(t, got))
	}
	// A room where the origin has no joined member (or we do not know):
	// dropped whole, without looking at its users.
	other := json.RawMessage(jsonOf(t, map[string]any{"!elsewhere:c.test": map[string]any{"m.read": map[string]any{
		bob: map[string]any{"event_ids": []string{"$x"}, "data": map[string]any{"ts": 1}}}}}))
	if err := f.s.ReceiveReceipt(ctx, "b.test", other); err == nil || !strings.Contains(err.Error(), "has no member joined") {
		t.Fatalf("receipt for a room b.test is not in: %v", err)
	}
	// Bounds: rooms beyond MaxReceiptRooms are dropped.
	many := map[string]any{}
	for i := range MaxReceiptRooms + 5 {
		many[fmt.Sprintf("!r%03d:a.test", i)] = map[string]any{}
	}
	if err := f.s.ReceiveReceipt(ctx, "b.test", json.RawMessage(jsonOf(t, many))); err == nil ||
		!strings.Contains(err.Error(), "5 rooms over") {
		t.Fatalf("too many rooms: %v", err)
	}
}

// TestReceivePresenceChecks: origin's own users sharing a room with ours
// are stored (once per visible change); others dropped; presence off ignores all.
func TestReceivePresenceChecks(t *testing.T) {
	f := newFixture(t, true)
	ctx := context.Background()
	long := strings.Repeat("x", MaxStatusMsgBytes+1)
	content := jsonOf(t, map[string]any{"push": []any{
		map[string]any{"user_id": bob, "presence": "online", "status_msg": "hi", "last_active_ago": 5000, "currently_active": true},
		map[string]any{"user_id": "@impostor:a.test", "presence": "online"},
		map[string]any{"user_id": "@bob2:b.test", "presence": "online"}, // shares no room with ours
		map[string]any{"user_id": "@bob3:b.test", "presence": "dancing"},
		map[string]any{"user_id": "@bob4:b.test", "presence": "online", "status_msg": long},
	}})
	for _, u := range []string{"@bob3:b.test", "@bob4:b.test"} {
		f.rooms.sharing[u] = []string{alice}
		f.rooms.servers[u] = []string{"a.test", "b.test"}
	}
	if err := f.s.ReceivePresence(ctx, "b.test", json.RawMessage(content)); err == nil {
		t.Fatal("no parts reported dropped")
	}
	if len(f.store.presence) != 1 {
		t.Fatalf("stored %v", f.store.presence)
	}
	p := f.store.presence[bob]
	if p.State != "online" || *p.StatusMsg != "hi" || !p.CurrentlyActive || time.Now().UnixMilli()-p.LastActiveTS < 5000 {
		t.Fatalf("bob's presence: %+v", p)
	}
	got, err := f.s.GetPresence(ctx, alice, bob)
	if err != nil || got.Presence != "online" || *got.StatusMsg != "hi" {
		t.Fatalf("GET presence of bob: %+v %v", got, err)
	}
	writes := f.store.writes
	again := jsonOf(t, map[string]any{"push": []any{map[string]any{"user_id": bob, "presence": "online", "status_msg": "hi", "last_active_ago": 9000, "currently_active": true}}})
	if err := f.s.ReceivePresence(ctx, "b.test", json.RawMessage(again)); err != nil {
		t.Fatal(err)
	}
	if f.store.writes != writes {
		t.Fatal("an invisible change was written")
	}
	if got := f.edus.take(); len(got) != 0 {
		t.Fatalf("remote presence echoed: %s", jsonOf(t, got))
	}

	off := newFixture(t, false)
	if err := off.s.ReceivePresence(ctx, "b.test", json.RawMessage(content)); err != nil {
		t.Fatal(err)
	}
	if len(off.store.presence) != 0 {
		t.Fatalf("stored with presence off: %v", off.store.presence)
	}
}
