// Package syncv2 answers GET /sync (v2, as opposed to sliding sync): it reads everything after the client's
// token up to the stream's safe position, shapes it by the client's filter,
// and long-polls on the notifier when there is nothing new.
package syncv2

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"slices"
	"sort"

	"maunium.net/go/mautrix/pushrules"

	"github.com/myelin-chat/myelin/ephemeral"
	"github.com/myelin-chat/myelin/keyserver"
	"github.com/myelin-chat/myelin/push"
	"github.com/myelin-chat/myelin/storage"
)

// Store is what /sync reads from the store; *storage.DB satisfies it.
type Store interface {
	UserMembershipEvents(ctx context.Context, userID string, to int64) ([]storage.UserMembershipChange, error)
	RoomsWithEvents(ctx context.Context, from, to int64) (map[string]bool, error)
	RoomEventsRange(ctx context.Context, roomID string, from, to int64, limit int) ([]*storage.Event, bool, error)
	StateAtPosition(ctx context.Context, roomID string, pos int64) (storage.StateMap, error)
	StateBeforeEvent(ctx context.Context, eventID string) (storage.StateMap, error)
	GetEvents(ctx context.Context, ids []string) (map[string]*storage.Event, error)
	ErasedUsers(ctx context.Context, userIDs []string) (map[string]bool, error) // clientevent.Store
	GetRoom(ctx context.Context, roomID string) (*storage.RoomRow, error)
	EventsInStreamOrder(ctx context.Context, ids []string) ([]*storage.Event, error)
	RoomMembersSummaryAt(ctx context.Context, roomID string, at int64) (joined, invited []string, err error)
	GetFilter(ctx context.Context, userID string, filterID int64) (json.RawMessage, error)
	AccountDataSince(ctx context.Context, userID string, from, to int64) ([]storage.AccountData, error)
	ReceiptsInRange(ctx context.Context, userID string, from, to int64) ([]storage.Receipt, error)
	RoomReceipts(ctx context.Context, roomID string, to int64) ([]storage.Receipt, error)
	UsersSharingRooms(ctx context.Context, userID string) ([]string, error)
	HistoryVisibilityChanges(ctx context.Context, roomID string) ([]storage.PositionedValue, error)
	UsersJoinedBetween(ctx context.Context, userID string, from, to int64) ([]string, error)
	IgnoredUsers(ctx context.Context, userID string) (map[string]bool, error)
	ForgottenRooms(ctx context.Context, userID string) (map[string]bool, error)
}

// Keys is what /sync reads from the keyserver (keyserver.Service). It may be
// nil (no E2EE sections).
type Keys interface {
	// DeviceListChanges: users sharing a room whose devices changed in
	// (from, to], and users who stopped sharing any room.
	DeviceListChanges(ctx context.Context, userID string, from, to int64) (changed, left []string, err error)
	// ToDeviceSince returns up to limit pending messages after position
	// after; DeleteToDeviceUpTo deletes those a later since token acknowledged.
	ToDeviceSince(ctx context.Context, userID, deviceID string, after int64, limit int) ([]keyserver.ToDeviceEvent, error)
	DeleteToDeviceUpTo(ctx context.Context, userID, deviceID string, pos int64) error
	OneTimeKeyCounts(ctx context.Context, userID, deviceID string) (map[string]int, error)
	UnusedFallbackKeyTypes(ctx context.Context, userID, deviceID string) ([]string, error)
}

// toDeviceLimit caps to-device messages per response; the rest follow in the
// next (the token's to-device part stops at the last one delivered).
const toDeviceLimit = 100

// Stream is the store's stream; Current is the safe read position.
type Stream interface{ Current() int64 }

// Ephemeral is what /sync reads of typing and presence, and how it marks
// the syncing user present (ephemeral.Service).
type Ephemeral interface {
	TypingSerial() int64
	TypingSince(roomID string, serial int64) (users []string, changed bool)
	SetPresence(ctx context.Context, userID, state string, statusMsg *string, setMsg bool) error
	PresenceEnabled() bool
	PresenceSince(ctx context.Context, users []string, from, to int64) ([]storage.Presence, error)
	PresenceContent(p storage.Presence) ephemeral.PresenceContent
}

// Push is what /sync reads of push rules and unread counts (push.Service).
type Push interface {
	PushRules(ctx context.Context, userID string) (push.Rules, int64, error)
	PushRuleset(ctx context.Context, userID string) (*pushrules.PushRuleset, int64, error)
	UnreadCounts(ctx context.Context, userID, roomID string, upTo int64, rules *pushrules.PushRuleset, rulesPos int64,
		threaded bool, recent []*storage.Event, recentFrom int64) (push.Counts, map[string]push.Counts, error)
	UnreadCountsInRooms(ctx context.Context, userID string, roomIDs []string, upTo int64, rules *pushrules.PushRuleset,
		rulesPos int64, threaded bool) (map[string]push.RoomCounts, error)
}

// Notifier is what a long-poll waits on (internal/notifier): take a mark
// before reading, then wait for news for the user after a position or for a
// wake-up since the mark.
type Notifier interface {
	WakeMark() uint64
	WaitMarked(ctx context.Context, user string, after int64, mark uint64) bool
}

// Tokens spells the pagination tokens /messages takes (roomview's), which
// a limited timeline's prev_batch is.
type Tokens interface {
	// StreamToken is the token for the point just after stream position pos.
	StreamToken(pos int64) string
	// TopologicalToken is the token for the point just after (depth, pos)
	// in the room's topological order.
	TopologicalToken(depth, pos int64) string
}

// Syncer builds /sync responses.
type Syncer struct {
	store     Store
	ephemeral Ephemeral
	push      Push
	keys      Keys
	notifier  Notifier
	stream    Stream
	tokens    Tokens
	lazy      *lazyMembers
	toDevice  *toDeviceAcks
}

// Options are what a Syncer is built from.
type Options struct {
	Store     Store
	Stream    Stream
	Ephemeral Ephemeral // typing, presence
	Push      Push      // push rules, unread counts
	Keys      Keys      // nil: no E2EE sections
	Notifier  Notifier
	Tokens    Tokens // prev_batch tokens
}

// New builds a Syncer.
func New(o Options) *Syncer {
	return &Syncer{store: o.Store, stream: o.Stream, ephemeral: o.Ephemeral, push: o.Push, keys: o.Keys, notifier: o.Notifier,
		tokens: o.Tokens, lazy: newLazyMembers(), toDevice: newToDeviceAcks()}
}

// prevBatch is the /messages token that continues backwards from before the
// event at position pos.
func (s *Syncer) prevBatch(pos int64) string { return s.tokens.StreamToken(pos - 1) }

// gapPrevBatch is the prev_batch of a timeline starting at or after a gap
// (storage.Event.AfterGap), e its first event: a topological token just
// before e. A stream token would resolve to the latest event before e in
// the stream, which precedes the gap, so /messages would step over it; from
// this one it pages back into the gap, and roomview backfills it first when
// e is the gap event itself (roomview.Service.Messages).
func (s *Syncer) gapPrevBatch(e *storage.Event) string {
	return s.tokens.TopologicalToken(e.Depth, e.StreamPos-1)
}

// lastGap is the latest event of evs (stream order) stored after a gap in
// the room's history, nil if none.
func lastGap(evs []*storage.Event) *storage.Event {
	for i := len(evs) - 1; i >= 0; i-- {
		if evs[i].AfterGap {
			return evs[i]
		}
	}
	return nil
}

// cutAtGap drops the events before gap (nil: none): a timeline that holds
// a gap starts at it, since what came before it is not continuous with it.
func cutAtGap(evs []*storage.Event, gap *storage.Event) []*storage.Event {
	if gap == nil {
		return evs
	}
	for i, e := range evs {
		if e.StreamPos >= gap.StreamPos {
			return evs[i:]
		}
	}
	return nil
}

// Request is one /sync call.
type Request struct {
	UserID, DeviceID string
	Since            Token
	Initial          bool
	FullState        bool
	UseStateAfter    bool // state_after (state up to the end of the timeline) instead of state
	Filter           *Filter
	sinceParam       string // the since token as given ("" for an initial sync)
	// ignored are the users in the user's m.ignored_user_list: their
	// invites and non-state timeline events are left out.
	ignored map[string]bool
}

// DeviceKey identifies the requesting device in caches.
func (r *Request) DeviceKey() string { return r.UserID + "|" + r.DeviceID }

type roomMembership struct {
	before  *storage.UserMembershipChange // latest at or before since
	at      storage.UserMembershipChange  // latest at or before to
	changed bool                          // any change in (since, to]
	history []storage.PositionedValue     // every membership up to to (history visibility)
}

// build assembles the response for (since, to].
func (s *Syncer) build(ctx context.Context, req *Request, to Token) (*Response, error) {
	since := req.Since
	if req.Initial {
		since = Token{}
	}
	resp := &Response{toDevice: to.Pos}
	f := req.Filter
	ignored, err := s.store.IgnoredUsers(ctx, req.UserID)
	if err != nil {
		return nil, err
	}
	req.ignored = ignored

	mems, err := s.memberships(ctx, req.UserID, since.Pos, to.Pos)
	if err != nil {
		return nil, err
	}
	var newRooms map[string]bool
	if !req.Initial {
		if newRooms, err = s.store.RoomsWithEvents(ctx, since.Pos, to.Pos); err != nil {
			return nil, err
		}
	}
	// Account data: global and per room.
	acct, err := s.store.AccountDataSince(ctx, req.UserID, since.Pos, to.Pos)
	if err != nil {
		return nil, err
	}
	roomAcct := map[string][]json.RawMessage{}
	var globalAcct []json.RawMessage
	addAcct := func(a storage.AccountData, into map[string][]json.RawMessage) {
		ev, _ := json.Marshal(map[string]any{"type": a.Type, "content": a.Content})
		content := rawContent(a.Content)
		if a.RoomID == "" {
			if allows(f.AccountData, a.Type, "", "", content) {
				globalAcct = append(globalAcct, ev)
			}
		} else if allows(f.room().AccountData, a.Type, "", a.RoomID, content) {
			into[a.RoomID] = append(into[a.RoomID], ev)
		}
	}
	for _, a := range acct {
		addAcct(a, roomAcct)
	}
	// Receipts for rooms continuing from since (newly joined rooms read all).
	receipts := map[string][]storage.Receipt{}
	if !req.Initial {
		rs, err := s.store.ReceiptsInRange(ctx, req.UserID, since.Pos, to.Pos)
		if err != nil {
			return nil, err
		}
		for _, r := range rs {
			receipts[r.RoomID] = append(receipts[r.RoomID], r)
		}
	}
	rules, rulesPos, err := s.push.PushRules(ctx, req.UserID)
	if err != nil {
		return nil, err
	}
	ruleset, _, err := s.push.PushRuleset(ctx, req.UserID)
	if err != nil {
		return nil, err
	}

	rooms := &Rooms{}
	var newlyJoinedAcct map[string][]json.RawMessage
	roomIDs := make([]string, 0, len(mems))
	for r := range mems {
		roomIDs = append(roomIDs, r)
	}
	sort.Strings(roomIDs)
	var forgotten map[string]bool
	if req.Initial { // incremental syncs still report the leave of a room forgotten since
		if forgotten, err = s.store.ForgottenRooms(ctx, req.UserID); err != nil {
			return nil, err
		}
	}
	// The unread counts of the rooms sent in full (all joined rooms of an
	// initial sync), in a few batched reads: joinedRoom's per-room
	// UnreadCounts then finds them cached.
	var fresh []string
	for _, roomID := range roomIDs {
		m := mems[roomID]
		if f.RoomAllowed(roomID) && !forgotten[roomID] && m.at.Membership == "join" &&
			(req.Initial || req.FullState || m.before == nil || m.before.Membership != "join") {
			fresh = append(fresh, roomID)
		}
	}
	if len(fresh) > 1 {
		if _, err := s.push.UnreadCountsInRooms(ctx, req.UserID, fresh, to.Pos, ruleset, rulesPos, req.Filter.ThreadNotifications()); err != nil {
			return nil, err
		}
	}
	for _, roomID := range roomIDs {
		m := mems[roomID]
		if !f.RoomAllowed(roomID) || forgotten[roomID] {
			continue
		}
		switch m.at.Membership {
		case "join":
			newly := req.Initial || req.FullState || m.before == nil || m.before.Membership != "join"
			if !newly && !newRooms[roomID] && len(receipts[roomID]) == 0 && len(roomAcct[roomID]) == 0 {
				if _, changed := s.ephemeral.TypingSince(roomID, since.Typing); !changed {
					continue
				}
			}
			acctEvs := roomAcct[roomID]
			rrs := receipts[roomID]
			if newly {
				if !req.Initial {
					if newlyJoinedAcct == nil { // room account data from before since
						newlyJoinedAcct = map[string][]json.RawMessage{}
						all, err := s.store.AccountDataSince(ctx, req.UserID, 0, to.Pos)
						if err != nil {
							return nil, err
						}
						for _, a := range all {
							if a.RoomID != "" {
								addAcct(a, newlyJoinedAcct)
							}
						}
					}
					acctEvs = newlyJoinedAcct[roomID]
				}
				if rrs, err = s.store.RoomReceipts(ctx, roomID, to.Pos); err != nil {
					return nil, err
				}
			}
			jr, err := s.joinedRoom(ctx, req, s.roomViewer(roomID, m), since, to, newly, rrs, ruleset, rulesPos)
			if err != nil {
				return nil, err
			}
			if !req.Initial && !m.joinedAt() && jr.Timeline != nil {
				// Joined since the token: the client has none of the room's
				// history, so the timeline is marked limited to have it
				// paginate from prev_batch (as Synapse does).
				jr.Timeline.Limited = true
			}
			jr.AccountData = eventsOrNil(acctEvs)
			if jr.Timeline == nil && jr.State == nil && (jr.StateAfter == nil || len(jr.StateAfter.Events) == 0) && jr.Ephemeral == nil && jr.AccountData == nil && !newly {
				continue
			}
			// A joined room in the answer always has its ephemeral and
			// account data sections, empty or not, as Synapse's do (Complement
			// TestACLsForEDUs reads rooms.join.<id>.ephemeral.events).
			if jr.Ephemeral == nil {
				jr.Ephemeral = &Events{Events: []json.RawMessage{}}
			}
			if jr.AccountData == nil {
				jr.AccountData = &Events{Events: []json.RawMessage{}}
			}
			if rooms.Join == nil {
				rooms.Join = map[string]*JoinedRoom{}
			}
			rooms.Join[roomID] = jr
		case "invite", "knock":
			if !req.Initial && !m.changed {
				continue
			}
			if m.at.Membership == "invite" && req.ignored[m.at.Sender] {
				continue // the spec: invites from ignored users are not sent
			}
			stripped, err := s.strippedState(ctx, roomID, m.at)
			if err != nil {
				return nil, err
			}
			if m.at.Membership == "invite" {
				if rooms.Invite == nil {
					rooms.Invite = map[string]*InvitedRoom{}
				}
				rooms.Invite[roomID] = &InvitedRoom{InviteState: Events{Events: stripped}}
			} else {
				if rooms.Knock == nil {
					rooms.Knock = map[string]*KnockedRoom{}
				}
				rooms.Knock[roomID] = &KnockedRoom{KnockState: Events{Events: stripped}}
			}
		case "leave", "ban":
			// Without include_leave an initial sync still shows a room the
			// user was banned or kicked from, as Synapse: only their own
			// leaves are left out (Complement's TestUnbanViaInvite waits
			// for a ban with fresh syncs).
			if req.Initial && !f.room().IncludeLeave && m.at.Membership == "leave" && m.at.Sender == req.UserID {
				continue
			}
			if !req.Initial && !m.changed {
				continue
			}
			var lr *LeftRoom
			if end, ok := m.joinEnd(); ok {
				full := req.Initial || req.FullState || !m.joinedAt()
				lr, err = s.leftRoom(ctx, req, s.roomViewer(roomID, m), since, m.at, end, full)
			} else {
				lr, err = s.retiredRoom(ctx, req, s.roomViewer(roomID, m), m.at)
			}
			if err != nil {
				return nil, err
			}
			lr.AccountData = eventsOrNil(roomAcct[roomID])
			if rooms.Leave == nil {
				rooms.Leave = map[string]*LeftRoom{}
			}
			rooms.Leave[roomID] = lr
		}
	}
	if len(rooms.Join)+len(rooms.Invite)+len(rooms.Leave)+len(rooms.Knock) > 0 {
		resp.Rooms = rooms
	}

	// Top-level account data, with the push rules as m.push_rules.
	if req.Initial || rulesPos > since.Pos {
		if rulesPos <= to.Pos && allows(f.AccountData, "m.push_rules", "", "", nil) {
			ev, _ := json.Marshal(map[string]any{"type": "m.push_rules", "content": map[string]any{"global": rules}})
			globalAcct = append(globalAcct, ev)
		}
	}
	resp.AccountData = eventsOrNil(globalAcct)

	if err := s.presence(ctx, req, resp, since, to, mems); err != nil {
		return nil, err
	}
	if err := s.e2ee(ctx, req, resp, since, to); err != nil {
		return nil, err
	}
	next := to
	next.ToDevice = resp.toDevice
	resp.NextBatch = next.String()
	return resp, nil
}

// memberships derives, from the user's membership events, each room's
// membership at since and at to.
func (s *Syncer) memberships(ctx context.Context, userID string, since, to int64) (map[string]*roomMembership, error) {
	evs, err := s.store.UserMembershipEvents(ctx, userID, to)
	if err != nil {
		return nil, err
	}
	out := map[string]*roomMembership{}
	for i := range evs {
		e := evs[i]
		m := out[e.RoomID]
		if m == nil {
			m = &roomMembership{}
			out[e.RoomID] = m
		}
		if e.StreamPos <= since {
			m.before = &evs[i]
		} else {
			m.changed = true
		}
		m.at = e
		m.history = append(m.history, storage.PositionedValue{Pos: e.StreamPos, Value: e.Membership})
	}
	return out, nil
}

// joinedAt reports whether the user was joined at the since token.
func (m *roomMembership) joinedAt() bool { return m.before != nil && m.before.Membership == "join" }

// joinEnd is the position of the membership event that ended the user's
// latest join: the last state they may see of a room they left. ok is false
// when they never joined (or are still joined).
func (m *roomMembership) joinEnd() (pos int64, ok bool) {
	for i := len(m.history) - 1; i >= 0; i-- {
		if m.history[i].Value == "join" {
			if i+1 < len(m.history) {
				return m.history[i+1].Pos, true
			}
			return 0, false
		}
	}
	return 0, false
}

func (s *Syncer) presence(ctx context.Context, req *Request, resp *Response, since, to Token, mems map[string]*roomMembership) error {
	if !s.ephemeral.PresenceEnabled() || !typeAllowed(req.Filter.Presence, "m.presence") {
		return nil // off, or the filter wants no presence at all
	}
	users, err := s.store.UsersSharingRooms(ctx, req.UserID)
	if err != nil {
		return err
	}
	found := false
	for _, u := range users {
		found = found || u == req.UserID
	}
	if !found {
		users = append(users, req.UserID)
	}
	ps, err := s.ephemeral.PresenceSince(ctx, users, since.Pos, to.Pos)
	if err != nil {
		return err
	}
	if !req.Initial {
		// Users newly sharing a room are told about whatever their presence
		// is, not only changes since the token.
		newly, err := s.newlySharedUsers(ctx, req, mems, since, to)
		if err != nil {
			return err
		}
		for _, p := range ps {
			delete(newly, p.UserID)
		}
		if len(newly) > 0 {
			more, err := s.ephemeral.PresenceSince(ctx, slices.Sorted(maps.Keys(newly)), 0, to.Pos)
			if err != nil {
				return err
			}
			ps = append(ps, more...)
		}
	}
	var evs []json.RawMessage
	for _, p := range ps {
		if !allows(req.Filter.Presence, "m.presence", p.UserID, "", nil) {
			continue
		}
		ev, _ := json.Marshal(map[string]any{"type": "m.presence", "sender": p.UserID, "content": s.ephemeral.PresenceContent(p)})
		evs = append(evs, ev)
	}
	resp.Presence = eventsOrNil(evs)
	return nil
}

// newlySharedUsers are the users who came to share a joined room with the
// user in (since, to]: every member of a room the user joined, and those who
// joined one of the user's rooms.
func (s *Syncer) newlySharedUsers(ctx context.Context, req *Request, mems map[string]*roomMembership, since, to Token) (map[string]bool, error) {
	joined, err := s.store.UsersJoinedBetween(ctx, req.UserID, since.Pos, to.Pos)
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, u := range joined {
		out[u] = true
	}
	for roomID, m := range mems {
		if m.at.Membership != "join" || m.joinedAt() {
			continue
		}
		members, _, err := s.store.RoomMembersSummaryAt(ctx, roomID, to.Pos)
		if err != nil {
			return nil, err
		}
		for _, u := range members {
			out[u] = true
		}
	}
	delete(out, req.UserID)
	return out, nil
}

func (s *Syncer) e2ee(ctx context.Context, req *Request, resp *Response, since, to Token) error {
	if s.keys == nil {
		return nil
	}
	// A since token acknowledges the to-device messages delivered up to its
	// to-device part; messages above the stream's safe position wait.
	after := int64(0)
	if !req.Initial {
		after = since.ToDevice
		if after > 0 && s.toDevice.needsDelete(req.DeviceKey(), after) {
			if err := s.keys.DeleteToDeviceUpTo(ctx, req.UserID, req.DeviceID, after); err != nil {
				return err
			}
			s.toDevice.deleted(req.DeviceKey(), after)
		}
	}
	msgs, err := s.keys.ToDeviceSince(ctx, req.UserID, req.DeviceID, after, toDeviceLimit)
	if err != nil {
		return err
	}
	var evs []json.RawMessage
	for _, m := range msgs {
		if m.StreamPos > to.Pos {
			break
		}
		b, _ := json.Marshal(m)
		evs = append(evs, b)
		after = m.StreamPos
	}
	if len(msgs) < toDeviceLimit || len(evs) < len(msgs) {
		after = to.Pos // everything up to the safe position was delivered
	}
	resp.toDevice = after
	resp.ToDevice = eventsOrNil(evs)
	if len(evs) > 0 {
		s.toDevice.delivered(req.DeviceKey(), after)
	}
	if !req.Initial {
		changed, left, err := s.keys.DeviceListChanges(ctx, req.UserID, since.Pos, to.Pos)
		if err != nil {
			return err
		}
		if len(changed)+len(left) > 0 {
			resp.DeviceLists = &DeviceLists{Changed: changed, Left: left}
		}
	}
	if resp.OTKCounts, err = s.keys.OneTimeKeyCounts(ctx, req.UserID, req.DeviceID); err != nil {
		return err
	}
	if resp.OTKCounts == nil {
		resp.OTKCounts = map[string]int{}
	}
	fb, err := s.keys.UnusedFallbackKeyTypes(ctx, req.UserID, req.DeviceID)
	if err != nil {
		return err
	}
	if fb == nil {
		fb = []string{}
	}
	resp.FallbackKeyTypes = &fb
	return nil
}

// errNotFound is storage.ErrNotFound for callers of the Store interface.
var errNotFound = storage.ErrNotFound

func isNotFound(err error) bool { return errors.Is(err, errNotFound) }
