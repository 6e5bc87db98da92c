package roomserver

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/storage"
)

// The room-state reads room federation serves (/event, /state, /state_ids,
// /event_auth, /backfill, /get_missing_events): network-free, over the
// stored PDUs and snapshots, never through a room's worker. The handlers
// (federationapi) decide who may ask; these answer what the DAG holds.

// Bounds on the DAG walks: a request can make us read at most this much.
const (
	// MaxAuthChain caps an auth chain walk (events); past it the walk fails
	// with ErrTooLarge rather than answer a partial chain.
	MaxAuthChain = 50_000
	// MaxWalk caps how many events a backfill or missing-events walk loads.
	MaxWalk = 1_000
)

// authChainCap is MaxAuthChain, lowered by tests.
var authChainCap = MaxAuthChain

// RoomEvent returns the stored event eventID of roomID (its PDU as stored,
// redacted if a redaction applied); ErrNotFound when the server has no such
// event in that room, ErrUnknownRoom for an unknown room.
func (s *Server) RoomEvent(ctx context.Context, roomID id.RoomID, eventID string) (*storage.Event, error) {
	if _, err := RoomVersion(ctx, s.db, roomID); err != nil {
		return nil, err
	}
	ev, err := s.db.GetEvent(ctx, eventID)
	if errors.Is(err, storage.ErrNotFound) || (err == nil && ev.RoomID != string(roomID)) {
		return nil, NotFound("Unknown event %s", eventID)
	}
	if err != nil {
		return nil, fmt.Errorf("reading event %s: %w", eventID, err)
	}
	return ev, nil
}

// Event returns a stored event of any room; ErrNotFound when unknown.
func (s *Server) Event(ctx context.Context, eventID string) (*storage.Event, error) {
	ev, err := s.db.GetEvent(ctx, eventID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, NotFound("Unknown event %s", eventID)
	}
	if err != nil {
		return nil, fmt.Errorf("reading event %s: %w", eventID, err)
	}
	return ev, nil
}

// ServerInRoom reports whether server has a joined member in roomID's current
// state (the writer's room_servers).
func (s *Server) ServerInRoom(ctx context.Context, roomID id.RoomID, server string) (bool, error) {
	servers, err := s.db.JoinedServers(ctx, string(roomID))
	if err != nil {
		return false, fmt.Errorf("reading the servers of %s: %w", roomID, err)
	}
	return slices.Contains(servers, server), nil
}

// StateIDsAt is the room state before event eventID (as /state_ids answers:
// the event's own state slot holds what it replaced), as event IDs.
func (s *Server) StateIDsAt(ctx context.Context, roomID id.RoomID, eventID string) ([]string, error) {
	ev, err := s.RoomEvent(ctx, roomID, eventID)
	if err != nil {
		return nil, err
	}
	state, err := s.db.SnapshotState(ctx, ev.StateBefore)
	if err != nil {
		return nil, fmt.Errorf("reading the state before %s: %w", eventID, err)
	}
	out := make([]string, 0, len(state))
	for _, x := range state {
		out = append(out, x)
	}
	slices.Sort(out)
	return out, nil
}

// Events loads stored events by ID in the order given; unknown IDs are left out.
func (s *Server) Events(ctx context.Context, ids []string) ([]*storage.Event, error) {
	byID, err := s.db.GetEvents(ctx, ids)
	if err != nil {
		return nil, err
	}
	out := make([]*storage.Event, 0, len(byID))
	for _, x := range ids {
		if e, ok := byID[x]; ok {
			out = append(out, e)
		}
	}
	return out, nil
}

// eventRefs reads an event ID list of a PDU (prev_events or auth_events):
// strings, or [id, hashes] pairs in room versions 1 and 2.
func eventRefs(pduJSON []byte, field string) []string {
	var out []string
	gjson.GetBytes(pduJSON, field).ForEach(func(_, v gjson.Result) bool {
		if v.IsArray() {
			v = v.Get("0")
		}
		if v.Type == gjson.String {
			out = append(out, v.Str)
		}
		return true
	})
	return out
}

// AuthChain is the full auth chain of the events ids (their auth events,
// recursively; not ids themselves unless reached), deduplicated. The walk is
// breadth-first with a visited set, one store read per level; past
// MaxAuthChain events it fails with ErrTooLarge. Events the server does not
// have are skipped.
func (s *Server) AuthChain(ctx context.Context, ids []string) ([]*storage.Event, error) {
	seen := map[string]bool{}
	var frontier []string
	start, err := s.Events(ctx, ids)
	if err != nil {
		return nil, err
	}
	for _, e := range start {
		for _, a := range eventRefs(e.JSON, "auth_events") {
			if !seen[a] {
				seen[a] = true
				frontier = append(frontier, a)
			}
		}
	}
	var out []*storage.Event
	for len(frontier) > 0 {
		if len(seen) > authChainCap {
			return nil, TooLarge("The auth chain exceeds %d events", authChainCap)
		}
		level, err := s.Events(ctx, frontier)
		if err != nil {
			return nil, err
		}
		frontier = frontier[:0:0]
		for _, e := range level {
			out = append(out, e)
			for _, a := range eventRefs(e.JSON, "auth_events") {
				if !seen[a] {
					seen[a] = true
					frontier = append(frontier, a)
				}
			}
		}
	}
	return out, nil
}

// byDepth is a max-heap of events by depth (ties: later stream position first).
type byDepth []*storage.Event

func (h byDepth) Len() int { return len(h) }
func (h byDepth) Less(i, j int) bool {
	if h[i].Depth != h[j].Depth {
		return h[i].Depth > h[j].Depth
	}
	return h[i].StreamPos > h[j].StreamPos
}
func (h byDepth) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *byDepth) Push(x any)   { *h = append(*h, x.(*storage.Event)) }
func (h *byDepth) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// WalkBack walks roomID's DAG backwards from the events from (included when
// includeFrom), deepest first, through prev_events, and returns up to limit
// events of the room that keep reports true for, in the order visited. Events
// in stop are neither returned nor walked past, nor are events below
// minDepth. At most MaxWalk events are loaded. It serves /backfill (from: the
// v events, included) and /get_missing_events (from: latest_events, not
// included; stop: earliest_events).
func (s *Server) WalkBack(ctx context.Context, roomID id.RoomID, from, stop []string, includeFrom bool, minDepth int64, limit int,
	keep func(*storage.Event) (bool, error)) ([]*storage.Event, error) {
	if _, err := RoomVersion(ctx, s.db, roomID); err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	for _, x := range stop {
		seen[x] = true
	}
	h := &byDepth{}
	loaded := 0
	push := func(ids []string) error {
		var want []string
		for _, x := range ids {
			if !seen[x] {
				seen[x] = true
				want = append(want, x)
			}
		}
		if len(want) == 0 || loaded >= MaxWalk {
			return nil
		}
		if len(want) > MaxWalk-loaded {
			want = want[:MaxWalk-loaded]
		}
		loaded += len(want)
		evs, err := s.Events(ctx, want)
		if err != nil {
			return err
		}
		for _, e := range evs {
			if e.RoomID == string(roomID) && e.Depth >= minDepth {
				heap.Push(h, e)
			}
		}
		return nil
	}
	if includeFrom {
		if err := push(from); err != nil {
			return nil, err
		}
	} else {
		starts, err := s.Events(ctx, from)
		if err != nil {
			return nil, err
		}
		for _, e := range starts {
			seen[e.EventID] = true
			if e.RoomID != string(roomID) {
				continue
			}
			if err := push(eventRefs(e.JSON, "prev_events")); err != nil {
				return nil, err
			}
		}
	}
	var out []*storage.Event
	for h.Len() > 0 && len(out) < limit {
		e := heap.Pop(h).(*storage.Event)
		ok, err := keep(e)
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, e)
		}
		if err := push(eventRefs(e.JSON, "prev_events")); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// ServerVisibility decides which events a server may see (client-server
// API, "History visibility", server behaviour, as Synapse applies it to
// servers): an event is visible when the history visibility at it is
// world_readable; otherwise only to a server currently in the room, when it
// is shared, or joined and one of the server's users was joined at the
// event, or invited and one was invited or joined. For the room's
// history_visibility events and the server's users' own membership events,
// the state after the event counts too. It caches the state per snapshot:
// a server's visibility over a page of events costs one state read per
// distinct snapshot.
type ServerVisibility struct {
	s      *Server
	server string
	inRoom bool
	states map[int64]storage.StateMap
	events map[string]*storage.Event
}

// VisibilityFor returns server's view of history; inRoom says whether it is
// in the room now (ServerInRoom).
func (s *Server) VisibilityFor(server string, inRoom bool) *ServerVisibility {
	return &ServerVisibility{s: s, server: server, inRoom: inRoom, states: map[int64]storage.StateMap{}, events: map[string]*storage.Event{}}
}

// maxStateCache bounds the snapshots a ServerVisibility keeps.
const maxStateCache = 16

func (v *ServerVisibility) stateBefore(ctx context.Context, e *storage.Event) (storage.StateMap, error) {
	if st, ok := v.states[e.StateBefore]; ok {
		return st, nil
	}
	st, err := v.s.db.SnapshotState(ctx, e.StateBefore)
	if err != nil {
		return nil, fmt.Errorf("reading the state before %s: %w", e.EventID, err)
	}
	if len(v.states) >= maxStateCache {
		clear(v.states)
	}
	v.states[e.StateBefore] = st
	return st, nil
}

// CanSee reports whether the server may see e.
func (v *ServerVisibility) CanSee(ctx context.Context, e *storage.Event) (bool, error) {
	st, err := v.stateBefore(ctx, e)
	if err != nil {
		return false, err
	}
	vis := "shared"
	var want []string
	if x, ok := st[storage.StateKey{Type: "m.room.history_visibility"}]; ok {
		want = append(want, x)
	}
	suffix := ":" + v.server
	for k, x := range st {
		if k.Type == "m.room.member" && strings.HasSuffix(k.StateKey, suffix) {
			want = append(want, x)
		}
	}
	var load []string
	for _, x := range want {
		if _, ok := v.events[x]; !ok {
			load = append(load, x)
		}
	}
	if len(load) > 0 {
		got, err := v.s.db.GetEvents(ctx, load)
		if err != nil {
			return false, err
		}
		for x, ev := range got {
			v.events[x] = ev
		}
	}
	members := map[string]string{}
	for k, x := range st {
		if k.Type == "m.room.member" && strings.HasSuffix(k.StateKey, suffix) {
			if ev := v.events[x]; ev != nil {
				members[k.StateKey] = ev.Membership
			}
		}
	}
	if x, ok := st[storage.StateKey{Type: "m.room.history_visibility"}]; ok && v.events[x] != nil {
		vis = visibilityValue(v.events[x].JSON)
	}
	if v.allowed(vis, members) {
		return true, nil
	}
	// The state after the event, for the events that change it.
	switch {
	case e.Type == "m.room.history_visibility" && e.StateKey != nil && *e.StateKey == "":
		return v.allowed(visibilityValue(e.JSON), members), nil
	case e.Type == "m.room.member" && e.StateKey != nil && strings.HasSuffix(*e.StateKey, suffix):
		members[*e.StateKey] = e.Membership
		return v.allowed(vis, members), nil
	}
	return false, nil
}

func visibilityValue(pduJSON []byte) string {
	switch v := gjson.GetBytes(pduJSON, "content.history_visibility").Str; v {
	case "world_readable", "shared", "invited", "joined":
		return v
	}
	return "shared" // unset or not understood
}

func (v *ServerVisibility) allowed(vis string, members map[string]string) bool {
	if vis == "world_readable" {
		return true
	}
	if !v.inRoom {
		return false
	}
	if vis == "shared" {
		return true
	}
	for _, m := range members {
		if m == "join" || (vis == "invited" && m == "invite") {
			return true
		}
	}
	return false
}
