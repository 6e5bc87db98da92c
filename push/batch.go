package push

import (
	"context"
	"encoding/json"
	"errors"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/pushrules"

	"github.com/myelin-chat/myelin/clientevent"
	"github.com/myelin-chat/myelin/storage"
)

// Push delivery computes the same unread counts as /sync (UnreadCounts, the
// same cache), but for all the recipients of an event at once: what /sync
// reads per user — the rooms, receipts, membership history, display name, the
// room's members and power levels, the room's events since the counts — is
// read here in one statement per room (per 500 users) for all of them, and
// each event is decoded once.

// userRules are a user's push rules and their stream position.
type userRules struct {
	ruleset *pushrules.PushRuleset
	pos     int64
}

// roomContext is the push context of the room's users as of now
// (pushRoom's, read once for many users).
type roomContext struct {
	members int
	power   *event.PowerLevelsEventContent
	names   map[string]string // user → own display name
}

// loadRoomContext reads the room's context, with the display names of users;
// members is the room's joined member count when the caller has it (-1: read it).
func (s *Service) loadRoomContext(ctx context.Context, roomID string, users []string, members int) (*roomContext, error) {
	if members < 0 {
		joined, err := s.rooms.JoinedMembers(ctx, roomID)
		if err != nil {
			return nil, err
		}
		members = len(joined)
	}
	rc := &roomContext{members: members}
	var err error
	if ev, err := s.rooms.CurrentStateEvent(ctx, roomID, "m.room.power_levels", ""); err == nil {
		var pdu struct {
			Content event.PowerLevelsEventContent `json:"content"`
		}
		if json.Unmarshal(ev.JSON, &pdu) == nil {
			rc.power = &pdu.Content
		}
	} else if !errors.Is(err, storage.ErrNotFound) {
		return nil, err
	}
	if rc.names, err = s.queueStore.MemberDisplayNames(ctx, roomID, users); err != nil {
		return nil, err
	}
	return rc, nil
}

func (rc *roomContext) pushRoom(userID string) *pushRoom {
	return &pushRoom{members: rc.members, displayName: rc.names[userID], power: rc.power}
}

// unreadTotals are the users' unread notification counts over their joined
// rooms up to upTo (their badges), as totals of UnreadCounts would give.
// roomID's context is rc (nil: read when needed); recent, when not nil, are
// all of roomID's events in (recentFrom, upTo].
func (s *Service) unreadTotals(ctx context.Context, users []string, rules map[string]userRules, upTo int64,
	roomID string, rc *roomContext, recent []*storage.Event, recentFrom int64) (map[string]int, error) {
	totals := make(map[string]int, len(users))
	if len(users) == 0 {
		return totals, nil
	}
	roomsOf, err := s.queueStore.JoinedRoomsOfUsers(ctx, users)
	if err != nil {
		return nil, err
	}
	misses := map[string][]string{} // room → users whose counts there are not cached up to upTo
	var order []string
	for _, u := range users {
		for _, r := range roomsOf[u] {
			if c, ok := s.cachedUnread(u, r, rules[u].pos, upTo); ok {
				totals[u] += c.Notifications
				continue
			}
			if misses[r] == nil {
				order = append(order, r)
			}
			misses[r] = append(misses[r], u)
		}
	}
	for _, r := range order {
		var rec []*storage.Event
		var rrc *roomContext
		if r == roomID {
			rec, rrc = recent, rc
		}
		counts, err := s.roomUnread(ctx, r, misses[r], rules, upTo, rrc, rec, recentFrom)
		if err != nil {
			return nil, err
		}
		for u, c := range counts {
			totals[u] += c.Notifications
		}
	}
	return totals, nil
}

// roomUnread is UnreadCounts (unthreaded) of users in roomID up to upTo,
// with the reads shared: the receipts and membership histories of the users
// not cached, in one statement each; the room's events in one, from the
// oldest position any user's counts need (RoomEventsRange keeps the last
// maxUnreadScan events of a range, so each user's share of them is what
// their own read would have given).
func (s *Service) roomUnread(ctx context.Context, roomID string, users []string, rules map[string]userRules, upTo int64,
	rc *roomContext, recent []*storage.Event, recentFrom int64) (map[string]Counts, error) {
	entries := make([]unreadEntry, len(users))
	var cold []string
	for i, u := range users {
		e, ok := s.cachedEntry(unreadKey(u, roomID, false), rules[u].pos, false, upTo)
		if !ok {
			cold = append(cold, u)
			continue
		}
		entries[i] = e
	}
	if len(cold) > 0 {
		receipts, err := s.queueStore.ReceiptPositions(ctx, roomID, cold)
		if err != nil {
			return nil, err
		}
		rps := map[string]*readPositions{}
		for _, r := range receipts {
			if !isReadReceipt(r.Type) {
				continue
			}
			rp := rps[r.UserID]
			if rp == nil {
				rp = &readPositions{threads: map[string]int64{}}
				rps[r.UserID] = rp
			}
			rp.add(r.ThreadID, r.EventPos)
		}
		hists, err := s.queueStore.MembershipHistories(ctx, roomID, cold)
		if err != nil {
			return nil, err
		}
		isCold := make(map[string]bool, len(cold))
		for _, u := range cold {
			isCold[u] = true
		}
		for i, u := range users {
			if !isCold[u] {
				continue
			}
			rp := readPositions{threads: map[string]int64{}}
			if p := rps[u]; p != nil {
				rp = *p
			}
			entries[i] = newUnreadEntry(rules[u].pos, false, rp, membershipViewOf(hists[u]), upTo)
		}
	}
	useRecent := func(e *unreadEntry) bool { return recent != nil && recentFrom <= e.upTo }
	scanFrom, scan := upTo, false
	for i := range entries {
		if e := &entries[i]; e.upTo < upTo && !useRecent(e) {
			scanFrom, scan = min(scanFrom, e.upTo), true
		}
	}
	var scanned []*storage.Event
	if scan {
		var err error
		if scanned, _, err = s.rooms.RoomEventsRange(ctx, roomID, scanFrom, upTo, maxUnreadScan); err != nil {
			return nil, err
		}
	}
	parsed := map[*storage.Event]*event.Event{}
	parse := func(ev *storage.Event) *event.Event {
		p, ok := parsed[ev]
		if !ok {
			p = clientevent.PushEvent(ev)
			parsed[ev] = p
		}
		return p
	}
	out := make(map[string]Counts, len(users))
	for i, u := range users {
		e := &entries[i]
		if e.upTo < upTo {
			src := scanned
			if useRecent(e) {
				src = recent
			}
			c := unreadCounter{parse: parse, room: func() (*pushRoom, error) {
				if rc == nil {
					var err error
					if rc, err = s.loadRoomContext(ctx, roomID, users, -1); err != nil {
						return nil, err
					}
				}
				return rc.pushRoom(u), nil
			}}
			if err := s.countEvents(ctx, u, roomID, e, eventsAfter(src, e.upTo), upTo, rules[u].ruleset, c); err != nil {
				return nil, err
			}
		}
		s.storeUnread(unreadKey(u, roomID, false), *e)
		out[u] = e.main
	}
	return out, nil
}
