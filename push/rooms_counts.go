package push

import (
	"context"

	"maunium.net/go/mautrix/pushrules"

	"github.com/myelin-chat/myelin/clientevent"
	"github.com/myelin-chat/myelin/storage"
)

// RoomCounts are a room's unread counts as UnreadCounts gives them: the main
// counts and, when threaded, the threads' non-zero ones.
type RoomCounts struct {
	Main    Counts
	Threads map[string]Counts
}

// UnreadCountsInRooms is UnreadCounts(userID, room, upTo, rules, rulesPos,
// threaded, nil, 0) for each of roomIDs, with the same cache and the same
// values, but the reads the rooms not cached up to upTo need done for all of
// them at once: the user's read receipts (with their events' positions) and
// membership histories of the rooms not cached at all in one statement each,
// and each room's events since its counts (the same last maxUnreadScan
// events a room's own read gives) in one (per 500 rooms). A first sliding
// sync or initial /sync of a user in 1,000 rooms reads a few statements
// instead of four or more queries per room. The push context (member count,
// power levels, own display name) is still read per room, and only for a
// room with an event that may notify the user.
func (s *Service) UnreadCountsInRooms(ctx context.Context, userID string, roomIDs []string, upTo int64,
	rules *pushrules.PushRuleset, rulesPos int64, threaded bool) (map[string]RoomCounts, error) {
	entries := make(map[string]*unreadEntry, len(roomIDs))
	var cold []string
	for _, r := range roomIDs {
		if _, seen := entries[r]; seen {
			continue
		}
		if e, ok := s.cachedEntry(unreadKey(userID, r, threaded), rulesPos, threaded, upTo); ok {
			entries[r] = &e
			continue
		}
		entries[r] = nil
		cold = append(cold, r)
	}
	if len(cold) > 0 {
		receipts, err := s.rooms.UserReceiptPositions(ctx, userID, cold)
		if err != nil {
			return nil, err
		}
		rps := make(map[string]readPositions, len(cold))
		for _, r := range cold {
			rps[r] = readPositions{threads: map[string]int64{}}
		}
		for _, rc := range receipts {
			if !isReadReceipt(rc.Type) {
				continue
			}
			rp := rps[rc.RoomID]
			rp.add(rc.ThreadID, rc.EventPos)
			rps[rc.RoomID] = rp
		}
		hists, err := s.rooms.UserMembershipHistories(ctx, userID, cold)
		if err != nil {
			return nil, err
		}
		for _, r := range cold {
			e := newUnreadEntry(rulesPos, threaded, rps[r], membershipViewOf(hists[r]), upTo)
			entries[r] = &e
		}
	}
	from := map[string]int64{}
	for r, e := range entries {
		if e.upTo < upTo {
			from[r] = e.upTo
		}
	}
	var recent map[string][]*storage.Event
	if len(from) > 0 {
		var err error
		if recent, err = s.rooms.RoomsEventsRange(ctx, from, upTo, maxUnreadScan); err != nil {
			return nil, err
		}
	}
	out := make(map[string]RoomCounts, len(entries))
	for r, e := range entries {
		if e.upTo < upTo {
			c := unreadCounter{parse: clientevent.PushEvent, room: func() (*pushRoom, error) { return s.pushRoom(ctx, r, userID) }}
			if err := s.countEvents(ctx, userID, r, e, recent[r], upTo, rules, c); err != nil {
				return nil, err
			}
		}
		s.storeUnread(unreadKey(userID, r, threaded), *e)
		main, threads := e.counts()
		out[r] = RoomCounts{Main: main, Threads: threads}
	}
	return out, nil
}
