package push

import (
	"context"
	"encoding/json"

	"maunium.net/go/mautrix/event"
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
// instead of four or more queries per room; the push context (member count,
// power levels, own display name) of the rooms with events to count in three,
// when one of them needs it.
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
	// The push context of the rooms with events to count, read for all of
	// them the first time one needs it.
	var pending []string
	for r := range from {
		if len(recent[r]) > 0 {
			pending = append(pending, r)
		}
	}
	var contexts map[string]*pushRoom
	roomContext := func(r string) (*pushRoom, error) {
		if contexts == nil {
			var err error
			if contexts, err = s.pushRooms(ctx, pending, userID); err != nil {
				return nil, err
			}
		}
		if pr := contexts[r]; pr != nil {
			return pr, nil
		}
		return s.pushRoom(ctx, r, userID)
	}
	out := make(map[string]RoomCounts, len(entries))
	for r, e := range entries {
		if e.upTo < upTo {
			c := unreadCounter{parse: clientevent.PushEvent, room: func() (*pushRoom, error) { return roomContext(r) }}
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

// pushRooms is pushRoom(room, userID) for many rooms, in three statements
// (per 500 rooms).
func (s *Service) pushRooms(ctx context.Context, roomIDs []string, userID string) (map[string]*pushRoom, error) {
	counts, err := s.rooms.JoinedMemberCounts(ctx, roomIDs)
	if err != nil {
		return nil, err
	}
	members, err := s.rooms.CurrentStateEventsInRooms(ctx, roomIDs, "m.room.member", userID)
	if err != nil {
		return nil, err
	}
	powers, err := s.rooms.CurrentStateEventsInRooms(ctx, roomIDs, "m.room.power_levels", "")
	if err != nil {
		return nil, err
	}
	out := make(map[string]*pushRoom, len(roomIDs))
	for _, r := range roomIDs {
		pr := &pushRoom{members: counts[r]}
		if ev := members[r]; ev != nil {
			var pdu struct {
				Content struct {
					DisplayName string `json:"displayname"`
				} `json:"content"`
			}
			_ = json.Unmarshal(ev.JSON, &pdu)
			pr.displayName = pdu.Content.DisplayName
		}
		if ev := powers[r]; ev != nil {
			var pdu struct {
				Content event.PowerLevelsEventContent `json:"content"`
			}
			if json.Unmarshal(ev.JSON, &pdu) == nil {
				pr.power = &pdu.Content
			}
		}
		out[r] = pr
	}
	return out, nil
}
