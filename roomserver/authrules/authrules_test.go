package authrules

import (
	"encoding/json"
	"errors"
	"fmt"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"maunium.net/go/mautrix/federation/eventauth"
	"maunium.net/go/mautrix/federation/pdu"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/internal/metrics"
	"github.com/myelin-chat/myelin/internal/recovery"
)

const (
	alice = id.UserID("@alice:example.com")
	bob   = id.UserID("@bob:example.com")
	carol = id.UserID("@carol:example.com")
)

// room builds a linear room history of real PDUs for one room version.
type room struct {
	t       *testing.T
	version id.RoomVersion
	roomID  id.RoomID
	events  map[id.EventID]*pdu.PDU
	state   map[pdu.StateKey]id.EventID
	depth   int64
	last    id.EventID
}

func newRoom(t *testing.T, version id.RoomVersion, creatorLevels map[id.UserID]int) *room {
	r := &room{t: t, version: version, events: map[id.EventID]*pdu.PDU{}, state: map[pdu.StateKey]id.EventID{}}
	if !version.RoomIDIsCreateEventID() {
		r.roomID = "!room:example.com"
	}
	create := map[string]any{"room_version": string(version)}
	if version.CreatorInContent() {
		create["creator"] = alice
	}
	r.add(alice, "m.room.create", create)
	r.add(alice, "m.room.member", map[string]any{"membership": "join"}, alice.String())
	r.add(alice, "m.room.power_levels", map[string]any{"users": creatorLevels})
	r.add(alice, "m.room.join_rules", map[string]any{"join_rule": "public"})
	for u := range creatorLevels {
		if u != alice {
			r.add(u, "m.room.member", map[string]any{"membership": "join"}, u.String())
		}
	}
	return r
}

// build makes an event on the current state without applying it.
func (r *room) build(sender id.UserID, typ string, content map[string]any, stateKey ...string) *pdu.PDU {
	r.t.Helper()
	raw, err := json.Marshal(content)
	if err != nil {
		r.t.Fatal(err)
	}
	sk := ""
	if len(stateKey) > 0 {
		sk = stateKey[0]
	}
	evt := &pdu.PDU{Type: typ, StateKey: &sk, Sender: sender, Content: raw, RoomID: r.roomID,
		Depth: r.depth + 1, OriginServerTS: 1_700_000_000_000 + r.depth, AuthEvents: []id.EventID{}, PrevEvents: []id.EventID{}}
	if r.last != "" {
		evt.PrevEvents = []id.EventID{r.last}
	}
	if typ == "m.room.create" && r.version.RoomIDIsCreateEventID() {
		evt.RoomID = ""
	}
	for _, key := range evt.AuthEventSelection(r.version) {
		if authID, ok := r.state[key]; ok {
			evt.AuthEvents = append(evt.AuthEvents, authID)
		}
	}
	if err = evt.FillContentHash(); err != nil {
		r.t.Fatal(err)
	}
	evtID, err := evt.GetEventID(r.version)
	if err != nil {
		r.t.Fatal(err)
	}
	evt.InternalMeta.EventID = evtID
	return evt
}

// add builds an event, requires the auth rules to allow it and applies it.
func (r *room) add(sender id.UserID, typ string, content map[string]any, stateKey ...string) {
	r.t.Helper()
	evt := r.build(sender, typ, content, stateKey...)
	r.events[evt.InternalMeta.EventID] = evt
	if err := Authorize(r.version, evt, nil, r.getEvents, nil); err != nil {
		r.t.Fatalf("setting up %s from %s: %v", typ, sender, err)
	}
	if typ == "m.room.create" && r.version.RoomIDIsCreateEventID() {
		r.roomID = id.RoomID("!" + evt.InternalMeta.EventID[1:])
	}
	r.state[pdu.StateKey{Type: typ, StateKey: *evt.StateKey}] = evt.InternalMeta.EventID
	r.depth++
	r.last = evt.InternalMeta.EventID
}

func (r *room) getEvents(ids []id.EventID) ([]*pdu.PDU, error) {
	out := make([]*pdu.PDU, len(ids))
	for i, evtID := range ids {
		out[i] = r.events[evtID]
	}
	return out, nil
}

// authEvents are the precomputed auth events of evt, as state resolution
// passes them.
func (r *room) authEvents(evt *pdu.PDU) []*pdu.PDU {
	out := []*pdu.PDU{}
	for _, key := range evt.AuthEventSelection(r.version) {
		if authID, ok := r.state[key]; ok {
			out = append(out, r.events[authID])
		}
	}
	return out
}

// mautrixAuthorize calls eventauth directly and reports whether it panicked.
func mautrixAuthorize(version id.RoomVersion, evt *pdu.PDU, authEvents []*pdu.PDU, getEvents eventauth.GetEventsFunc) (err error, panicked bool) {
	defer func() {
		if recover() != nil {
			panicked = true
		}
	}()
	return eventauth.Authorize(version, evt, authEvents, getEvents, nil), false
}

// TestUsersChangeRule drives the power levels `users` rule through Authorize
// on both ways eventauth gets auth events. Where mautrix itself does not
// panic, the answer must be mautrix's; where it panics (removing an entry at
// the sender's own level) the event must be rejected by the rule, not by the
// panic recovery.
func TestUsersChangeRule(t *testing.T) {
	type tc struct {
		name    string
		levels  map[id.UserID]int // before; alice is the creator and sends unless sender is set
		sender  id.UserID
		newPL   map[string]any
		allowed bool
	}
	cases := []tc{
		{"remove other at sender level", map[id.UserID]int{alice: 100, bob: 100}, alice, map[string]any{"users": map[id.UserID]int{alice: 100}}, false},
		{"remove other at sender level among others", map[id.UserID]int{alice: 100, bob: 50, carol: 50}, bob, map[string]any{"users": map[id.UserID]int{alice: 100, bob: 50}}, false},
		{"lower other at sender level", map[id.UserID]int{alice: 100, bob: 100}, alice, map[string]any{"users": map[id.UserID]int{alice: 100, bob: 50}}, false},
		{"remove other below sender level", map[id.UserID]int{alice: 100, bob: 50}, alice, map[string]any{"users": map[id.UserID]int{alice: 100}}, true},
		{"remove own entry", map[id.UserID]int{alice: 100, bob: 100}, bob, map[string]any{"users": map[id.UserID]int{alice: 100}}, true},
		{"remove own entry, other at equal level", map[id.UserID]int{alice: 100, bob: 100, carol: 100}, bob, map[string]any{"users": map[id.UserID]int{alice: 100}}, false},
		{"keep other at sender level", map[id.UserID]int{alice: 100, bob: 100}, alice, map[string]any{"users": map[id.UserID]int{alice: 100, bob: 100, carol: 5}}, true},
		{"remove users map", map[id.UserID]int{alice: 100, bob: 100}, alice, map[string]any{}, false},
	}
	for _, version := range []id.RoomVersion{id.RoomV9, id.RoomV10, id.RoomV11, id.RoomV12} {
		for _, c := range cases {
			t.Run(fmt.Sprintf("v%s/%s", version, c.name), func(t *testing.T) {
				levels := c.levels
				if version.PrivilegedRoomCreators() {
					// Creators have no entry in v12; alice stays the creator and
					// the case is about the others.
					if c.sender == alice {
						t.Skip("creators may change any level in v12; see TestCreatorsSkipUsersRule")
					}
					levels = map[id.UserID]int{}
					for u, l := range c.levels {
						if u != alice {
							levels[u] = l
						}
					}
				}
				r := newRoom(t, version, levels)
				content := c.newPL
				if version.PrivilegedRoomCreators() {
					content = withoutUser(content, alice)
				}
				evt := r.build(c.sender, "m.room.power_levels", content)
				r.events[evt.InternalMeta.EventID] = evt
				before := testutil.ToFloat64(metrics.PanicsRecovered.WithLabelValues(recovery.EventAuth))
				for _, precomputed := range []bool{false, true} {
					var authEvents []*pdu.PDU
					if precomputed {
						authEvents = r.authEvents(evt)
					}
					err := Authorize(version, evt, authEvents, r.getEvents, nil)
					var pe *recovery.PanicError
					if errors.As(err, &pe) {
						t.Fatalf("precomputed=%v: rejected by a recovered panic, not by the rules: %v", precomputed, err)
					}
					if (err == nil) != c.allowed {
						t.Fatalf("precomputed=%v: allowed=%v (%v), want %v", precomputed, err == nil, err, c.allowed)
					}
					if merr, panicked := mautrixAuthorize(version, evt, authEvents, r.getEvents); !panicked && (merr == nil) != (err == nil) {
						t.Fatalf("precomputed=%v: mautrix says %v, we say %v", precomputed, merr, err)
					}
				}
				if after := testutil.ToFloat64(metrics.PanicsRecovered.WithLabelValues(recovery.EventAuth)); after != before {
					t.Fatalf("%v panics recovered", after-before)
				}
			})
		}
	}
}

func withoutUser(content map[string]any, user id.UserID) map[string]any {
	out := map[string]any{}
	for k, v := range content {
		out[k] = v
	}
	if us, ok := content["users"].(map[id.UserID]int); ok {
		copied := map[id.UserID]int{}
		for u, l := range us {
			if u != user {
				copied[u] = l
			}
		}
		out["users"] = copied
	}
	return out
}

// TestCreatorsSkipUsersRule: in v12 a creator may remove any entry.
func TestCreatorsSkipUsersRule(t *testing.T) {
	r := newRoom(t, id.RoomV12, map[id.UserID]int{bob: 100})
	evt := r.build(alice, "m.room.power_levels", map[string]any{"users": map[id.UserID]int{}})
	r.events[evt.InternalMeta.EventID] = evt
	if err := Authorize(id.RoomV12, evt, nil, r.getEvents, nil); err != nil {
		t.Fatalf("creator removing an admin: %v", err)
	}
	if err := Authorize(id.RoomV12, evt, r.authEvents(evt), r.getEvents, nil); err != nil {
		t.Fatalf("creator removing an admin (precomputed auth events): %v", err)
	}
}

// TestPanicIsRejection: a panic inside eventauth (here: a member event
// without a state key passed as an auth event, which eventauth dereferences)
// is returned as an error and counted.
func TestPanicIsRejection(t *testing.T) {
	r := newRoom(t, id.RoomV11, map[id.UserID]int{alice: 100})
	evt := r.build(alice, "m.room.topic", map[string]any{"topic": "x"})
	broken := *r.events[r.state[pdu.StateKey{Type: "m.room.member", StateKey: alice.String()}]]
	broken.StateKey = nil
	authEvents := append(r.authEvents(evt), &broken)
	// Put the broken one first so eventauth meets it.
	authEvents[0], authEvents[len(authEvents)-1] = authEvents[len(authEvents)-1], authEvents[0]
	if _, panicked := mautrixAuthorize(id.RoomV11, evt, authEvents, r.getEvents); !panicked {
		t.Skip("mautrix no longer panics on this input; find another")
	}
	counter := metrics.PanicsRecovered.WithLabelValues(recovery.EventAuth)
	before := testutil.ToFloat64(counter)
	err := Authorize(id.RoomV11, evt, authEvents, r.getEvents, nil)
	var pe *recovery.PanicError
	if !errors.As(err, &pe) || pe.Where != recovery.EventAuth {
		t.Fatalf("err = %v, want a recovered panic", err)
	}
	if got := testutil.ToFloat64(counter) - before; got != 1 {
		t.Fatalf("counter rose by %v, want 1", got)
	}
}
