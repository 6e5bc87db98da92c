package roomview

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/clientevent"
	"github.com/myelin-chat/myelin/internal/mxhttp"
	"github.com/myelin-chat/myelin/roomserver"
	"github.com/myelin-chat/myelin/storage"
	"github.com/myelin-chat/myelin/visibility"
)

// ---- history visibility ----

// viewer decides which events of a room a user may see (visibility.History)
// and which of them were sent by the requesting device.
type viewer struct {
	user       id.UserID
	device     id.DeviceID
	memberHist []storage.UserMembershipChange
	hv         visibility.History
}

func (s *Service) viewer(ctx context.Context, roomID id.RoomID, user id.UserID) (*viewer, error) {
	mh, err := s.db.UserMembershipHistory(ctx, string(roomID), string(user))
	if err != nil {
		return nil, err
	}
	vh, err := s.db.HistoryVisibilityChanges(ctx, string(roomID))
	if err != nil {
		return nil, err
	}
	if mh, err = withoutForgotten(ctx, s.db, roomID, user, mh); err != nil {
		return nil, err
	}
	v := &viewer{user: user, device: requestingDevice(ctx, user), memberHist: mh, hv: visibility.History{Visibility: vh}}
	v.hv.Memberships = make([]visibility.Positioned, len(mh))
	for i, m := range mh {
		v.hv.Memberships[i] = visibility.Positioned{Pos: m.StreamPos, Value: m.Membership}
	}
	return v, nil
}

// withoutForgotten drops the membership history of a room the user forgot:
// after /forget they may no longer read its history (the spec), so they are
// treated as never having been in it (world-readable rooms stay readable).
// Only a leave or ban can be forgotten, and a new membership clears it.
func withoutForgotten(ctx context.Context, db Store, roomID id.RoomID, user id.UserID, mh []storage.UserMembershipChange) ([]storage.UserMembershipChange, error) {
	if len(mh) == 0 {
		return mh, nil
	}
	if last := mh[len(mh)-1].Membership; last != "leave" && last != "ban" {
		return mh, nil
	}
	m, err := db.GetMembership(ctx, string(roomID), string(user))
	if errors.Is(err, storage.ErrNotFound) {
		return mh, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the membership of %s in %s: %w", user, roomID, err)
	}
	if m.Forgotten {
		return nil, nil
	}
	return mh, nil
}

func (v *viewer) current() string {
	if len(v.memberHist) == 0 {
		return "leave"
	}
	return v.memberHist[len(v.memberHist)-1].Membership
}

func (v *viewer) canSee(pos int64) bool { return v.hv.CanSee(pos) }

// firstVisibleFrom is the first stream position at or after pos the user may
// see. Visibility only changes at the user's membership events and the
// room's history_visibility events, so those are the candidates.
func (v *viewer) firstVisibleFrom(pos int64) (int64, bool) {
	if v.canSee(pos) {
		return pos, true
	}
	var candidates []int64
	for _, list := range [][]visibility.Positioned{v.hv.Memberships, v.hv.Visibility} {
		for _, p := range list {
			if p.Pos > pos {
				candidates = append(candidates, p.Pos)
			}
		}
	}
	slices.Sort(candidates)
	for _, c := range candidates {
		if v.canSee(c) {
			return c, true
		}
	}
	return 0, false
}

// lastVisiblePos is the stream position up to which the user may read the
// room's current state: now if joined, else their leave/ban/kick (0 if never in the room).
func (v *viewer) lastVisiblePos() (pos int64, current bool) {
	if v.current() == "join" {
		return 0, true
	}
	for i := len(v.memberHist) - 1; i >= 0; i-- {
		c := v.memberHist[i]
		if c.Membership == "leave" || c.Membership == "ban" {
			// Left after having been in the room.
			for j := i - 1; j >= 0; j-- {
				if v.memberHist[j].Membership == "join" {
					return c.StreamPos, false
				}
			}
		}
	}
	return -1, false
}

// ---- event loading ----

// client is the viewer as the renderer takes it.
func (v *viewer) client() *clientevent.Viewer {
	return &clientevent.Viewer{UserID: string(v.user), DeviceID: string(v.device), MembershipAt: v.hv.MembershipAt,
		CanSee: func(pos int64) (bool, error) { return v.canSee(pos), nil }}
}

// clientEvents renders stored events for the viewer (clientevent.Render).
func (s *Service) clientEvents(ctx context.Context, v *viewer, ses []*storage.Event) ([]json.RawMessage, error) {
	return clientevent.Render(ctx, s.db, v.client(), ses)
}

// toClient renders one stored event for the viewer.
func (s *Service) toClient(ctx context.Context, v *viewer, se *storage.Event) (json.RawMessage, error) {
	return clientevent.One(ctx, s.db, v.client(), se)
}

// roomAndViewer loads what every read needs, mapping unknown rooms to M_FORBIDDEN
// (the spec's answer when the user is not, or never was, in the room).
func (s *Service) roomAndViewer(ctx context.Context, user id.UserID, roomID id.RoomID) (id.RoomVersion, *viewer, error) {
	if !roomserver.ValidRoomID(string(roomID)) {
		return "", nil, roomserver.InvalidParam("Invalid room ID")
	}
	version, err := roomserver.RoomVersion(ctx, s.db, roomID)
	if errors.Is(err, roomserver.ErrUnknownRoom) {
		return "", nil, roomserver.Forbidden("You are not in this room")
	}
	if err != nil {
		return "", nil, err
	}
	v, err := s.viewer(ctx, roomID, user)
	if err != nil {
		return "", nil, err
	}
	return version, v, nil
}

// stateVisibleTo returns the room state the user may read: the current state
// when joined (or the room is world readable), else the state when they left.
func (s *Service) stateVisibleTo(ctx context.Context, roomID id.RoomID, v *viewer) (storage.StateMap, bool, error) {
	pos, current := v.lastVisiblePos()
	if !current && pos < 0 {
		if cur, err := s.db.CurrentStateEvent(ctx, string(roomID), "m.room.history_visibility", ""); err == nil &&
			gjson.GetBytes(cur.JSON, "content.history_visibility").Str == "world_readable" {
			current = true
		} else {
			return nil, false, roomserver.Forbidden("You are not in this room")
		}
	}
	if current {
		evs, err := s.db.CurrentStateEvents(ctx, string(roomID))
		if err != nil {
			return nil, false, err
		}
		out := make(storage.StateMap, len(evs))
		for _, e := range evs {
			out[storage.StateKey{Type: e.Type, StateKey: *e.StateKey}] = e.EventID
		}
		return out, true, nil
	}
	st, err := s.db.StateAtPosition(ctx, string(roomID), pos)
	return st, false, err
}

// State returns the room state the user may see (GET /rooms/{id}/state).
func (s *Service) State(ctx context.Context, user id.UserID, roomID id.RoomID) ([]json.RawMessage, error) {
	_, v, err := s.roomAndViewer(ctx, user, roomID)
	if err != nil {
		return nil, err
	}
	entries, _, err := s.stateVisibleTo(ctx, roomID, v)
	if err != nil {
		return nil, err
	}
	return s.loadClientEvents(ctx, v, entries)
}

// loadClientEvents renders the events of a state, in stream order.
func (s *Service) loadClientEvents(ctx context.Context, v *viewer, state storage.StateMap) ([]json.RawMessage, error) {
	ses, err := s.stateEvents(ctx, state)
	if err != nil {
		return nil, err
	}
	return s.clientEvents(ctx, v, ses)
}

// stateEvents loads the events of a state, in stream order.
func (s *Service) stateEvents(ctx context.Context, state storage.StateMap) ([]*storage.Event, error) {
	ids := make([]string, 0, len(state))
	for _, x := range state {
		ids = append(ids, x)
	}
	return s.db.EventsInStreamOrder(ctx, ids)
}

// StateEvent returns one state event the user may see; M_NOT_FOUND if unset.
func (s *Service) StateEvent(ctx context.Context, user id.UserID, roomID id.RoomID, evType, stateKey string) (json.RawMessage, error) {
	_, v, err := s.roomAndViewer(ctx, user, roomID)
	if err != nil {
		return nil, err
	}
	state, _, err := s.stateVisibleTo(ctx, roomID, v)
	if err != nil {
		return nil, err
	}
	eventID, ok := state[storage.StateKey{Type: evType, StateKey: stateKey}]
	if !ok {
		return nil, roomserver.NotFound("Event not found")
	}
	se, err := s.db.GetEvent(ctx, eventID)
	if err != nil {
		return nil, err
	}
	return s.toClient(ctx, v, se)
}

// Event returns one event the user may see (GET /rooms/{id}/event/{eventId}).
func (s *Service) Event(ctx context.Context, user id.UserID, roomID id.RoomID, eventID id.EventID) (json.RawMessage, error) {
	v, se, err := s.visibleEvent(ctx, user, roomID, eventID)
	if err != nil {
		return nil, err
	}
	return s.toClient(ctx, v, se)
}

// visibleEvent loads an event of the room the user may see, and the viewer.
func (s *Service) visibleEvent(ctx context.Context, user id.UserID, roomID id.RoomID, eventID id.EventID) (*viewer, *storage.Event, error) {
	if !roomserver.ValidEventID(string(eventID)) {
		return nil, nil, roomserver.NotFound("Event not found")
	}
	_, v, err := s.roomAndViewer(ctx, user, roomID)
	if err != nil {
		return nil, nil, err
	}
	se, err := s.db.GetEvent(ctx, string(eventID))
	if errors.Is(err, storage.ErrNotFound) || (err == nil && (se.RoomID != string(roomID) || se.SoftFailed)) {
		return nil, nil, roomserver.NotFound("Event not found")
	}
	if err != nil {
		return nil, nil, err
	}
	if !v.canSee(se.StreamPos) {
		return nil, nil, roomserver.NotFound("Event not found or not visible to you")
	}
	return v, se, nil
}

// MembersQuery filters GET /rooms/{id}/members.
type MembersQuery struct {
	At            string // pagination token: members at that point
	Membership    string
	NotMembership string
}

// Members returns member events of the room the user may see.
func (s *Service) Members(ctx context.Context, user id.UserID, roomID id.RoomID, q MembersQuery) ([]json.RawMessage, error) {
	_, v, err := s.roomAndViewer(ctx, user, roomID)
	if err != nil {
		return nil, err
	}
	var entries storage.StateMap
	pos, current := v.lastVisiblePos()
	if q.At != "" {
		tok, err := ParseToken(q.At)
		if err != nil {
			return nil, roomserver.InvalidParam("Invalid at token")
		}
		at := tok.Stream
		if !current && pos < 0 {
			return nil, roomserver.Forbidden("You are not in this room")
		}
		if !current && at > pos {
			at = pos
		}
		if entries, err = s.membersAtPoint(ctx, roomID, v, at); err != nil {
			return nil, err
		}
	} else if entries, _, err = s.stateVisibleTo(ctx, roomID, v); err != nil {
		return nil, err
	}
	members := storage.StateMap{}
	for k, e := range entries {
		if k.Type == "m.room.member" {
			members[k] = e
		}
	}
	evs, err := s.stateEvents(ctx, members)
	if err != nil {
		return nil, err
	}
	kept := evs[:0]
	for _, e := range evs {
		m := e.Membership
		if (q.Membership != "" && m != q.Membership) || (q.NotMembership != "" && m == q.NotMembership) {
			continue
		}
		kept = append(kept, e)
	}
	return s.clientEvents(ctx, v, kept)
}

// membersAtPoint is the room state at stream position at for /members?at=:
// the state after the last event at or before it. A point before the room's
// first member (a prev_batch from before the create event, as /sync gives
// for a timeline that starts with the room) names the room as it began:
// the state once its creator joined, not an empty room.
func (s *Service) membersAtPoint(ctx context.Context, roomID id.RoomID, v *viewer, at int64) (storage.StateMap, error) {
	first, err := s.db.FirstMemberPosition(ctx, string(roomID))
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return nil, fmt.Errorf("reading the first member of %s: %w", roomID, err)
	}
	at = max(at, first)
	// Nor the members at a point the user may not see (before they
	// joined a room with joined history, say): the earliest they may.
	at, ok := v.firstVisibleFrom(at)
	if !ok {
		return nil, roomserver.Forbidden("You may not see the room at that point")
	}
	return s.db.StateAtPosition(ctx, string(roomID), at)
}

// JoinedMember is an entry of GET /joined_members. An unset display name
// or avatar is null rather than absent, as Synapse answers and clients and
// Complement expect.
type JoinedMember struct {
	DisplayName *string `json:"display_name"`
	AvatarURL   *string `json:"avatar_url"`
}

// JoinedMembers returns the joined members with their profiles; the user must be joined.
func (s *Service) JoinedMembers(ctx context.Context, user id.UserID, roomID id.RoomID) (map[id.UserID]JoinedMember, error) {
	_, v, err := s.roomAndViewer(ctx, user, roomID)
	if err != nil {
		return nil, err
	}
	if v.current() != "join" {
		return nil, roomserver.Forbidden("You are not in this room")
	}
	ms, err := s.db.RoomMembers(ctx, string(roomID), "join")
	if err != nil {
		return nil, err
	}
	ids := make([]string, len(ms))
	for i, m := range ms {
		ids[i] = m.EventID
	}
	evs, err := s.db.GetEvents(ctx, ids)
	if err != nil {
		return nil, err
	}
	out := make(map[id.UserID]JoinedMember, len(ms))
	for _, m := range ms {
		var jm JoinedMember
		if e, ok := evs[m.EventID]; ok {
			if d := gjson.GetBytes(e.JSON, "content.displayname"); d.Type == gjson.String {
				jm.DisplayName = &d.Str
			}
			if a := gjson.GetBytes(e.JSON, "content.avatar_url"); a.Type == gjson.String {
				jm.AvatarURL = &a.Str
			}
		}
		out[id.UserID(m.UserID)] = jm
	}
	return out, nil
}

// JoinedRooms lists the rooms the user is joined to.
func (s *Service) JoinedRooms(ctx context.Context, user id.UserID) ([]id.RoomID, error) {
	ms, err := s.db.RoomsOfUser(ctx, string(user), "join")
	if err != nil {
		return nil, err
	}
	out := make([]id.RoomID, 0, len(ms))
	for _, m := range ms {
		out = append(out, id.RoomID(m.RoomID))
	}
	return out, nil
}

// ---- /messages and /context ----

// EventFilter is the RoomEventFilter subset /messages and /context apply.
type EventFilter struct {
	Limit           int      `json:"limit"`
	Types           []string `json:"types"`
	NotTypes        []string `json:"not_types"`
	Senders         []string `json:"senders"`
	NotSenders      []string `json:"not_senders"`
	ContainsURL     *bool    `json:"contains_url"`
	LazyLoadMembers bool     `json:"lazy_load_members"`
	Rooms           []string `json:"rooms"`
	NotRooms        []string `json:"not_rooms"`
}

func typeMatches(pattern, t string) bool {
	if strings.HasSuffix(pattern, "*") {
		return strings.HasPrefix(t, strings.TrimSuffix(pattern, "*"))
	}
	return pattern == t
}

// Matches reports whether an event passes the filter.
func (f *EventFilter) Matches(se *storage.Event) bool {
	if f == nil {
		return true
	}
	if f.Types != nil && !slices.ContainsFunc(f.Types, func(p string) bool { return typeMatches(p, se.Type) }) {
		return false
	}
	if slices.ContainsFunc(f.NotTypes, func(p string) bool { return typeMatches(p, se.Type) }) {
		return false
	}
	if f.Senders != nil && !slices.Contains(f.Senders, se.Sender) {
		return false
	}
	if slices.Contains(f.NotSenders, se.Sender) {
		return false
	}
	if f.ContainsURL != nil && gjson.GetBytes(se.JSON, "content.url").Exists() != *f.ContainsURL {
		return false
	}
	return true
}

// MessagesRequest is GET /rooms/{id}/messages.
type MessagesRequest struct {
	From, To string
	// Dir is "b" (backwards) or "f"; anything else is M_INVALID_PARAM,
	// answered after the room access check so that a user who may not read
	// the room learns only that.
	Dir    string
	Limit  int
	Filter *EventFilter
}

// MessagesResponse is its answer.
type MessagesResponse struct {
	Start string            `json:"start"`
	End   string            `json:"end,omitempty"`
	Chunk []json.RawMessage `json:"chunk"`
	State []json.RawMessage `json:"state,omitempty"`
}

func (s *Service) tokenPos(ctx context.Context, roomID id.RoomID, tok string) (storage.TopoPos, error) {
	t, err := ParseToken(tok)
	if err != nil {
		return storage.TopoPos{}, roomserver.InvalidParam("Invalid pagination token")
	}
	if t.Topological {
		return t.topo(), nil
	}
	return s.db.TopoPosAtStream(ctx, string(roomID), t.Stream)
}

// maxMessagesScan bounds the events one /messages request reads.
const maxMessagesScan = 2000

// Messages pages through a room's history in topological order.
func (s *Service) Messages(ctx context.Context, user id.UserID, roomID id.RoomID, req MessagesRequest) (*MessagesResponse, error) {
	_, v, err := s.roomAndViewer(ctx, user, roomID)
	if err != nil {
		return nil, err
	}
	if v.current() != "join" && len(v.memberHist) == 0 {
		if cur, err := s.db.CurrentStateEvent(ctx, string(roomID), "m.room.history_visibility", ""); err != nil ||
			gjson.GetBytes(cur.JSON, "content.history_visibility").Str != "world_readable" {
			return nil, roomserver.Forbidden("You are not in this room")
		}
	}
	if req.Dir != "b" && req.Dir != "f" {
		return nil, roomserver.InvalidParam("dir must be b or f")
	}
	backward := req.Dir == "b"
	// Non-state events of users the reader ignores are not shown (as in /sync).
	ignored, err := s.db.IgnoredUsers(ctx, string(user))
	if err != nil {
		return nil, err
	}
	limit := req.Limit
	if limit <= 0 {
		limit = 10
	}
	if limit > 1000 {
		limit = 1000
	}
	var from storage.TopoPos
	switch {
	case req.From != "":
		if from, err = s.tokenPos(ctx, roomID, req.From); err != nil {
			return nil, err
		}
	case backward:
		from = storage.TopoPos{Depth: 1 << 62, Stream: 0}
	default:
		from = storage.TopoPos{Depth: -1, Stream: 0}
	}
	var to *storage.TopoPos
	if req.To != "" {
		p, err := s.tokenPos(ctx, roomID, req.To)
		if err != nil {
			return nil, err
		}
		to = &p
	}
	resp := &MessagesResponse{Chunk: []json.RawMessage{}}
	resp.Start = TopologicalToken(from.Depth, from.Stream)
	cursor := from
	senders := map[string]bool{}
	var kept []*storage.Event
	// Hidden history is skipped in SQL (the user's visible stream ranges);
	// what is read and dropped still (a filter's misses) is capped per
	// request: past the cap the answer ends early, with an end token.
	ranges := v.hv.VisibleRanges()
	if t, err := ParseToken(req.From); err == nil && backward && !t.Topological {
		// A stream token (a /sync prev_batch): an event that came later in
		// the stream, though earlier in the DAG (a fork merged late), was in
		// that /sync already. As Synapse, the page stops at the token's
		// stream position too.
		ranges = capRanges(ranges, t.Stream)
	}
	batchSize := min(max(limit*2, 50), 1000)
	scanned := 0
	backfills := 0
	if backward && s.backfill != nil && req.From != "" {
		// From a token just before a gap event (a gappy /sync's prev_batch).
		tried, err := s.backfillAtToken(ctx, roomID, req.From, from)
		if err != nil {
			return nil, err
		}
		if tried {
			backfills++
		}
	}
	for len(kept) < limit && scanned < maxMessagesScan {
		batch, err := s.db.RoomEventsByTopology(ctx, string(roomID), cursor, to, backward, batchSize, ranges)
		if err != nil {
			return nil, err
		}
		scanned += len(batch)
		var gaps map[string]bool
		if backward && s.backfill != nil {
			if gaps, err = s.gapsIn(ctx, batch); err != nil {
				return nil, err
			}
		}
		refetch, stop := false, false
		for _, se := range batch {
			gap := gaps[se.EventID]
			if gap && backfills >= maxBackfills && len(kept) > 0 {
				// History before this event lives elsewhere and this request
				// fetched enough: end the page above it, so that the next one
				// starts at it and fetches, rather than passing the gap.
				stop = true
				break
			}
			if backward {
				cursor = storage.TopoPos{Depth: se.Depth, Stream: se.StreamPos - 1}
			} else {
				cursor = storage.TopoPos{Depth: se.Depth, Stream: se.StreamPos}
			}
			if v.canSee(se.StreamPos) && req.Filter.Matches(se) && !(se.StateKey == nil && ignored[se.Sender]) {
				kept = append(kept, se)
				senders[se.Sender] = true
			}
			if gap && backfills < maxBackfills {
				// Fetch the history before this event now, so that this page
				// or the next continues into it rather than past it. If
				// nothing comes, the page goes on as before.
				backfills++
				if s.backfillBefore(ctx, roomID, batch, gaps) {
					refetch = true
					break
				}
			}
			if len(kept) >= limit {
				break
			}
		}
		if stop {
			break
		}
		if refetch {
			continue
		}
		if len(batch) < batchSize {
			if len(kept) == 0 {
				// Exhausted with nothing to show: no end token. With
				// events it stays, as Synapse gives it and clients expect
				// (Complement); the next page is this empty one.
				cursor = storage.TopoPos{}
			}
			break
		}
	}
	if cursor != (storage.TopoPos{}) {
		resp.End = TopologicalToken(cursor.Depth, cursor.Stream)
	}
	if len(kept) > 0 {
		if resp.Chunk, err = s.clientEvents(ctx, v, kept); err != nil {
			return nil, err
		}
	}
	if req.Filter != nil && req.Filter.LazyLoadMembers && len(senders) > 0 {
		st, err := s.membersOf(ctx, v, roomID, senders)
		if err != nil {
			return nil, err
		}
		resp.State = st
	}
	return resp, nil
}

func (s *Service) membersOf(ctx context.Context, v *viewer, roomID id.RoomID, users map[string]bool) ([]json.RawMessage, error) {
	var ses []*storage.Event
	for u := range users {
		if se, err := s.db.CurrentStateEvent(ctx, string(roomID), "m.room.member", u); err == nil {
			ses = append(ses, se)
		}
	}
	slices.SortFunc(ses, func(a, b *storage.Event) int { return cmp.Compare(a.StreamPos, b.StreamPos) })
	return s.clientEvents(ctx, v, ses)
}

// ContextResponse is GET /rooms/{id}/context/{eventId}.
type ContextResponse struct {
	Start        string            `json:"start,omitempty"`
	End          string            `json:"end,omitempty"`
	EventsBefore []json.RawMessage `json:"events_before"`
	Event        json.RawMessage   `json:"event"`
	EventsAfter  []json.RawMessage `json:"events_after"`
	State        []json.RawMessage `json:"state"`
}

// Context returns events around an event.
func (s *Service) Context(ctx context.Context, user id.UserID, roomID id.RoomID, eventID id.EventID, limit int, filter *EventFilter) (*ContextResponse, error) {
	v, se, err := s.visibleEvent(ctx, user, roomID, eventID)
	if err != nil {
		return nil, err
	}
	ev, err := s.toClient(ctx, v, se)
	if err != nil {
		return nil, err
	}
	if limit < 0 {
		limit = 0
	}
	if limit > 100 {
		limit = 100
	}
	before, after := limit/2, limit-limit/2
	resp := &ContextResponse{Event: ev, EventsBefore: []json.RawMessage{}, EventsAfter: []json.RawMessage{}}
	back, err := s.Messages(ctx, user, roomID, MessagesRequest{From: TopologicalToken(se.Depth, se.StreamPos-1), Dir: "b", Limit: max(before, 1), Filter: filter})
	if err != nil {
		return nil, err
	}
	fwd, err := s.Messages(ctx, user, roomID, MessagesRequest{From: TopologicalToken(se.Depth, se.StreamPos), Dir: "f", Limit: max(after, 1), Filter: filter})
	if err != nil {
		return nil, err
	}
	if before > 0 {
		resp.EventsBefore = back.Chunk
	}
	if after > 0 {
		resp.EventsAfter = fwd.Chunk
	}
	// Tokens: before the earliest returned event and after the latest one;
	// with none returned on a side, right before (after) the event itself.
	resp.Start, resp.End = back.End, fwd.End
	if before == 0 {
		resp.Start = TopologicalToken(se.Depth, se.StreamPos-1)
	}
	if after == 0 {
		resp.End = TopologicalToken(se.Depth, se.StreamPos)
	}
	if resp.Start == "" {
		resp.Start = TopologicalToken(0, 0)
	}
	if resp.End == "" {
		resp.End = TopologicalToken(se.Depth, se.StreamPos)
		if n := len(resp.EventsAfter); n > 0 {
			if last, err := s.db.GetEvent(ctx, gjson.GetBytes(resp.EventsAfter[n-1], "event_id").Str); err == nil {
				resp.End = TopologicalToken(last.Depth, last.StreamPos)
			}
		}
	}
	// State at the event.
	state, err := s.db.SnapshotState(ctx, se.StateBefore)
	if err != nil {
		return nil, err
	}
	if filter != nil && filter.LazyLoadMembers {
		want := map[string]bool{se.Sender: true}
		for _, e := range append(resp.EventsBefore, resp.EventsAfter...) {
			want[gjson.GetBytes(e, "sender").Str] = true
		}
		maps.DeleteFunc(state, func(k storage.StateKey, _ string) bool { return k.Type == "m.room.member" && !want[k.StateKey] })
	}
	if resp.State, err = s.loadClientEvents(ctx, v, state); err != nil {
		return nil, err
	}
	return resp, nil
}

// ParseFilter decodes a RoomEventFilter given as JSON.
func ParseFilter(raw string) (*EventFilter, error) {
	if raw == "" {
		return nil, nil
	}
	var f EventFilter
	if err := mxhttp.DecodeJSON([]byte(raw), &f); err != nil { // the JSON edge's checks, as for bodies
		return nil, roomserver.BadJSON("Invalid filter: %v", err)
	}
	return &f, nil
}

// capRanges bounds inclusive stream ranges (nil: everything) at hi; an empty,
// non-nil result selects nothing.
func capRanges(ranges [][2]int64, hi int64) [][2]int64 {
	if ranges == nil {
		return [][2]int64{{-1 << 62, hi}}
	}
	out := [][2]int64{}
	for _, r := range ranges {
		if r[0] <= hi {
			out = append(out, [2]int64{r[0], min(r[1], hi)})
		}
	}
	return out
}
