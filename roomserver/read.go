package roomserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/internal/mxhttp"
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

func (s *Server) viewer(ctx context.Context, roomID id.RoomID, user id.UserID) (*viewer, error) {
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
func withoutForgotten(ctx context.Context, db *storage.DB, roomID id.RoomID, user id.UserID, mh []storage.UserMembershipChange) ([]storage.UserMembershipChange, error) {
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

// toClient converts one stored event for the viewer (see clientEvents).
func (s *Server) toClient(ctx context.Context, version id.RoomVersion, v *viewer, se *storage.StoredEvent) (*ClientEvent, error) {
	out, err := s.clientEvents(ctx, version, v, []*storage.StoredEvent{se})
	if err != nil {
		return nil, err
	}
	return out[0], nil
}

// clientEvents converts stored events to the client format with the unsigned
// data the spec's ClientEvent describes: age; redacted_because; the viewer's
// membership at the event (v1.11, MSC4115; from the membership history the
// viewer already holds, no query per event); for state
// events replaces_state and, when the viewer may see the replaced event,
// prev_content; transaction_id when the viewer's device sent the event. The
// redactions and replaced events are loaded in one query. v may be nil (no
// viewer: no prev_content, no transaction_id, no membership).
func (s *Server) clientEvents(ctx context.Context, version id.RoomVersion, v *viewer, ses []*storage.StoredEvent) ([]*ClientEvent, error) {
	var related []string
	for _, se := range ses {
		if se.RedactedBy != "" {
			related = append(related, se.RedactedBy)
		}
		if se.ReplacesState != "" && v != nil {
			related = append(related, se.ReplacesState)
		}
	}
	var loaded map[string]*storage.StoredEvent
	if len(related) > 0 {
		var err error
		if loaded, err = s.db.GetEvents(ctx, related); err != nil {
			return nil, err
		}
	}
	out := make([]*ClientEvent, len(ses))
	for i, se := range ses {
		e, err := eventFromStored(version, se)
		if err != nil {
			return nil, err
		}
		var because *ClientEvent
		if r := loaded[se.RedactedBy]; r != nil && se.RedactedBy != "" {
			if re, err := eventFromStored(version, r); err == nil {
				because = re.Client(nil)
				if v != nil {
					because.Unsigned["membership"] = v.hv.MembershipAt(r.StreamPos)
				}
			}
		}
		ce := e.Client(because)
		if v != nil {
			ce.Unsigned["membership"] = v.hv.MembershipAt(se.StreamPos)
		}
		if se.ReplacesState != "" {
			ce.Unsigned["replaces_state"] = se.ReplacesState
			if p := loaded[se.ReplacesState]; p != nil && v != nil && v.canSee(p.StreamPos) {
				if c := gjson.GetBytes(p.JSON, "content"); c.IsObject() {
					ce.Unsigned["prev_content"] = json.RawMessage(c.Raw)
				}
			}
		}
		if v != nil && se.TxnID != "" && v.device != "" && se.Sender == string(v.user) && se.TxnDevice == string(v.device) {
			ce.Unsigned["transaction_id"] = se.TxnID
		}
		out[i] = ce
	}
	return out, nil
}

// roomAndViewer loads what every read needs, mapping unknown rooms to M_FORBIDDEN
// (the spec's answer when the user is not, or never was, in the room).
func (s *Server) roomAndViewer(ctx context.Context, user id.UserID, roomID id.RoomID) (id.RoomVersion, *viewer, error) {
	if !ValidRoomID(string(roomID)) {
		return "", nil, mxhttp.InvalidParam("Invalid room ID")
	}
	version, err := s.roomVersion(ctx, roomID)
	if errors.Is(err, ErrUnknownRoom) {
		return "", nil, mxhttp.Forbidden("You are not in this room")
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
func (s *Server) stateVisibleTo(ctx context.Context, roomID id.RoomID, v *viewer) ([]storage.StateEntry, bool, error) {
	pos, current := v.lastVisiblePos()
	if !current && pos < 0 {
		if cur, err := s.db.CurrentStateEvent(ctx, string(roomID), "m.room.history_visibility", ""); err == nil &&
			gjson.GetBytes(cur.JSON, "content.history_visibility").Str == "world_readable" {
			current = true
		} else {
			return nil, false, mxhttp.Forbidden("You are not in this room")
		}
	}
	if current {
		evs, err := s.db.CurrentStateEvents(ctx, string(roomID))
		if err != nil {
			return nil, false, err
		}
		out := make([]storage.StateEntry, 0, len(evs))
		for _, e := range evs {
			out = append(out, storage.StateEntry{Type: e.Type, StateKey: *e.StateKey, EventID: e.EventID})
		}
		return out, true, nil
	}
	st, err := s.db.StateAtStream(ctx, string(roomID), pos)
	return st, false, err
}

// State returns the room state the user may see (GET /rooms/{id}/state).
func (s *Server) State(ctx context.Context, user id.UserID, roomID id.RoomID) ([]*ClientEvent, error) {
	version, v, err := s.roomAndViewer(ctx, user, roomID)
	if err != nil {
		return nil, err
	}
	entries, _, err := s.stateVisibleTo(ctx, roomID, v)
	if err != nil {
		return nil, err
	}
	return s.loadClientEvents(ctx, version, v, entries)
}

func (s *Server) loadClientEvents(ctx context.Context, version id.RoomVersion, v *viewer, entries []storage.StateEntry) ([]*ClientEvent, error) {
	ids := make([]string, len(entries))
	for i, e := range entries {
		ids[i] = e.EventID
	}
	evs, err := s.db.GetEvents(ctx, ids)
	if err != nil {
		return nil, err
	}
	ses := make([]*storage.StoredEvent, 0, len(entries))
	for _, x := range ids {
		if se, ok := evs[x]; ok {
			ses = append(ses, se)
		}
	}
	return s.clientEvents(ctx, version, v, ses)
}

// StateEvent returns one state event the user may see; M_NOT_FOUND if unset.
func (s *Server) StateEvent(ctx context.Context, user id.UserID, roomID id.RoomID, evType, stateKey string) (*ClientEvent, error) {
	version, v, err := s.roomAndViewer(ctx, user, roomID)
	if err != nil {
		return nil, err
	}
	entries, _, err := s.stateVisibleTo(ctx, roomID, v)
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		if e.Type == evType && e.StateKey == stateKey {
			se, err := s.db.GetEvent(ctx, e.EventID)
			if err != nil {
				return nil, err
			}
			return s.toClient(ctx, version, v, se)
		}
	}
	return nil, mxhttp.NotFound("Event not found")
}

// Event returns one event the user may see (GET /rooms/{id}/event/{eventId}).
func (s *Server) Event(ctx context.Context, user id.UserID, roomID id.RoomID, eventID id.EventID) (*ClientEvent, error) {
	if !ValidEventID(string(eventID)) {
		return nil, mxhttp.NotFound("Event not found")
	}
	version, v, err := s.roomAndViewer(ctx, user, roomID)
	if err != nil {
		return nil, err
	}
	se, err := s.db.GetEvent(ctx, string(eventID))
	if errors.Is(err, storage.ErrNotFound) || (err == nil && (se.RoomID != string(roomID) || se.SoftFailed)) {
		return nil, mxhttp.NotFound("Event not found")
	}
	if err != nil {
		return nil, err
	}
	if !v.canSee(se.StreamPos) {
		return nil, mxhttp.NotFound("Event not found or not visible to you")
	}
	return s.toClient(ctx, version, v, se)
}

// MembersQuery filters GET /rooms/{id}/members.
type MembersQuery struct {
	At            string // pagination token: members at that point
	Membership    string
	NotMembership string
}

// Members returns member events of the room the user may see.
func (s *Server) Members(ctx context.Context, user id.UserID, roomID id.RoomID, q MembersQuery) ([]*ClientEvent, error) {
	version, v, err := s.roomAndViewer(ctx, user, roomID)
	if err != nil {
		return nil, err
	}
	var entries []storage.StateEntry
	pos, current := v.lastVisiblePos()
	if q.At != "" {
		tok, err := ParseToken(q.At)
		if err != nil {
			return nil, mxhttp.InvalidParam("Invalid at token")
		}
		at := tok.Stream
		if !current && pos < 0 {
			return nil, mxhttp.Forbidden("You are not in this room")
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
	var members []storage.StateEntry
	for _, e := range entries {
		if e.Type == "m.room.member" {
			members = append(members, e)
		}
	}
	evs, err := s.loadClientEvents(ctx, version, v, members)
	if err != nil {
		return nil, err
	}
	out := evs[:0]
	for _, e := range evs {
		m := gjson.GetBytes(e.Content, "membership").Str
		if (q.Membership != "" && m != q.Membership) || (q.NotMembership != "" && m == q.NotMembership) {
			continue
		}
		out = append(out, e)
	}
	return out, nil
}

// membersAtPoint is the room state at stream position at for /members?at=:
// the state after the last event at or before it. A point before the room's
// first member (a prev_batch from before the create event, as /sync gives
// for a timeline that starts with the room) names the room as it began:
// the state once its creator joined, not an empty room.
func (s *Server) membersAtPoint(ctx context.Context, roomID id.RoomID, v *viewer, at int64) ([]storage.StateEntry, error) {
	first, err := s.db.FirstMemberPosition(ctx, string(roomID))
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return nil, fmt.Errorf("reading the first member of %s: %w", roomID, err)
	}
	at = max(at, first)
	// Nor the members at a point the user may not see (before they
	// joined a room with joined history, say): the earliest they may.
	at, ok := v.firstVisibleFrom(at)
	if !ok {
		return nil, mxhttp.Forbidden("You may not see the room at that point")
	}
	return s.db.StateAtStream(ctx, string(roomID), at)
}

// JoinedMember is an entry of GET /joined_members. An unset display name
// or avatar is null rather than absent, as Synapse answers and clients and
// Complement expect.
type JoinedMember struct {
	DisplayName *string `json:"display_name"`
	AvatarURL   *string `json:"avatar_url"`
}

// JoinedMembers returns the joined members with their profiles; the user must be joined.
func (s *Server) JoinedMembers(ctx context.Context, user id.UserID, roomID id.RoomID) (map[id.UserID]JoinedMember, error) {
	_, v, err := s.roomAndViewer(ctx, user, roomID)
	if err != nil {
		return nil, err
	}
	if v.current() != "join" {
		return nil, mxhttp.Forbidden("You are not in this room")
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
func (s *Server) JoinedRooms(ctx context.Context, user id.UserID) ([]id.RoomID, error) {
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
func (f *EventFilter) Matches(se *storage.StoredEvent) bool {
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
	Start string         `json:"start"`
	End   string         `json:"end,omitempty"`
	Chunk []*ClientEvent `json:"chunk"`
	State []*ClientEvent `json:"state,omitempty"`
}

func (s *Server) tokenPos(ctx context.Context, roomID id.RoomID, tok string) (storage.TopoPos, error) {
	t, err := ParseToken(tok)
	if err != nil {
		return storage.TopoPos{}, mxhttp.InvalidParam("Invalid pagination token")
	}
	if t.Topological {
		return t.topo(), nil
	}
	return s.db.TopoPosAtStream(ctx, string(roomID), t.Stream)
}

// maxMessagesScan bounds the events one /messages request reads.
const maxMessagesScan = 2000

// Messages pages through a room's history in topological order.
func (s *Server) Messages(ctx context.Context, user id.UserID, roomID id.RoomID, req MessagesRequest) (*MessagesResponse, error) {
	version, v, err := s.roomAndViewer(ctx, user, roomID)
	if err != nil {
		return nil, err
	}
	if v.current() != "join" && len(v.memberHist) == 0 {
		if cur, err := s.db.CurrentStateEvent(ctx, string(roomID), "m.room.history_visibility", ""); err != nil ||
			gjson.GetBytes(cur.JSON, "content.history_visibility").Str != "world_readable" {
			return nil, mxhttp.Forbidden("You are not in this room")
		}
	}
	if req.Dir != "b" && req.Dir != "f" {
		return nil, mxhttp.InvalidParam("dir must be b or f")
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
	resp := &MessagesResponse{Chunk: []*ClientEvent{}}
	resp.Start = TopologicalToken(from.Depth, from.Stream)
	cursor := from
	senders := map[string]bool{}
	var kept []*storage.StoredEvent
	// Hidden history is skipped in SQL (the user's visible stream ranges);
	// what is read and dropped still (a filter's misses) is capped per
	// request: past the cap the answer ends early, with an end token.
	ranges := v.hv.VisibleRanges()
	batchSize := min(max(limit*2, 50), 1000)
	scanned := 0
	for len(kept) < limit && scanned < maxMessagesScan {
		batch, err := s.db.RoomEventsByTopology(ctx, string(roomID), cursor, to, backward, batchSize, ranges)
		if err != nil {
			return nil, err
		}
		scanned += len(batch)
		for _, se := range batch {
			if backward {
				cursor = storage.TopoPos{Depth: se.Depth, Stream: se.StreamPos - 1}
			} else {
				cursor = storage.TopoPos{Depth: se.Depth, Stream: se.StreamPos}
			}
			if v.canSee(se.StreamPos) && req.Filter.Matches(se) && !(se.StateKey == nil && ignored[se.Sender]) {
				kept = append(kept, se)
				senders[se.Sender] = true
			}
			if len(kept) >= limit {
				break
			}
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
		if resp.Chunk, err = s.clientEvents(ctx, version, v, kept); err != nil {
			return nil, err
		}
	}
	if req.Filter != nil && req.Filter.LazyLoadMembers && len(senders) > 0 {
		st, err := s.membersOf(ctx, version, v, roomID, senders)
		if err != nil {
			return nil, err
		}
		resp.State = st
	}
	return resp, nil
}

func (s *Server) membersOf(ctx context.Context, version id.RoomVersion, v *viewer, roomID id.RoomID, users map[string]bool) ([]*ClientEvent, error) {
	var entries []storage.StateEntry
	for u := range users {
		if se, err := s.db.CurrentStateEvent(ctx, string(roomID), "m.room.member", u); err == nil {
			entries = append(entries, storage.StateEntry{Type: "m.room.member", StateKey: u, EventID: se.EventID})
		}
	}
	return s.loadClientEvents(ctx, version, v, entries)
}

// ContextResponse is GET /rooms/{id}/context/{eventId}.
type ContextResponse struct {
	Start        string         `json:"start,omitempty"`
	End          string         `json:"end,omitempty"`
	EventsBefore []*ClientEvent `json:"events_before"`
	Event        *ClientEvent   `json:"event"`
	EventsAfter  []*ClientEvent `json:"events_after"`
	State        []*ClientEvent `json:"state"`
}

// Context returns events around an event.
func (s *Server) Context(ctx context.Context, user id.UserID, roomID id.RoomID, eventID id.EventID, limit int, filter *EventFilter) (*ContextResponse, error) {
	ev, err := s.Event(ctx, user, roomID, eventID)
	if err != nil {
		return nil, err
	}
	se, err := s.db.GetEvent(ctx, string(eventID))
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
	resp := &ContextResponse{Event: ev, EventsBefore: []*ClientEvent{}, EventsAfter: []*ClientEvent{}}
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
	// Tokens: before the earliest returned event and after the latest one.
	resp.Start, resp.End = back.End, fwd.End
	if resp.Start == "" {
		resp.Start = TopologicalToken(0, 0)
	}
	if resp.End == "" {
		resp.End = TopologicalToken(se.Depth, se.StreamPos)
		if n := len(resp.EventsAfter); n > 0 {
			if last, err := s.db.GetEvent(ctx, string(resp.EventsAfter[n-1].EventID)); err == nil {
				resp.End = TopologicalToken(last.Depth, last.StreamPos)
			}
		}
	}
	// State at the event.
	entries, err := s.db.SnapshotState(ctx, se.StateBefore)
	if err != nil {
		return nil, err
	}
	if filter != nil && filter.LazyLoadMembers {
		want := map[string]bool{string(ev.Sender): true}
		for _, e := range append(resp.EventsBefore, resp.EventsAfter...) {
			want[string(e.Sender)] = true
		}
		entries = slices.DeleteFunc(entries, func(e storage.StateEntry) bool { return e.Type == "m.room.member" && !want[e.StateKey] })
	}
	version, v, err := s.roomAndViewer(ctx, user, roomID)
	if err != nil {
		return nil, err
	}
	if resp.State, err = s.loadClientEvents(ctx, version, v, entries); err != nil {
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
		return nil, mxhttp.BadJSON("Invalid filter: %v", err)
	}
	return &f, nil
}
