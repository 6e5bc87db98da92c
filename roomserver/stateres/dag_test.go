package stateres

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"

	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/roomserver/authrules"
)

const (
	alice   = id.UserID("@alice:example.com")
	bob     = id.UserID("@bob:example.com")
	charlie = id.UserID("@charlie:example.com")
	evelyn  = id.UserID("@evelyn:example.com")
	zara    = id.UserID("@zara:example.com")
)

const (
	typeCreate = "m.room.create"
	typeMember = "m.room.member"
	typePL     = "m.room.power_levels"
	typeJR     = "m.room.join_rules"
	typeTopic  = "m.room.topic"
	typeMsg    = "m.room.message"
)

var (
	plKey    = pdu.StateKey{Type: typePL}
	jrKey    = pdu.StateKey{Type: typeJR}
	topicKey = pdu.StateKey{Type: typeTopic}
)

func memberKey(user id.UserID) pdu.StateKey {
	return pdu.StateKey{Type: typeMember, StateKey: user.String()}
}

func join() map[string]any               { return map[string]any{"membership": "join"} }
func membership(m string) map[string]any { return map[string]any{"membership": m} }

// testRoom is an in-memory room DAG that builds real PDUs: each event gets
// auth events selected from the state before it (resolved with Resolve when it
// has several prev events), a content hash, and its real event ID (v3+) or
// "$name:example.com" (v1/v2). Events that fail the auth rules against their
// auth events are marked rejected and do not change the state. It is also the
// EventProvider.
type testRoom struct {
	tb      testing.TB
	version id.RoomVersion
	roomID  id.RoomID
	events  map[id.EventID]*pdu.PDU
	ids     map[string]id.EventID // test name → event ID
	names   map[id.EventID]string
	after   map[id.EventID]StateMap
	ts      int64
	calls   int // provider calls
	// tsFromDepth derives origin_server_ts from the depth, so concurrent
	// events tie and the event ID tie-breaks get exercised.
	tsFromDepth bool
}

func newTestRoom(tb testing.TB, version id.RoomVersion) *testRoom {
	tb.Helper()
	r := &testRoom{
		tb:      tb,
		version: version,
		events:  make(map[id.EventID]*pdu.PDU),
		ids:     make(map[string]id.EventID),
		names:   make(map[id.EventID]string),
		after:   make(map[id.EventID]StateMap),
		ts:      1_700_000_000_000,
	}
	if !version.RoomIDIsCreateEventID() {
		r.roomID = "!room:example.com"
	}
	if version.EventIDFormat() == id.EventIDFormatCustom {
		useInternalEventIDs(tb)
	}
	return r
}

// useInternalEventIDs sets the mautrix flag v1/v2 rooms need for the test.
func useInternalEventIDs(tb testing.TB) {
	old := pdu.UseInternalMetaForGetEventID
	pdu.UseInternalMetaForGetEventID = true
	tb.Cleanup(func() { pdu.UseInternalMetaForGetEventID = old })
}

func (r *testRoom) Events(_ context.Context, ids []id.EventID) (map[id.EventID]*pdu.PDU, error) {
	r.calls++
	out := make(map[id.EventID]*pdu.PDU, len(ids))
	for _, evtID := range ids {
		if evt, ok := r.events[evtID]; ok {
			out[evtID] = evt
		}
	}
	return out, nil
}

func (r *testRoom) getEvents(ids []id.EventID) ([]*pdu.PDU, error) {
	out := make([]*pdu.PDU, len(ids))
	for i, evtID := range ids {
		out[i] = r.events[evtID]
	}
	return out, nil
}

// id returns the event ID of a named event.
func (r *testRoom) id(name string) id.EventID {
	r.tb.Helper()
	evtID, ok := r.ids[name]
	if !ok {
		r.tb.Fatalf("no event named %q", name)
	}
	return evtID
}

func (r *testRoom) name(evtID id.EventID) string {
	if n, ok := r.names[evtID]; ok {
		return n
	}
	return string(evtID)
}

func (r *testRoom) stateAfter(name string) StateMap { return r.after[r.id(name)] }

func (r *testRoom) stateBefore(prevs []id.EventID) StateMap {
	r.tb.Helper()
	switch len(prevs) {
	case 0:
		return StateMap{}
	case 1:
		return copyState(r.after[prevs[0]])
	}
	sets := make([]StateMap, len(prevs))
	for i, p := range prevs {
		sets[i] = r.after[p]
	}
	state, err := Resolve(context.Background(), r.version, sets, r)
	if err != nil {
		r.tb.Fatalf("resolving state before event: %v", err)
	}
	return state
}

type eventSpec struct {
	name     string
	sender   id.UserID
	typ      string
	stateKey *string // nil for message events
	content  map[string]any
	prevs    []string
	// authOverride replaces the selected auth events (names), to build events
	// whose auth events disagree with the state.
	authOverride []string
	ts           int64 // origin_server_ts, if not 0
	// eventID, if set, is the event's ID instead of the computed one (needs
	// pdu.UseInternalMetaForGetEventID), to replay a history from elsewhere
	// with its event ID tie-breaks.
	eventID id.EventID
}

func sk(s string) *string { return &s }

// add builds, authorises and stores an event, returning its ID.
func (r *testRoom) add(spec eventSpec) id.EventID {
	r.tb.Helper()
	prevs := make([]id.EventID, len(spec.prevs))
	for i, p := range spec.prevs {
		prevs[i] = r.id(p)
	}
	before := r.stateBefore(prevs)
	evtID, accepted := r.insert(spec, prevs, before)
	after := before
	if spec.stateKey != nil && accepted {
		after = copyState(before)
		after[pdu.StateKey{Type: spec.typ, StateKey: *spec.stateKey}] = evtID
	}
	r.after[evtID] = after
	return evtID
}

// insert builds an event on the given state, authorises it and stores it. It
// does not record the state after the event.
func (r *testRoom) insert(spec eventSpec, prevs []id.EventID, before StateMap) (evtID id.EventID, accepted bool) {
	r.tb.Helper()
	if _, dup := r.ids[spec.name]; dup {
		r.tb.Fatalf("duplicate event name %q", spec.name)
	}
	var depth int64
	for _, p := range prevs {
		depth = max(depth, r.events[p].Depth)
	}
	content := spec.content
	if content == nil {
		content = map[string]any{}
	}
	if spec.typ == typeCreate {
		content = map[string]any{"room_version": string(r.version)}
		if r.version.CreatorInContent() {
			content["creator"] = spec.sender.String()
		}
		for k, v := range spec.content {
			content[k] = v
		}
	}
	rawContent, err := json.Marshal(content)
	if err != nil {
		r.tb.Fatal(err)
	}
	r.ts++
	ts := r.ts
	if r.tsFromDepth {
		ts = 1_700_000_000_000 + depth
	}
	if spec.ts != 0 {
		ts = spec.ts
	}
	evt := &pdu.PDU{
		AuthEvents:     []id.EventID{},
		Content:        rawContent,
		Depth:          depth + 1,
		OriginServerTS: ts,
		PrevEvents:     prevs,
		RoomID:         r.roomID,
		Sender:         spec.sender,
		StateKey:       spec.stateKey,
		Type:           spec.typ,
	}
	isCreate := spec.typ == typeCreate
	if isCreate && r.version.RoomIDIsCreateEventID() {
		evt.RoomID = ""
	}
	if spec.authOverride != nil {
		for _, a := range spec.authOverride {
			evt.AuthEvents = append(evt.AuthEvents, r.id(a))
		}
	} else {
		for _, key := range evt.AuthEventSelection(r.version) {
			if authID, ok := before[key]; ok {
				evt.AuthEvents = append(evt.AuthEvents, authID)
			}
		}
	}
	if err = evt.FillContentHash(); err != nil {
		r.tb.Fatal(err)
	}
	if spec.eventID != "" {
		evtID = spec.eventID
	} else if r.version.EventIDFormat() == id.EventIDFormatCustom {
		evtID = id.EventID(fmt.Sprintf("$%s:example.com", spec.name))
	} else if evtID, err = evt.GetEventID(r.version); err != nil {
		r.tb.Fatal(err)
	}
	evt.InternalMeta.EventID = evtID
	if isCreate && r.version.RoomIDIsCreateEventID() {
		r.roomID = id.RoomID("!" + evtID[1:])
	}
	r.events[evtID] = evt
	r.ids[spec.name] = evtID
	r.names[evtID] = spec.name

	if err = authrules.Authorize(r.version, evt, nil, r.getEvents, nil); err != nil {
		evt.InternalMeta.Rejected = true
	}
	return evtID, !evt.InternalMeta.Rejected
}

// joinChain adds a chain of joins after prev without copying the state per
// event, for building large rooms. Only the state after the last join is
// recorded; it is returned under the last join's name.
func (r *testRoom) joinChain(prev string, members []id.UserID) string {
	r.tb.Helper()
	state := copyState(r.stateAfter(prev))
	prevID := r.id(prev)
	var evtID id.EventID
	for _, u := range members {
		spec := eventSpec{name: "J_" + u.Localpart(), sender: u, typ: typeMember, stateKey: sk(u.String()), content: join()}
		var accepted bool
		if evtID, accepted = r.insert(spec, []id.EventID{prevID}, state); !accepted {
			r.tb.Fatalf("join of %s rejected", u)
		}
		state[memberKey(u)] = evtID
		prevID = evtID
	}
	r.after[evtID] = state
	return r.name(evtID)
}

// state adds a state event; must passes the auth rules.
func (r *testRoom) state(name string, sender id.UserID, typ, stateKey string, content map[string]any, prevs ...string) id.EventID {
	r.tb.Helper()
	evtID := r.add(eventSpec{name: name, sender: sender, typ: typ, stateKey: sk(stateKey), content: content, prevs: prevs})
	if r.events[evtID].InternalMeta.Rejected {
		r.tb.Fatalf("test event %s was rejected by the auth rules", name)
	}
	return evtID
}

func (r *testRoom) message(name string, sender id.UserID, prevs ...string) id.EventID {
	r.tb.Helper()
	return r.add(eventSpec{name: name, sender: sender, typ: typeMsg, content: map[string]any{"body": name}, prevs: prevs})
}

func (r *testRoom) rejected(name string) bool { return r.events[r.id(name)].InternalMeta.Rejected }

// resolve resolves the states after the named events.
func (r *testRoom) resolve(names ...string) StateMap {
	r.tb.Helper()
	sets := make([]StateMap, len(names))
	for i, n := range names {
		sets[i] = r.stateAfter(n)
	}
	state, err := Resolve(context.Background(), r.version, sets, r)
	if err != nil {
		r.tb.Fatalf("Resolve: %v", err)
	}
	return state
}

// describe renders a state map with test names, for failure messages.
func (r *testRoom) describe(s StateMap) string {
	lines := make([]string, 0, len(s))
	for k, v := range s {
		lines = append(lines, fmt.Sprintf("%s/%s=%s", k.Type, k.StateKey, r.name(v)))
	}
	slices.Sort(lines)
	return fmt.Sprint(lines)
}

func (r *testRoom) assertState(got, want StateMap) {
	r.tb.Helper()
	if len(got) != len(want) {
		r.tb.Errorf("state mismatch:\n got %s\nwant %s", r.describe(got), r.describe(want))
		return
	}
	for k, v := range want {
		if got[k] != v {
			r.tb.Errorf("state mismatch at %s/%s:\n got %s\nwant %s", k.Type, k.StateKey, r.describe(got), r.describe(want))
			return
		}
	}
}

// assertWinner checks one key of a resolved state.
func (r *testRoom) assertWinner(state StateMap, key pdu.StateKey, want string) {
	r.tb.Helper()
	got, ok := state[key]
	switch {
	case want == "" && ok:
		r.tb.Errorf("%s/%s: got %s, want no entry", key.Type, key.StateKey, r.name(got))
	case want != "" && got != r.id(want):
		r.tb.Errorf("%s/%s: got %s, want %s", key.Type, key.StateKey, r.name(got), want)
	}
}

// assertNames compares a set of event IDs with the expected test names.
func assertNames(t *testing.T, r *testRoom, what string, got []id.EventID, want ...string) {
	t.Helper()
	gotNames := make([]string, len(got))
	for i, evtID := range got {
		gotNames[i] = r.name(evtID)
	}
	slices.Sort(gotNames)
	want = slices.Clone(want)
	slices.Sort(want)
	if !slices.Equal(gotNames, want) {
		t.Errorf("%s: got %v, want %v", what, gotNames, want)
	}
}
