package roomview

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/clientevent"
	"github.com/myelin-chat/myelin/roomserver"
	"github.com/myelin-chat/myelin/storage"
)

// ---- relations and threads ----

// RelationsRequest is GET /v1/rooms/{id}/relations/{eventId}[/{relType}[/{eventType}]].
type RelationsRequest struct {
	EventID   id.EventID
	RelType   string
	EventType string
	From      string
	To        string // stop at this token ("" none), as /messages does
	Backward  bool
	Limit     int
	// Recurse is the recurse parameter (v1.10, MSC3981); nil when not given.
	Recurse *bool
}

// MaxRelationsDepth is how many relationships deep /relations?recurse=true
// follows (the spec asks for at least 3).
const MaxRelationsDepth = 3

// RelationsResponse is its answer.
type RelationsResponse struct {
	Chunk     []json.RawMessage `json:"chunk"`
	NextBatch string            `json:"next_batch,omitempty"`
	PrevBatch string            `json:"prev_batch,omitempty"`
	// RecursionDepth is the depth used, present exactly when recurse was given.
	RecursionDepth *int `json:"recursion_depth,omitempty"`
}

// Relations lists events relating to an event the user can see.
func (s *Service) Relations(ctx context.Context, user id.UserID, roomID id.RoomID, req RelationsRequest) (*RelationsResponse, error) {
	v, _, err := s.visibleEvent(ctx, user, roomID, req.EventID)
	if err != nil {
		return nil, err
	}
	var from int64 // going back: 0 is the end of the room (storage.DB.Relations)
	if !req.Backward {
		from = -1 << 62 // the start, below backfilled history
	}
	if req.From != "" {
		t, err := ParseToken(req.From)
		if err != nil {
			return nil, roomserver.InvalidParam("Invalid from token")
		}
		from = t.Stream
	}
	var to *int64
	if req.To != "" {
		t, err := ParseToken(req.To)
		if err != nil {
			return nil, roomserver.InvalidParam("Invalid to token")
		}
		to = &t.Stream
	}
	limit := req.Limit
	if limit <= 0 || limit > 100 {
		limit = 50
	}
	hops := 1
	if req.Recurse != nil && *req.Recurse {
		hops = MaxRelationsDepth
	}
	evs, err := s.db.Relations(ctx, string(roomID), string(req.EventID), req.RelType, req.EventType, hops, from, to, req.Backward, limit+1)
	if err != nil {
		return nil, err
	}
	resp := &RelationsResponse{Chunk: []json.RawMessage{}}
	if req.Recurse != nil {
		resp.RecursionDepth = &hops
	}
	var kept []*storage.Event
	for i, se := range evs {
		if i == limit {
			resp.NextBatch = StreamToken(evs[i-1].StreamPos)
			break
		}
		if v.canSee(se.StreamPos) {
			kept = append(kept, se)
		}
	}
	if len(kept) > 0 {
		if resp.Chunk, err = s.clientEvents(ctx, v, kept); err != nil {
			return nil, err
		}
	}
	if req.From != "" {
		resp.PrevBatch = req.From
	}
	return resp, nil
}

// ThreadsResponse is GET /v1/rooms/{id}/threads.
type ThreadsResponse struct {
	Chunk     []json.RawMessage `json:"chunk"`
	NextBatch string            `json:"next_batch,omitempty"`
}

// Threads lists thread roots, latest activity first.
func (s *Service) Threads(ctx context.Context, user id.UserID, roomID id.RoomID, include, from string, limit int) (*ThreadsResponse, error) {
	_, v, err := s.roomAndViewer(ctx, user, roomID)
	if err != nil {
		return nil, err
	}
	if v.current() != "join" && len(v.memberHist) == 0 {
		return nil, roomserver.Forbidden("You are not in this room")
	}
	if include != "" && include != "all" && include != "participated" {
		return nil, roomserver.InvalidParam("include must be all or participated")
	}
	var before int64
	if from != "" {
		t, err := ParseToken(from)
		if err != nil {
			return nil, roomserver.InvalidParam("Invalid from token")
		}
		before = t.Stream
	}
	if limit <= 0 || limit > 100 {
		limit = 50
	}
	roots, latest, err := s.db.ThreadRoots(ctx, string(roomID), before, limit+1)
	if err != nil {
		return nil, err
	}
	resp := &ThreadsResponse{Chunk: []json.RawMessage{}}
	for i, root := range roots {
		if i == limit {
			resp.NextBatch = StreamToken(latest[i-1])
			break
		}
		if !v.canSee(root.StreamPos) {
			continue
		}
		// The summary covers the replies the user may see: not those sent
		// after they left, say.
		replies, err := s.db.ThreadReplies(ctx, root.EventID)
		if err != nil {
			return nil, err
		}
		count, latest := 0, ""
		participated := root.Sender == string(user)
		for _, r := range replies {
			if !v.canSee(r.Pos) {
				continue
			}
			if count == 0 {
				latest = r.EventID
			}
			count++
			participated = participated || r.Sender == string(user)
		}
		if include == "participated" && !participated {
			continue
		}
		ce, err := s.toClient(ctx, v, root)
		if err != nil {
			return nil, err
		}
		summary := map[string]any{"count": count, "current_user_participated": participated}
		if latest != "" {
			last, err := s.db.GetEvent(ctx, latest)
			if err != nil {
				return nil, err
			}
			if lc, err := s.toClient(ctx, v, last); err == nil {
				summary["latest_event"] = lc
			}
		}
		if ce, err = clientevent.WithUnsigned(ce, "m.relations", map[string]any{"m.thread": summary}); err != nil {
			return nil, err
		}
		resp.Chunk = append(resp.Chunk, ce)
	}
	return resp, nil
}

// ---- timestamp_to_event ----

// TimestampToEvent finds the event closest to ts in the given direction:
// the closest one stored, or, when that may lie in history this server
// lacks, the one another server names (timestampNearRemote).
func (s *Service) TimestampToEvent(ctx context.Context, user id.UserID, roomID id.RoomID, ts int64, forwards bool) (id.EventID, int64, error) {
	_, v, err := s.roomAndViewer(ctx, user, roomID)
	if err != nil {
		return "", 0, err
	}
	if v.current() != "join" && len(v.memberHist) == 0 {
		return "", 0, roomserver.Forbidden("You are not in this room")
	}
	se, err := s.db.EventNearTimestamp(ctx, string(roomID), ts, forwards)
	if errors.Is(err, storage.ErrNotFound) {
		se, err = nil, nil
	}
	if err != nil {
		return "", 0, err
	}
	if remote := s.timestampNearRemote(ctx, v, roomID, ts, forwards, se); remote != nil {
		se = remote
	}
	if se == nil || !v.canSee(se.StreamPos) {
		return "", 0, roomserver.NotFound("No event found")
	}
	return id.EventID(se.EventID), se.OriginServerTS, nil
}

// ---- room summary and hierarchy ----

// RoomSummary is GET /v1/room_summary/{roomIdOrAlias}.
type RoomSummary struct {
	PublicRoom
	AllowedRoomIDs []string `json:"allowed_room_ids,omitempty"`
	Membership     string   `json:"membership,omitempty"`
	RoomVersion    string   `json:"room_version,omitempty"`
	Encryption     string   `json:"encryption,omitempty"`
}

// allowedRooms are the rooms whose members may join a restricted (or
// knock_restricted) room: its join rules' m.room_membership allow conditions.
func (s *Service) allowedRooms(ctx context.Context, roomID id.RoomID, joinRule string) ([]string, error) {
	if joinRule != "restricted" && joinRule != "knock_restricted" {
		return nil, nil
	}
	e, err := s.db.CurrentStateEvent(ctx, string(roomID), "m.room.join_rules", "")
	if errors.Is(err, storage.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, a := range gjson.GetBytes(e.JSON, "content.allow").Array() {
		if a.Get("type").Str == "m.room_membership" && a.Get("room_id").Type == gjson.String {
			out = append(out, a.Get("room_id").Str)
		}
	}
	return out, nil
}

// canPeek reports whether user ("" when anonymous) may see a room's summary
// or its place in a space hierarchy (space_hierarchy.yaml, room_summary.yaml
// and MSC3266): members, invitees and knockers; anyone when the room is
// public, knockable (knock, knock_restricted) or world_readable; for a
// restricted room, only a user who meets one of its allow conditions (is
// joined to one of allowed).
func (s *Service) canPeek(ctx context.Context, user id.UserID, info *PublicRoom, membership string, allowed []string) (bool, error) {
	switch membership {
	case "join", "invite", "knock":
		return true, nil
	}
	switch info.JoinRule {
	case "public", "knock", "knock_restricted":
		return true, nil
	}
	if info.WorldReadable {
		return true, nil
	}
	if info.JoinRule != "restricted" || user == "" || membership == "ban" {
		return false, nil
	}
	for _, room := range allowed {
		m, err := s.db.GetMembership(ctx, room, string(user))
		if errors.Is(err, storage.ErrNotFound) {
			continue
		}
		if err != nil {
			return false, err
		}
		if m.Membership == "join" {
			return true, nil
		}
	}
	return false, nil
}

// membershipOf is user's current membership in room ("" when none or anonymous).
func (s *Service) membershipOf(ctx context.Context, roomID id.RoomID, user id.UserID) (string, error) {
	if user == "" {
		return "", nil
	}
	m, err := s.db.GetMembership(ctx, string(roomID), string(user))
	if errors.Is(err, storage.ErrNotFound) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	return m.Membership, nil
}

// Summary describes a room to a user who may see it; user is "" for an
// anonymous request (then the answer has no membership).
func (s *Service) Summary(ctx context.Context, user id.UserID, roomIDOrAlias string) (*RoomSummary, error) {
	roomID, err := roomserver.ResolveRoom(ctx, s.db, roomIDOrAlias)
	if err != nil {
		return nil, err
	}
	version, err := roomserver.RoomVersion(ctx, s.db, roomID)
	if errors.Is(err, roomserver.ErrUnknownRoom) {
		return nil, roomserver.NotFound("Room not found")
	}
	if err != nil {
		return nil, err
	}
	info, err := s.roomInfo(ctx, roomID)
	if err != nil {
		return nil, err
	}
	membership, err := s.membershipOf(ctx, roomID, user)
	if err != nil {
		return nil, err
	}
	allowed, err := s.allowedRooms(ctx, roomID, info.JoinRule)
	if err != nil {
		return nil, err
	}
	if ok, err := s.canPeek(ctx, user, info, membership, allowed); err != nil {
		return nil, err
	} else if !ok {
		return nil, roomserver.NotFound("Room not found or not visible to you")
	}
	sum := &RoomSummary{PublicRoom: *info, AllowedRoomIDs: allowed, Membership: membership, RoomVersion: string(version)}
	if sum.Membership == "" && user != "" {
		sum.Membership = "leave"
	}
	if e, err := s.db.CurrentStateEvent(ctx, string(roomID), "m.room.encryption", ""); err == nil {
		sum.Encryption = gjson.GetBytes(e.JSON, "content.algorithm").Str
	}
	return sum, nil
}

// HierarchyRoom is one room of GET /v1/rooms/{id}/hierarchy.
type HierarchyRoom struct {
	PublicRoom
	AllowedRoomIDs []string          `json:"allowed_room_ids,omitempty"`
	ChildrenState  []json.RawMessage `json:"children_state"`
}

// HierarchyResponse is the page.
type HierarchyResponse struct {
	Rooms     []*HierarchyRoom `json:"rooms"`
	NextBatch string           `json:"next_batch,omitempty"`
}

// Hierarchy walks a space's m.space.child links breadth first over the rooms
// this server knows, listing those the user may see.
func (s *Service) Hierarchy(ctx context.Context, user id.UserID, roomID id.RoomID, suggestedOnly bool, maxDepth, limit int, from string) (*HierarchyResponse, error) {
	root, err := s.roomInfo(ctx, roomID)
	if err != nil {
		return nil, err
	}
	if _, err := roomserver.RoomVersion(ctx, s.db, roomID); errors.Is(err, roomserver.ErrUnknownRoom) {
		return nil, roomserver.Forbidden("You cannot see this room")
	} else if err != nil {
		return nil, err
	}
	membership, err := s.membershipOf(ctx, roomID, user)
	if err != nil {
		return nil, err
	}
	rootAllowed, err := s.allowedRooms(ctx, roomID, root.JoinRule)
	if err != nil {
		return nil, err
	}
	if ok, err := s.canPeek(ctx, user, root, membership, rootAllowed); err != nil {
		return nil, err
	} else if !ok {
		return nil, roomserver.Forbidden("You cannot see this room")
	}
	if limit <= 0 || limit > 100 {
		limit = 50
	}
	if maxDepth <= 0 {
		maxDepth = 10
	}
	skip, err := parseHierarchyToken(from, maxDepth, suggestedOnly)
	if err != nil {
		return nil, err
	}
	// Depth-first, as the spec pages the tree: a stack whose top is the
	// next child in the space's order (children are pushed in reverse).
	type item struct {
		room  id.RoomID
		depth int
		via   []string // set for a room this server does not know
	}
	stack := []item{{roomID, 0, nil}}
	seen := map[id.RoomID]bool{}
	resp := &HierarchyResponse{Rooms: []*HierarchyRoom{}}
	remote := newRemoteWalk(s.remoteSpaces, suggestedOnly)
	index := 0
	for len(stack) > 0 {
		it := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if seen[it.room] {
			continue
		}
		seen[it.room] = true
		var hr *HierarchyRoom
		var children []spaceChild
		if it.via == nil {
			info, err := s.roomInfo(ctx, it.room)
			if err != nil {
				return nil, err
			}
			mem, err := s.membershipOf(ctx, it.room, user)
			if err != nil {
				return nil, err
			}
			allowed, err := s.allowedRooms(ctx, it.room, info.JoinRule)
			if err != nil {
				return nil, err
			}
			if it.room != roomID {
				if ok, err := s.canPeek(ctx, user, info, mem, allowed); err != nil {
					return nil, err
				} else if !ok {
					continue
				}
			}
			hr = &HierarchyRoom{PublicRoom: *info, AllowedRoomIDs: allowed, ChildrenState: []json.RawMessage{}}
			// Only a space has children: m.space.child in another room is no link.
			if info.RoomType == "m.space" {
				if children, err = s.spaceChildren(ctx, it.room, suggestedOnly); err != nil {
					return nil, err
				}
			}
		} else {
			// Another server's room: as its servers describe it, if the
			// user could peek at it (membership here is unknown).
			var ok bool
			hr, children, ok = remote.room(ctx, it.room, it.via, it.depth < maxDepth)
			if !ok {
				continue
			}
			if peek, err := s.canPeek(ctx, user, &hr.PublicRoom, "", hr.AllowedRoomIDs); err != nil {
				return nil, err
			} else if !peek {
				continue
			}
		}
		for _, c := range children {
			hr.ChildrenState = append(hr.ChildrenState, c.event)
		}
		for i := len(children) - 1; i >= 0; i-- {
			child := children[i]
			if it.depth < maxDepth && !seen[child.room] {
				_, err := roomserver.RoomVersion(ctx, s.db, child.room)
				if err == nil {
					stack = append(stack, item{child.room, it.depth + 1, nil})
				} else if !errors.Is(err, roomserver.ErrUnknownRoom) {
					return nil, err
				} else if remote.enabled() {
					stack = append(stack, item{child.room, it.depth + 1, child.via})
				}
			}
		}
		if index >= skip {
			if len(resp.Rooms) == limit {
				resp.NextBatch = hierarchyToken(index, maxDepth, suggestedOnly)
				break
			}
			resp.Rooms = append(resp.Rooms, hr)
		}
		index++
	}
	return resp, nil
}

// hierarchyToken is a /hierarchy next_batch: the index of the next room in
// the traversal, and the parameters it was made with, which the spec does
// not let change between pages.
func hierarchyToken(index, maxDepth int, suggestedOnly bool) string {
	return fmt.Sprintf("h%d_%d_%t", index, maxDepth, suggestedOnly)
}

// parseHierarchyToken returns the index a from token resumes at (0 for none).
func parseHierarchyToken(from string, maxDepth int, suggestedOnly bool) (int, error) {
	if from == "" {
		return 0, nil
	}
	var index, depth int
	var suggested bool
	if n, err := fmt.Sscanf(from, "h%d_%d_%t", &index, &depth, &suggested); err != nil || n != 3 || index < 0 ||
		from != hierarchyToken(index, depth, suggested) {
		return 0, roomserver.InvalidParam("Invalid from token")
	}
	if depth != maxDepth || suggested != suggestedOnly {
		return 0, roomserver.InvalidParam("suggested_only and max_depth cannot change on paginated requests")
	}
	return index, nil
}

// spaceChild is a child link of a space, as /hierarchy lists it.
type spaceChild struct {
	room  id.RoomID
	event json.RawMessage // stripped, with origin_server_ts
	order string          // "" when absent or invalid
	ts    int64
	via   []string // servers to ask about the child
}

// spaceChildren returns a space's valid child links (a non-empty via) in
// the spec's order: children with a valid order key first, by that key,
// then by the link's origin_server_ts, then by room ID.
func (s *Service) spaceChildren(ctx context.Context, space id.RoomID, suggestedOnly bool) ([]spaceChild, error) {
	state, err := s.db.CurrentStateEvents(ctx, string(space))
	if err != nil {
		return nil, err
	}
	var out []spaceChild
	for _, se := range state {
		if se.Type != "m.space.child" || se.StateKey == nil {
			continue
		}
		if c, ok := childLink(*se.StateKey, se.Sender, se.OriginServerTS, gjson.GetBytes(se.JSON, "content"), suggestedOnly); ok {
			out = append(out, c)
		}
	}
	sortChildren(out)
	return out, nil
}

// childLink is the link an m.space.child event makes, if it makes one: a
// non-empty via (a child without via is removed), suggested when only
// suggested children are asked for.
func childLink(stateKey, sender string, ts int64, content gjson.Result, suggestedOnly bool) (spaceChild, bool) {
	via := content.Get("via")
	if !via.IsArray() || len(via.Array()) == 0 {
		return spaceChild{}, false
	}
	if suggestedOnly && !content.Get("suggested").Bool() {
		return spaceChild{}, false
	}
	c := spaceChild{room: id.RoomID(stateKey), ts: ts}
	for _, v := range via.Array() {
		if v.Type == gjson.String && len(c.via) < maxChildVia {
			c.via = append(c.via, v.Str)
		}
	}
	if o := content.Get("order"); o.Type == gjson.String && validChildOrder(o.Str) {
		c.order = o.Str
	}
	c.event = roomserver.MustJSON(map[string]any{
		"type": "m.space.child", "state_key": stateKey, "sender": sender, "origin_server_ts": ts,
		"content": json.RawMessage(content.Raw),
	})
	return c, true
}

// maxChildVia bounds the servers kept of one link's via.
const maxChildVia = 10

// sortChildren puts child links in the spec's order.
func sortChildren(out []spaceChild) {
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if (a.order != "") != (b.order != "") {
			return a.order != ""
		}
		if a.order != b.order {
			return a.order < b.order
		}
		if a.ts != b.ts {
			return a.ts < b.ts
		}
		return a.room < b.room
	})
}

// validChildOrder reports whether an m.space.child order is valid: 1 to 50
// characters from \x20 to \x7E.
func validChildOrder(o string) bool {
	if o == "" || len(o) > 50 {
		return false
	}
	for i := 0; i < len(o); i++ {
		if o[i] < 0x20 || o[i] > 0x7e {
			return false
		}
	}
	return true
}

// ---- reports ----

// MaxReportReasonBytes bounds a report's reason: it is stored for the
// server's admins, and no one writes a report longer than a few paragraphs.
const MaxReportReasonBytes = 4096

// Report records a user's report of an event (or of the room when eventID is "").
func (s *Service) Report(ctx context.Context, user id.UserID, roomID id.RoomID, eventID id.EventID, reason string, score *int64) error {
	if eventID != "" {
		if _, err := s.Event(ctx, user, roomID, eventID); err != nil {
			return err
		}
	} else if _, err := roomserver.RoomVersion(ctx, s.db, roomID); errors.Is(err, roomserver.ErrUnknownRoom) {
		return roomserver.NotFound("Room not found")
	} else if err != nil {
		return err
	}
	if score != nil && (*score < -100 || *score > 0) {
		return roomserver.InvalidParam("score must be between -100 and 0")
	}
	if len(reason) > MaxReportReasonBytes {
		return roomserver.InvalidParam("reason exceeds %d bytes", MaxReportReasonBytes)
	}
	return s.db.AddReport(ctx, string(roomID), string(eventID), string(user), reason, score, time.Now().UnixMilli())
}
