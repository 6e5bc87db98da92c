package slidingsync

import (
	"context"
	"encoding/json"
	"slices"
	"sort"

	"github.com/tidwall/gjson"

	"github.com/myelin-chat/myelin/clientapi/syncv2"
	"github.com/myelin-chat/myelin/storage"
)

// bumpTypes are the events that count as activity for bump_stamp (MSC4186).
var bumpTypes = map[string]bool{"m.room.create": true, "m.room.message": true, "m.room.encrypted": true,
	"m.sticker": true, "m.call.invite": true, "m.poll.start": true, "m.beacon_info": true}

// bumpScan is how many recent events are searched for a bump type.
const bumpScan = 10

// candidate is one room of the user's server-side room list.
type candidate struct {
	roomID     string
	mem        *syncv2.Membership
	membership string
	upTo       int64 // the last position the user may see events of
	statePos   int64 // the last position the user may see the state at (their latest join's end once left)
	retired    bool  // never joined, left or banned: an invite or knock that ended
	recency    int64 // sort key: the latest event (or the membership event)
	hasLatest  bool  // recency is the latest event up to upTo (storage.LatestEventPositions)
	bump       int64
	scanBump   bool // bump is still to be searched for below recency (only for rooms sent)
}

// stateKey is cfg.key(), one string per distinct config in an answer: a
// snapshot holds one per room, and a thousand copies of the same long key
// were most of a connection's memory.
func (b *builder) stateKey(cfg *combined) string {
	k := cfg.key()
	if s, ok := b.keys[k]; ok {
		return s
	}
	b.keys[k] = k
	return k
}

// bumpStamp is the room's latest bump-type event among its bumpScan latest
// (the latest event when there is none), read only for rooms being sent.
func (b *builder) bumpStamp(ctx context.Context, c *candidate) (int64, error) {
	if !c.scanBump {
		return c.bump, nil
	}
	recent, _, err := b.h.store.RoomEventsRange(ctx, c.roomID, 0, c.upTo, bumpScan)
	if err != nil {
		return 0, err
	}
	c.bump, c.scanBump = c.recency, false
	for i := len(recent) - 1; i >= 0; i-- {
		if bumpTypes[recent[i].Type] {
			c.bump = recent[i].StreamPos
			break
		}
	}
	return c.bump, nil
}

// roomList is the user's rooms sorted by recency, most recent first: joined,
// invited and knocked rooms, rooms they were kicked or banned from, and rooms
// they left that this connection was already sent.
func (b *builder) roomList(ctx context.Context) ([]*candidate, error) {
	var out []*candidate
	for roomID, m := range b.mems {
		c := b.candidate(roomID, m)
		_, sent := b.prev.rooms[roomID]
		switch c.membership {
		case "join", "invite", "knock":
		case "ban":
			// Banned without ever joining: only to retire an invite or
			// knock this connection was sent.
			if c.retired && !sent {
				continue
			}
		case "leave":
			kicked := m.At().Sender != b.userID && !c.retired
			if !sent && !kicked {
				continue
			}
		default:
			continue
		}
		out = append(out, c)
	}
	// Joined rooms sort by their latest event the user may see, rooms left
	// or banned from by the latest event up to the membership (retired
	// invites and knocks by the membership event): one query for all of them.
	bounds := map[string]int64{}
	for _, c := range out {
		if c.membership != "invite" && c.membership != "knock" && !c.retired {
			bounds[c.roomID] = c.upTo
		}
	}
	latest, err := b.h.store.LatestEventPositions(ctx, bounds)
	if err != nil {
		return nil, err
	}
	for _, c := range out {
		if pos, ok := latest[c.roomID]; ok {
			c.recency = pos
			c.scanBump = true
			c.hasLatest = true
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].recency != out[j].recency {
			return out[i].recency > out[j].recency
		}
		return out[i].roomID < out[j].roomID
	})
	return out, nil
}

// candidate is the room as the user may see it, from their membership.
func (b *builder) candidate(roomID string, m *syncv2.Membership) *candidate {
	at := m.At()
	c := &candidate{roomID: roomID, mem: m, membership: at.Membership, upTo: at.StreamPos, statePos: at.StreamPos,
		recency: at.StreamPos, bump: at.StreamPos}
	switch at.Membership {
	case "join":
		c.upTo, c.statePos = b.to.Pos, b.to.Pos
	case "leave", "ban":
		if end, ok := m.JoinEnd(); ok {
			c.statePos = end
		} else {
			c.retired = true
		}
	}
	return c
}

// roomFacts are what list filters look at, read only when a filter needs them.
type roomFacts struct {
	state storage.StateMap
}

// filterMatch applies a list's filters to a room; kids are the children of
// the filter's spaces (listChildren).
func (b *builder) filterMatch(ctx context.Context, f *listFilters, kids map[string]bool, c *candidate) (bool, error) {
	if inv := f.invite(); inv != nil && *inv != (c.membership == "invite") {
		return false, nil
	}
	if f.IsDM != nil && *f.IsDM != b.dmRooms[c.roomID] {
		return false, nil
	}
	if len(f.Tags) > 0 || len(f.NotTags) > 0 {
		tags := b.tags[c.roomID]
		for _, t := range f.NotTags {
			if tags[t] {
				return false, nil
			}
		}
		if len(f.Tags) > 0 && !slices.ContainsFunc(f.Tags, func(t string) bool { return tags[t] }) {
			return false, nil
		}
	}
	if f.IsEncrypted == nil && f.RoomTypes == nil && f.NotRoomTypes == nil && f.Spaces == nil {
		return true, nil
	}
	state, err := b.roomState(ctx, c)
	if err != nil {
		return false, err
	}
	if f.IsEncrypted != nil {
		_, enc := state[storage.StateKey{Type: "m.room.encryption", StateKey: ""}]
		if enc != *f.IsEncrypted {
			return false, nil
		}
	}
	if f.RoomTypes != nil || f.NotRoomTypes != nil {
		typ, err := b.roomType(ctx, state)
		if err != nil {
			return false, err
		}
		match := func(list []*string) bool {
			return slices.ContainsFunc(list, func(t *string) bool { return (t == nil && typ == nil) || (t != nil && typ != nil && *t == *typ) })
		}
		if match(f.NotRoomTypes) || (f.RoomTypes != nil && !match(f.RoomTypes)) {
			return false, nil
		}
	}
	if f.Spaces != nil && !kids[c.roomID] {
		return false, nil
	}
	return true, nil
}

// roomState is the room's state the user may see: current for joined rooms,
// at the membership event otherwise (invites: what the invite carried is not
// in the store, so the state at the invite event is used only for filters).
func (b *builder) roomState(ctx context.Context, c *candidate) (storage.StateMap, error) {
	if f, ok := b.facts[c.roomID]; ok {
		return f.state, nil
	}
	st, err := b.h.store.StateAtPosition(ctx, c.roomID, c.statePos)
	if err != nil {
		return nil, err
	}
	b.facts[c.roomID] = &roomFacts{state: st}
	return st, nil
}

func (b *builder) roomType(ctx context.Context, state storage.StateMap) (*string, error) {
	id, ok := state[storage.StateKey{Type: "m.room.create", StateKey: ""}]
	if !ok {
		return nil, nil
	}
	evs, err := b.h.store.EventsInStreamOrder(ctx, []string{id})
	if err != nil || len(evs) == 0 {
		return nil, err
	}
	if t := gjson.GetBytes(evs[0].JSON, "content.type"); t.Type == gjson.String {
		s := t.String()
		return &s, nil
	}
	return nil, nil
}

// listChildren are the rooms named by m.space.child in the given spaces the
// user is joined to (not recursively, as the MSC says); nil when the list
// does not filter on spaces. Each space is read once per response.
func (b *builder) listChildren(ctx context.Context, spaces []string) (map[string]bool, error) {
	if spaces == nil {
		return nil, nil
	}
	out := map[string]bool{}
	for _, sp := range spaces {
		kids, err := b.spaceChildren(ctx, sp)
		if err != nil {
			return nil, err
		}
		for r := range kids {
			out[r] = true
		}
	}
	return out, nil
}

// spaceChildren are one space's children (none unless the user is joined),
// cached for the build.
func (b *builder) spaceChildren(ctx context.Context, sp string) (map[string]bool, error) {
	if kids, ok := b.spaces[sp]; ok {
		return kids, nil
	}
	out := map[string]bool{}
	b.spaces[sp] = out
	m, ok := b.mems[sp]
	if !ok || m.At().Membership != "join" {
		return out, nil
	}
	st, err := b.h.store.StateAtPosition(ctx, sp, b.to.Pos)
	if err != nil {
		delete(b.spaces, sp)
		return nil, err
	}
	var ids []string
	for k, ev := range st {
		if k.Type == "m.space.child" {
			ids = append(ids, ev)
		}
	}
	evs, err := b.h.store.EventsInStreamOrder(ctx, ids)
	if err != nil {
		delete(b.spaces, sp)
		return nil, err
	}
	for _, e := range evs {
		// A child event with empty content (no via) is a removed child.
		if via := gjson.GetBytes(e.JSON, "content.via"); via.IsArray() && len(via.Array()) > 0 && e.StateKey != nil {
			out[*e.StateKey] = true
		}
	}
	return out, nil
}

// warmUnreadCounts computes, in a few batched reads (push's
// UnreadCountsInRooms), the unread counts of the joined rooms this answer
// sends in full for the first time — all of them on a new connection — so
// that roomResult's per-room UnreadCounts finds them cached.
func (b *builder) warmUnreadCounts(ctx context.Context, configs map[string]*combined, byID map[string]*candidate) error {
	var rooms []string
	for roomID := range configs {
		c := byID[roomID]
		if c == nil || c.membership != "join" || c.retired {
			continue
		}
		if _, had := b.prev.rooms[roomID]; had {
			continue // counts sent before: cached, or one room's read
		}
		rooms = append(rooms, roomID)
	}
	if len(rooms) < 2 {
		return nil
	}
	_, err := b.h.push.UnreadCountsInRooms(ctx, b.userID, rooms, b.to.Pos, b.ruleset, b.rulesPos, false)
	return err
}

// roomResult builds a room's entry, or nil when there is nothing new to send.
// It records what was sent in b.next.
func (b *builder) roomResult(ctx context.Context, c *candidate, cfg *combined) (*roomResult, error) {
	sent, had := b.prev.rooms[c.roomID]
	transient := func(m string) bool { return m == "invite" || m == "knock" }
	initial := !had || (sent.membership != c.membership && (transient(sent.membership) || transient(c.membership) || c.membership == "join"))
	rec := roomSent{toPos: c.upTo, limit: cfg.limit, cfg: cfg, stateKey: b.stateKey(cfg), membership: c.membership}

	// A joined room with nothing else new is still sent when the user's
	// own read receipt moved since the last answer: its counts changed (a
	// badge cleared by reading on another device).
	countsOnly := func() (*roomResult, error) {
		if initial || c.membership != "join" || !b.readRooms[c.roomID] {
			return nil, nil
		}
		counts, _, err := b.h.push.UnreadCounts(ctx, b.userID, c.roomID, b.to.Pos, b.ruleset, b.rulesPos, false, nil, 0)
		if err != nil {
			return nil, err
		}
		return &roomResult{Membership: c.membership, NotificationCount: &counts.Notifications, HighlightCount: &counts.Highlights,
			IsDM: b.dmRooms[c.roomID]}, nil
	}

	if transient(c.membership) {
		if !initial {
			return nil, nil
		}
		st, err := b.h.syncer.StrippedState(ctx, c.roomID, c.mem)
		if err != nil {
			return nil, err
		}
		b.next.rooms[c.roomID] = rec
		return &roomResult{Initial: true, Membership: c.membership, BumpStamp: c.bump, InviteState: st, StrippedState: st,
			IsDM: b.dmRooms[c.roomID]}, nil
	}
	if c.retired {
		if !initial && sent.membership == c.membership {
			return nil, nil
		}
		return b.retiredResult(ctx, c, rec, initial)
	}

	from := int64(0)
	expanded := false
	cfgChanged := false
	if !initial {
		from = sent.toPos
		if cfg.limit > sent.limit {
			from, expanded = 0, true
		}
		cfgChanged = rec.stateKey != sent.stateKey
		rec.lazySent = sent.lazySent
	}
	if !initial && !expanded && !cfgChanged && c.upTo <= sent.toPos && sent.membership == c.membership {
		return countsOnly() // nothing new (kept as sent)
	}
	if !initial && !expanded && !cfgChanged && sent.membership == c.membership && c.hasLatest && c.recency <= sent.toPos {
		// No event since the room was last sent (its latest, read for the
		// sort, is older): nothing to read. A continuing connection over
		// 1,000 rooms otherwise reads every room's recent events per answer.
		rec.limit = max(rec.limit, sent.limit)
		b.next.rooms[c.roomID] = rec
		return countsOnly()
	}
	var state, wider storage.StateMap
	if cfgChanged {
		var err error
		if state, err = b.h.store.StateAtPosition(ctx, c.roomID, c.statePos); err != nil {
			return nil, err
		}
		wider = b.newlyWanted(state, sent.cfg, cfg)
	}
	bump, err := b.bumpStamp(ctx, c)
	if err != nil {
		return nil, err
	}
	viewer := b.h.syncer.Viewer(b.userID, b.deviceID, c.roomID, c.mem)
	fetch := max(cfg.limit, 1) // one event at least, to see whether there is anything new
	evs, limited, err := b.h.store.RoomEventsRange(ctx, c.roomID, from, c.upTo, fetch)
	if err != nil {
		return nil, err
	}
	// A gap in the room's history: the timeline starts at it, limited (as /sync's).
	evs, gap := syncv2.CutAtGap(evs)
	limited = limited || gap != nil
	if evs, err = viewer.Visible(ctx, evs); err != nil {
		return nil, err
	}
	allNew := !limited // evs are every event in (from, upTo]
	if len(evs) > cfg.limit {
		evs, limited = evs[len(evs)-cfg.limit:], true
	}
	// An expanded timeline repeats events the client has, before the new
	// ones: flagged limited, as a batch to merge into what it holds rather
	// than to append (matrix-js-sdk de-duplicates and inserts the older
	// events as history only for limited or initial rooms; otherwise it
	// appends them after the latest event, out of order).
	limited = limited || (expanded && len(evs) > 0)
	if !initial && !limited {
		// The client has every event since it was last sent the room, so
		// still the latest sent.limit before them: a config that shrank and
		// grows again need not resend those.
		rec.limit = max(rec.limit, sent.limit)
	}
	if !initial && len(evs) == 0 && len(wider) == 0 && sent.membership == c.membership {
		b.next.rooms[c.roomID] = rec // nothing new; a config that only shrank changes nothing the client has
		return countsOnly()
	}
	res := &roomResult{Initial: initial, ExpandedTimeline: expanded && !initial, Membership: c.membership, BumpStamp: bump,
		Limited: limited, IsDM: b.dmRooms[c.roomID]}
	if res.Timeline, err = viewer.Render(ctx, evs); err != nil {
		return nil, err
	}
	if len(evs) > 0 {
		res.PrevBatch = viewer.PrevBatch(evs[0].StreamPos)
		if gap != nil {
			res.PrevBatch = viewer.GapPrevBatch(evs[0])
		}
	}
	live := 0
	for _, e := range evs {
		if b.prevExists && e.StreamPos > b.prev.tok.Pos {
			live++
		}
	}
	res.NumLive = &live

	// Which state to send: all that is wanted for a new room; else what
	// changed since the room was last sent, and what a widened config newly
	// wants.
	if state == nil {
		if state, err = b.h.store.StateAtPosition(ctx, c.roomID, c.statePos); err != nil {
			return nil, err
		}
	}
	changed := state
	if !initial {
		hasState := false
		for _, e := range evs {
			hasState = hasState || e.StateKey != nil
		}
		if allNew && !hasState {
			changed = nil
		} else {
			before, err := b.h.store.StateAtPosition(ctx, c.roomID, sent.toPos)
			if err != nil {
				return nil, err
			}
			changed = storage.StateMap{}
			for k, ev := range state {
				if before[k] != ev {
					changed[k] = ev
				}
			}
		}
	}
	var ids []string
	for k, ev := range changed {
		if cfg.wants(k.Type, k.StateKey, b.userID) {
			ids = append(ids, ev)
		}
	}
	for _, ev := range wider {
		ids = append(ids, ev)
	}
	// Lazy members: the timeline's senders and member event targets, once.
	if cfg.lazy() {
		lazy := map[string]bool{}
		if !initial && !limited {
			for k := range changed { // membership changes of a gapless sync
				if k.Type == "m.room.member" {
					lazy[k.StateKey] = true
				}
			}
		}
		for _, e := range evs {
			lazy[e.Sender] = true
			if e.Type == "m.room.member" && e.StateKey != nil {
				lazy[*e.StateKey] = true
			}
		}
		known := rec.lazySent
		if initial || limited {
			known = nil // the client drops its member cache on a gap
		}
		var add []string
		for u := range lazy {
			ev, ok := state[storage.StateKey{Type: "m.room.member", StateKey: u}]
			if !ok || (known.has(u) && changed[storage.StateKey{Type: "m.room.member", StateKey: u}] == "") {
				continue
			}
			if !cfg.wants("m.room.member", u, b.userID) {
				ids = append(ids, ev)
			}
			add = append(add, u)
		}
		rec.lazySent = known
		if len(add) > 0 {
			rec.lazySent = known.with(add)
		}
	}
	stateEvs, err := b.h.store.EventsInStreamOrder(ctx, dedupe(ids))
	if err != nil {
		return nil, err
	}
	if res.RequiredState, err = viewer.Render(ctx, stateEvs); err != nil {
		return nil, err
	}

	// Name, avatar, heroes and counts when new or changed.
	memberChange := initial || limited
	for k := range changed {
		memberChange = memberChange || k.Type == "m.room.member"
	}
	if err := b.nameAndAvatar(ctx, res, state, changed, initial); err != nil {
		return nil, err
	}
	if memberChange {
		joined, invited, err := b.h.store.RoomMembersSummaryAt(ctx, c.roomID, c.statePos)
		if err != nil {
			return nil, err
		}
		nj, ni := len(joined), len(invited)
		res.JoinedCount, res.InvitedCount = &nj, &ni
		if _, named := state[storage.StateKey{Type: "m.room.name", StateKey: ""}]; !named {
			if res.Heroes, err = b.heroes(ctx, state, append(joined, invited...)); err != nil {
				return nil, err
			}
		}
	}
	if c.membership == "join" {
		counts, _, err := b.h.push.UnreadCounts(ctx, b.userID, c.roomID, b.to.Pos, b.ruleset, b.rulesPos, false, nil, 0)
		if err != nil {
			return nil, err
		}
		res.NotificationCount, res.HighlightCount = &counts.Notifications, &counts.Highlights
	}
	b.next.rooms[c.roomID] = rec
	return res, nil
}

// newlyWanted is the part of state that the room's new config wants and
// its previous one did not (MSC4186 "Changes to required_state"): what a
// widened config sends at once. Lazy members follow the timeline instead.
func (b *builder) newlyWanted(state storage.StateMap, old, cfg *combined) storage.StateMap {
	out := storage.StateMap{}
	for k, ev := range state {
		if cfg.wants(k.Type, k.StateKey, b.userID) && (old == nil || !old.wants(k.Type, k.StateKey, b.userID)) {
			out[k] = ev
		}
	}
	return out
}

// retiredResult is a room the user never joined whose invite or knock ended:
// they never saw more than stripped state, so they get their own membership
// event only (no required_state, counts or heroes).
func (b *builder) retiredResult(ctx context.Context, c *candidate, rec roomSent, initial bool) (*roomResult, error) {
	evs, err := b.h.store.EventsInStreamOrder(ctx, []string{c.mem.At().EventID})
	if err != nil {
		return nil, err
	}
	viewer := b.h.syncer.Viewer(b.userID, b.deviceID, c.roomID, c.mem)
	res := &roomResult{Initial: initial, Membership: c.membership, BumpStamp: c.bump, IsDM: b.dmRooms[c.roomID]}
	if res.Timeline, err = viewer.Render(ctx, evs); err != nil {
		return nil, err
	}
	live := 0
	if b.prevExists && c.upTo > b.prev.tok.Pos {
		live = len(res.Timeline)
	}
	res.NumLive = &live
	b.next.rooms[c.roomID] = rec
	return res, nil
}

// nameAndAvatar sets name and avatar when sending everything or when they changed.
func (b *builder) nameAndAvatar(ctx context.Context, res *roomResult, state, changed storage.StateMap, all bool) error {
	for _, f := range []struct {
		typ, field string
		into       **json.RawMessage
	}{{"m.room.name", "name", &res.Name}, {"m.room.avatar", "url", &res.Avatar}} {
		k := storage.StateKey{Type: f.typ, StateKey: ""}
		if _, ch := changed[k]; !all && !ch {
			continue
		}
		ev, ok := state[k]
		if !ok {
			continue // never set: omitted
		}
		evs, err := b.h.store.EventsInStreamOrder(ctx, []string{ev})
		if err != nil {
			return err
		}
		v := json.RawMessage("null")
		if len(evs) == 1 {
			if s := gjson.GetBytes(evs[0].JSON, "content."+f.field); s.Type == gjson.String && s.String() != "" {
				v, _ = json.Marshal(s.String())
			}
		}
		if string(v) == "null" && all {
			continue
		}
		*f.into = &v
	}
	return nil
}

// heroes are up to five other members, with their display names and avatars.
func (b *builder) heroes(ctx context.Context, state storage.StateMap, members []string) ([]hero, error) {
	var ids []string
	var users []string
	for _, u := range members {
		if u == b.userID {
			continue
		}
		if ev, ok := state[storage.StateKey{Type: "m.room.member", StateKey: u}]; ok {
			ids, users = append(ids, ev), append(users, u)
		}
		if len(users) == 5 {
			break
		}
	}
	evs, err := b.h.store.EventsInStreamOrder(ctx, ids)
	if err != nil {
		return nil, err
	}
	byUser := map[string]*storage.Event{}
	for _, e := range evs {
		if e.StateKey != nil {
			byUser[*e.StateKey] = e
		}
	}
	out := make([]hero, 0, len(users))
	for _, u := range users {
		h := hero{UserID: u}
		if e, ok := byUser[u]; ok {
			h.DisplayName = gjson.GetBytes(e.JSON, "content.displayname").String()
			h.AvatarURL = gjson.GetBytes(e.JSON, "content.avatar_url").String()
		}
		out = append(out, h)
	}
	return out, nil
}

func dedupe(ids []string) []string {
	seen := map[string]bool{}
	out := ids[:0:0]
	for _, id := range ids {
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	return out
}
