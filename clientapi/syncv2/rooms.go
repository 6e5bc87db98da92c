package syncv2

import (
	"context"
	"encoding/json"

	"maunium.net/go/mautrix/pushrules"

	"github.com/myelin-chat/myelin/clientevent"
	"github.com/myelin-chat/myelin/ephemeral"
	"github.com/myelin-chat/myelin/storage"
)

// timeline reads the room's timeline in (from, to] through the filter: the
// last `limit` matching events, whether older ones were left out, and the
// prev_batch token that continues from before the first of them.
//
// complete reports whether the returned events are all of the room's events
// in (from, to] (no filter dropped any, none left out).
//
// Events the user may not see (history visibility) are left out.
func (s *Syncer) timeline(ctx context.Context, req *Request, v *roomViewer, from, to int64) (evs []*storage.Event, tl *Timeline, complete bool, err error) {
	roomID := v.roomID
	part := req.Filter.room().Timeline
	limit := req.Filter.TimelineLimit()
	if limit == 0 {
		return s.emptyTimeline(ctx, roomID, from, to)
	}
	filtering := restrictive(part) || len(req.ignored) > 0
	fetch := limit
	if filtering {
		fetch = max(limit*10, 200) // filtered events do not count towards the limit
	}
	evs, limited, err := s.store.RoomEventsRange(ctx, roomID, from, to, fetch)
	if err != nil {
		return nil, nil, false, err
	}
	// A gap in the room's history (storage.Event.AfterGap) within the range:
	// the timeline starts at the latest one, limited, whatever the filter
	// keeps of it, so the client pages back into the gap from prev_batch.
	gap := lastGap(evs)
	if gap != nil {
		evs, limited = cutAtGap(evs, gap), true
	}
	complete = !limited && !filtering
	if filtering {
		kept := evs[:0:0]
		for _, e := range evs {
			if allowsEvent(part, e) && !(e.StateKey == nil && req.ignored[e.Sender]) {
				kept = append(kept, e)
			}
		}
		if len(kept) > limit {
			kept, limited = kept[len(kept)-limit:], true
		}
		evs = kept
	}
	evs, dropped, err := s.visible(ctx, v, evs)
	if err != nil {
		return nil, nil, false, err
	}
	complete = complete && !dropped
	v.hidTail = filtering || dropped
	if len(evs) == 0 {
		return nil, nil, complete, nil
	}
	tl = &Timeline{Limited: limited, PrevBatch: s.prevBatch(evs[0].StreamPos)}
	if gap != nil {
		tl.PrevBatch = s.gapPrevBatch(evs[0])
	}
	if tl.Events, err = s.render(ctx, req, v, evs); err != nil {
		return nil, nil, false, err
	}
	return evs, tl, complete, nil
}

// emptyTimeline is the timeline of a filter with limit 0: no events,
// limited when the room has any in (from, to], and a prev_batch from the end.
func (s *Syncer) emptyTimeline(ctx context.Context, roomID string, from, to int64) ([]*storage.Event, *Timeline, bool, error) {
	_, limited, err := s.store.RoomEventsRange(ctx, roomID, from, to, 0)
	if err != nil {
		return nil, nil, false, err
	}
	return nil, &Timeline{Events: []json.RawMessage{}, Limited: limited, PrevBatch: s.prevBatch(to + 1)}, !limited, nil
}

// state is the state section: the state at the start of the timeline (all of
// it when full, otherwise what changed since `since`), minus events already in
// the timeline, with lazy-loaded members reduced to the timeline's senders.
// With use_state_after it is the state at the end of the timeline (end)
// instead, timeline events included.
func (s *Syncer) state(ctx context.Context, req *Request, v *roomViewer, evs []*storage.Event, since, end int64, full, limited bool) (*Events, error) {
	roomID := v.roomID
	lazy := req.Filter.LazyLoadMembers()
	delta := limited || (req.UseStateAfter && len(evs) > 0)
	senders := map[string]bool{req.UserID: true}
	for _, e := range evs {
		senders[e.Sender] = true
	}
	// Members this device already has (lazy loading without redundant members).
	var known map[string]bool
	if lazy && !req.Filter.IncludeRedundantMembers() {
		known = s.lazy.known(req.DeviceKey(), roomID, full)
	}
	needMembers := false
	for u := range senders {
		needMembers = needMembers || !known[u]
	}
	if !full && !delta && (!lazy || !needMembers) {
		return nil, nil // the timeline alone carries every state change
	}
	var start storage.StateMap
	var err error
	if len(evs) > 0 && !req.UseStateAfter {
		start, err = s.store.StateBeforeEvent(ctx, evs[0].EventID)
	} else {
		start, err = s.store.StateAtPosition(ctx, roomID, end)
	}
	if err != nil {
		return nil, err
	}
	want := storage.StateMap{}
	switch {
	case full:
		want = start
	case delta:
		prev, err := s.store.StateAtPosition(ctx, roomID, since)
		if err != nil {
			return nil, err
		}
		for k, ev := range start {
			if prev[k] != ev {
				want[k] = ev
			}
		}
	}
	inTimeline := map[string]bool{}
	for _, e := range evs {
		inTimeline[e.EventID] = true
	}
	var endIDs []string
	if full && len(evs) > 0 && !req.UseStateAfter && !v.left && v.hidTail {
		// Only when the filter (or history visibility) hid events after the
		// timeline's last one — an unfiltered timeline ends at the range's
		// end, and asking costs every room of an initial sync a query — and
		// not for a left room, whose timeline ends at the leave (Complement
		// TestArchivedRoomsHistory: a state filter's events shown in the
		// timeline are not repeated in the state).
		_, tail, err := s.store.RoomEventsRange(ctx, roomID, evs[len(evs)-1].StreamPos, end, 0)
		if err != nil {
			return nil, err
		}
		if tail {
			if endIDs, err = s.endState(ctx, roomID, end, start, lazy, senders); err != nil {
				return nil, err
			}
		}
	}
	if lazy {
		lazyWant := storage.StateMap{}
		for k, ev := range want {
			if k.Type != "m.room.member" || senders[k.StateKey] {
				lazyWant[k] = ev
			}
		}
		// The senders' member events the device may not have yet.
		for u := range senders {
			k := storage.StateKey{Type: "m.room.member", StateKey: u}
			if ev, ok := start[k]; ok && !known[u] {
				lazyWant[k] = ev
			}
		}
		want = lazyWant
		if known != nil {
			s.lazy.remember(req.DeviceKey(), roomID, senders)
		}
	}
	ids := make([]string, 0, len(want)+len(endIDs))
	for _, ev := range want {
		if !inTimeline[ev] || req.UseStateAfter {
			ids = append(ids, ev)
		}
	}
	ids = append(ids, endIDs...)
	if len(ids) == 0 {
		return nil, nil
	}
	stateEvs, err := s.store.EventsInStreamOrder(ctx, ids)
	if err != nil {
		return nil, err
	}
	part := req.Filter.room().State
	kept := stateEvs[:0]
	for _, e := range stateEvs {
		if allowsEvent(part, e) {
			kept = append(kept, e)
		}
	}
	out, err := s.render(ctx, req, v, kept)
	if err != nil {
		return nil, err
	}
	if p := part; p != nil && p.Limit > 0 && len(out) > p.Limit {
		out = out[len(out)-p.Limit:]
	}
	return eventsOrNil(out), nil
}

func (s *Syncer) joinedRoom(ctx context.Context, req *Request, v *roomViewer, since, to Token, newly bool, receipts []storage.Receipt, ruleset *pushrules.PushRuleset, rulesPos int64) (*JoinedRoom, error) {
	roomID := v.roomID
	jr := &JoinedRoom{}
	from := since.Pos
	if newly {
		from = 0
	}
	evs, tl, complete, err := s.timeline(ctx, req, v, from, to.Pos)
	if err != nil {
		return nil, err
	}
	jr.Timeline = tl
	if newly || len(evs) > 0 {
		st, err := s.state(ctx, req, v, evs, since.Pos, to.Pos, newly, tl != nil && tl.Limited)
		if err != nil {
			return nil, err
		}
		jr.State = st
	}
	if req.UseStateAfter {
		jr.StateAfter, jr.State = jr.State, nil
		if jr.StateAfter == nil {
			jr.StateAfter = &Events{Events: []json.RawMessage{}}
		}
	}
	// Ephemeral: typing and receipts.
	var eph []json.RawMessage
	typingSince := since.Typing
	if newly {
		typingSince = 0
	}
	if users, changed := s.ephemeral.TypingSince(roomID, typingSince); changed && allows(req.Filter.room().Ephemeral, "m.typing", "", roomID, nil) {
		if users == nil {
			users = []string{}
		}
		ev, _ := json.Marshal(map[string]any{"type": "m.typing", "content": map[string]any{"user_ids": users}})
		eph = append(eph, ev)
	}
	if ev := receiptEvent(req.UserID, receipts); ev != nil && allows(req.Filter.room().Ephemeral, "m.receipt", "", roomID, nil) {
		eph = append(eph, ev)
	}
	jr.Ephemeral = eventsOrNil(eph)

	// Summary when members may have changed.
	memberChange := newly
	for _, e := range evs {
		memberChange = memberChange || e.Type == "m.room.member"
	}
	if memberChange {
		// At the end of the synced range, like the timeline and state.
		joined, invited, err := s.store.RoomMembersSummaryAt(ctx, roomID, to.Pos)
		if err != nil {
			return nil, err
		}
		nj, ni := len(joined), len(invited)
		sum := &Summary{Joined: &nj, Invited: &ni}
		for _, u := range append(joined, invited...) {
			if u != req.UserID && len(sum.Heroes) < 5 {
				sum.Heroes = append(sum.Heroes, u)
			}
		}
		jr.Summary = sum
	}
	main, threads, err := s.push.UnreadCounts(ctx, req.UserID, roomID, to.Pos, ruleset, rulesPos, req.Filter.ThreadNotifications(), recentOrNil(evs, complete), from)
	if err != nil {
		return nil, err
	}
	jr.Unread = &main
	if len(threads) > 0 {
		jr.UnreadThr = threads
	}
	return jr, nil
}

// receiptEvent renders receipts as one m.receipt event; others' private
// receipts are never shown. The format keys a receipt by event, type and
// user, so of a user's threaded and unthreaded receipts on the same event
// only the unthreaded one is shown (MSC4102: clients then know the whole
// room is read up to it).
func receiptEvent(userID string, receipts []storage.Receipt) json.RawMessage {
	content := map[string]map[string]map[string]map[string]any{}
	n := 0
	for _, r := range receipts {
		if r.Type == ephemeral.ReceiptReadPrivate && r.UserID != userID {
			continue
		}
		byType := content[r.EventID]
		if byType == nil {
			byType = map[string]map[string]map[string]any{}
			content[r.EventID] = byType
		}
		byUser := byType[r.Type]
		if byUser == nil {
			byUser = map[string]map[string]any{}
			byType[r.Type] = byUser
		}
		if prev, ok := byUser[r.UserID]; ok && prev["thread_id"] == nil && r.ThreadID != "" {
			continue // a user's unthreaded and threaded receipts on one event: the unthreaded wins (MSC4102)
		}
		info := map[string]any{"ts": r.TS}
		if r.ThreadID != "" {
			info["thread_id"] = r.ThreadID
		}
		byUser[r.UserID] = info
		n++
	}
	if n == 0 {
		return nil
	}
	ev, _ := json.Marshal(map[string]any{"type": "m.receipt", "content": content})
	return ev
}

// leftRoom is a room the user left or was kicked or banned from: the
// timeline up to and including their leave event, and the state before it.
// joinEnd is where their latest join ended: the state never goes past it
// (a later invite they rejected showed them only stripped state). full is
// set when the client has none of the room yet (an initial or full-state
// sync, or a room joined and left since the token): the whole state, the
// timeline from the start; otherwise, as for a joined room, what changed
// since the token that the timeline does not carry.
func (s *Syncer) leftRoom(ctx context.Context, req *Request, v *roomViewer, since Token, leave storage.UserMembershipChange, joinEnd int64, full bool) (*LeftRoom, error) {
	lr := &LeftRoom{}
	from := since.Pos
	if full {
		from = 0
	}
	evs, tl, _, err := s.timeline(ctx, req, v, from, leave.StreamPos)
	if err != nil {
		return nil, err
	}
	lr.Timeline = tl
	v.left = true
	if lr.State, err = s.state(ctx, req, v, evs, since.Pos, joinEnd, full, tl != nil && tl.Limited); err != nil {
		return nil, err
	}
	if req.UseStateAfter {
		lr.StateAfter, lr.State = lr.State, nil
		if lr.StateAfter == nil {
			lr.StateAfter = &Events{Events: []json.RawMessage{}}
		}
	}
	return lr, nil
}

// retiredRoom is a room the user never joined whose invite or knock ended
// (rejected, withdrawn, refused, or banned): they never saw more than
// stripped state, so they get only their own membership event, no state.
func (s *Syncer) retiredRoom(ctx context.Context, req *Request, v *roomViewer, leave storage.UserMembershipChange) (*LeftRoom, error) {
	evs, err := s.store.EventsInStreamOrder(ctx, []string{leave.EventID})
	if err != nil {
		return nil, err
	}
	kept := evs[:0]
	for _, e := range evs {
		if allowsEvent(req.Filter.room().Timeline, e) {
			kept = append(kept, e)
		}
	}
	out, err := s.render(ctx, req, v, kept)
	if err != nil {
		return nil, err
	}
	lr := &LeftRoom{Timeline: &Timeline{Events: out}}
	if len(out) == 0 {
		lr.Timeline = nil
	}
	if req.UseStateAfter {
		lr.StateAfter = &Events{Events: []json.RawMessage{}}
	}
	return lr, nil
}

// strippedTypes are the state events an invitee or knocker sees (the spec's
// recommended stripped state).
var strippedTypes = []string{"m.room.create", "m.room.join_rules", "m.room.name", "m.room.avatar",
	"m.room.canonical_alias", "m.room.encryption", "m.room.topic"}

// strippedState is the stripped state shown with an invite or knock: what
// the membership event carries in unsigned (invite_room_state /
// knock_room_state, as sent over federation), else taken from the room state
// at the event, plus the membership event itself.
func (s *Syncer) strippedState(ctx context.Context, roomID string, m storage.UserMembershipChange) ([]json.RawMessage, error) {
	evs, err := s.store.EventsInStreamOrder(ctx, []string{m.EventID})
	if err != nil {
		return nil, err
	}
	var out []json.RawMessage
	if len(evs) == 1 {
		var pdu struct {
			Unsigned map[string][]json.RawMessage `json:"unsigned"`
		}
		_ = json.Unmarshal([]byte(evs[0].JSON), &pdu)
		out = append(out, pdu.Unsigned["invite_room_state"]...)
		out = append(out, pdu.Unsigned["knock_room_state"]...)
	}
	if len(out) == 0 {
		state, err := s.store.StateAtPosition(ctx, roomID, m.StreamPos)
		if err != nil {
			return nil, err
		}
		var ids []string
		for _, t := range strippedTypes {
			if ev, ok := state[storage.StateKey{Type: t, StateKey: ""}]; ok && ev != m.EventID {
				ids = append(ids, ev)
			}
		}
		stateEvs, err := s.store.EventsInStreamOrder(ctx, ids)
		if err != nil {
			return nil, err
		}
		for _, e := range stateEvs {
			out = append(out, clientevent.Stripped(e))
		}
	}
	if len(evs) == 1 {
		out = append(out, clientevent.Stripped(evs[0]))
	}
	return out, nil
}

// recentOrNil passes a complete event range on (non-nil even when empty).
func recentOrNil(evs []*storage.Event, complete bool) []*storage.Event {
	if !complete {
		return nil
	}
	if evs == nil {
		return []*storage.Event{}
	}
	return evs
}

// endState is what a full state section adds to the state at the start of
// the timeline when the filter hid events after its last one: the state at
// the end of the sync (end) where it differs,
// even events the timeline holds, as Synapse's initial sync does (the union
// of the state at both ends, both events of a slot kept, in stream order):
// when the timeline is limited or filtered and a state event from a fork of
// the DAG came after its last shown event, the current state is what the
// client must end with (Complement's TestSyncOmitsStateChangeOnFilteredEvents).
// With lazy loading, members only of the timeline's senders. A timeline that
// reaches the end carries every change itself (the client applies it to
// the start's state); Complement's TestKnocking, whose timeline is limited
// but reaches the end, reads the first knock of two, so the end's is not
// added there.
func (s *Syncer) endState(ctx context.Context, roomID string, end int64, start storage.StateMap, lazy bool, senders map[string]bool) ([]string, error) {
	endState, err := s.store.StateAtPosition(ctx, roomID, end)
	if err != nil {
		return nil, err
	}
	var out []string
	for k, ev := range endState {
		if start[k] == ev || (lazy && k.Type == "m.room.member" && !senders[k.StateKey]) {
			continue
		}
		out = append(out, ev)
	}
	return out, nil
}
