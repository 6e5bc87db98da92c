package syncapi

import (
	"context"
	"encoding/json"
	"errors"
	"sort"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/pushrules"

	"github.com/myelin-chat/myelin/storage"
)

// Unread counts are computed when read: the events after the user's read
// receipt are evaluated against the user's push rules. maxUnreadScan bounds
// the work per room; counts saturate there.
const maxUnreadScan = 500

// Counts are a room's (or thread's) unread notification and highlight counts.
type Counts struct {
	Notifications int `json:"notification_count"`
	Highlights    int `json:"highlight_count"`
}

// pushRoom is the room context push conditions ask about.
type pushRoom struct {
	members     int
	displayName string
	power       *event.PowerLevelsEventContent
}

func (r *pushRoom) GetOwnDisplayname() string                      { return r.displayName }
func (r *pushRoom) GetMemberCount() int                            { return r.members }
func (r *pushRoom) GetPowerLevels() *event.PowerLevelsEventContent { return r.power }

func (s *Service) pushRoom(ctx context.Context, roomID, userID string) (*pushRoom, error) {
	members, err := s.rooms.JoinedMembers(ctx, roomID)
	if err != nil {
		return nil, err
	}
	r := &pushRoom{members: len(members)}
	if js, err := s.rooms.CurrentStateJSON(ctx, roomID, "m.room.member", userID); err == nil {
		var pdu struct {
			Content struct {
				DisplayName string `json:"displayname"`
			} `json:"content"`
		}
		_ = json.Unmarshal([]byte(js), &pdu)
		r.displayName = pdu.Content.DisplayName
	} else if !errors.Is(err, storage.ErrNotFound) {
		return nil, err
	}
	if js, err := s.rooms.CurrentStateJSON(ctx, roomID, "m.room.power_levels", ""); err == nil {
		var pdu struct {
			Content event.PowerLevelsEventContent `json:"content"`
		}
		if json.Unmarshal([]byte(js), &pdu) == nil {
			r.power = &pdu.Content
		}
	} else if !errors.Is(err, storage.ErrNotFound) {
		return nil, err
	}
	return r, nil
}

// readPositions are the positions up to which the user has read a room:
// unthreaded receipts cover everything, threaded ones their thread ("main"
// is the main timeline).
type readPositions struct {
	all     int64
	threads map[string]int64
}

func (rp readPositions) read(thread string, pos int64) bool {
	return pos <= rp.all || pos <= rp.threads[thread]
}

func (s *Service) readPositions(ctx context.Context, roomID, userID string) (readPositions, error) {
	rp := readPositions{threads: map[string]int64{}}
	receipts, err := s.db.UserReceipts(ctx, roomID, userID)
	if err != nil {
		return rp, err
	}
	for _, r := range receipts {
		if r.Type != ReceiptRead && r.Type != ReceiptReadPrivate {
			continue
		}
		pos, err := s.rooms.EventPosition(ctx, roomID, r.EventID)
		if errors.Is(err, storage.ErrNotFound) {
			continue
		}
		if err != nil {
			return rp, err
		}
		if r.ThreadID == "" {
			rp.all = max(rp.all, pos)
		} else {
			rp.threads[r.ThreadID] = max(rp.threads[r.ThreadID], pos)
		}
	}
	return rp, nil
}

// threadOf is the thread root of an event in a thread, or "main".
func threadOf(ev *event.Event) string {
	if rel, ok := ev.Content.Raw["m.relates_to"].(map[string]any); ok {
		if rel["rel_type"] == "m.thread" {
			if root, ok := rel["event_id"].(string); ok && root != "" {
				return root
			}
		}
	}
	return "main"
}

// unreadEntry caches a user's counts in a room up to a position, so that each
// /sync only evaluates the events that arrived since the last one. It is
// dropped when the user's receipts or push rules change.
type unreadEntry struct {
	rulesPos int64
	threaded bool
	rp       readPositions
	upTo     int64
	main     Counts
	threads  map[string]Counts
	room     *pushRoom // push context; dropped when state events pass
}

// maxUnreadEntries bounds the cache; past it the cache starts over.
const maxUnreadEntries = 100_000

func unreadKey(userID, roomID string) string { return userID + "\x00" + roomID }

func (s *Service) forgetUnread(userID, roomID string) {
	s.unreadMu.Lock()
	delete(s.unread, unreadKey(userID, roomID))
	s.unreadMu.Unlock()
}

// UnreadCounts counts the room's unread notifications for userID up to
// position upTo. With threaded, events in threads are counted per thread
// root and left out of the main counts (unread_thread_notifications).
// rulesPos is the stream position of the user's push rules (a change
// invalidates cached counts).
//
// recent, when not nil, are all the room's events in (recentFrom, upTo], as
// the caller already read them: they spare a query.
func (s *Service) UnreadCounts(ctx context.Context, userID, roomID string, upTo int64, rules *pushrules.PushRuleset, rulesPos int64, threaded bool, recent []storage.SyncEvent, recentFrom int64) (Counts, map[string]Counts, error) {
	key := unreadKey(userID, roomID)
	s.unreadMu.Lock()
	cached := s.unread[key]
	s.unreadMu.Unlock()
	var e unreadEntry
	if cached != nil && cached.rulesPos == rulesPos && cached.threaded == threaded && cached.upTo <= upTo {
		e = *cached
		e.threads = make(map[string]Counts, len(cached.threads))
		for k, v := range cached.threads {
			e.threads[k] = v
		}
	} else {
		rp, err := s.readPositions(ctx, roomID, userID)
		if err != nil {
			return Counts{}, nil, err
		}
		e = unreadEntry{rulesPos: rulesPos, threaded: threaded, rp: rp, upTo: rp.all, threads: map[string]Counts{}}
	}
	if e.upTo < upTo {
		var evs []storage.SyncEvent
		if recent != nil && recentFrom <= e.upTo {
			for _, ev := range recent {
				if ev.Pos > e.upTo {
					evs = append(evs, ev)
				}
			}
		} else {
			var err error
			if evs, _, err = s.rooms.RoomEventsRange(ctx, roomID, e.upTo, upTo, maxUnreadScan); err != nil {
				return Counts{}, nil, err
			}
		}
		if err := s.countEvents(ctx, userID, roomID, &e, evs, upTo, rules); err != nil {
			return Counts{}, nil, err
		}
	}
	s.unreadMu.Lock()
	if len(s.unread) >= maxUnreadEntries {
		s.unread = map[string]*unreadEntry{}
	}
	if cur := s.unread[key]; cur == nil || cur.upTo <= e.upTo {
		stored := e
		s.unread[key] = &stored
	}
	s.unreadMu.Unlock()
	threads := make(map[string]Counts, len(e.threads))
	for k, v := range e.threads {
		if v.Notifications > 0 {
			threads[k] = v
		}
	}
	return e.main, threads, nil
}

// countEvents adds evs, the events in (e.upTo, upTo], to e.
func (s *Service) countEvents(ctx context.Context, userID, roomID string, e *unreadEntry, evs []storage.SyncEvent, upTo int64, rules *pushrules.PushRuleset) error {
	e.upTo = upTo
	for _, ev := range evs {
		if ev.StateKey != nil {
			e.room = nil // members, names or power levels may have changed
		}
	}
	var err error
	for _, ev := range evs {
		if ev.Sender == userID {
			continue
		}
		parsed := ParseEvent(ev)
		if parsed == nil {
			continue
		}
		thread := threadOf(parsed)
		if e.rp.read(thread, ev.Pos) {
			continue
		}
		if e.room == nil {
			if e.room, err = s.pushRoom(ctx, roomID, userID); err != nil {
				return err
			}
		}
		should := rules.GetActions(e.room, parsed).Should()
		if !should.Notify {
			continue
		}
		c := e.main
		inThread := e.threaded && thread != "main"
		if inThread {
			c = e.threads[thread]
		}
		c.Notifications++
		if should.Highlight {
			c.Highlights++
		}
		if inThread {
			e.threads[thread] = c
		} else {
			e.main = c
		}
	}
	return nil
}

// Notification is one entry of GET /notifications.
type Notification struct {
	Actions    pushrules.PushActionArray `json:"actions"`
	Event      json.RawMessage           `json:"event"`
	ProfileTag string                    `json:"profile_tag,omitempty"`
	Read       bool                      `json:"read"`
	RoomID     string                    `json:"room_id"`
	TS         int64                     `json:"ts"`
	pos        int64
}

// Notifications lists the events in the user's joined rooms that notified
// them, newest first, with positions below before (0: from the newest),
// computed from the user's current push rules. It returns at most limit
// entries and the position to continue from (0 when there are no more).
func (s *Service) Notifications(ctx context.Context, userID string, before int64, limit int, onlyHighlight bool) ([]Notification, int64, error) {
	upTo := s.db.Stream.Current()
	rooms, err := s.rooms.JoinedRooms(ctx, userID)
	if err != nil {
		return nil, 0, err
	}
	ruleset, _, err := s.PushRuleset(ctx, userID)
	if err != nil {
		return nil, 0, err
	}
	if before <= 0 || before > upTo+1 {
		before = upTo + 1
	}
	var all []Notification
	for _, roomID := range rooms {
		evs, _, err := s.rooms.RoomEventsRange(ctx, roomID, 0, before-1, maxUnreadScan)
		if err != nil {
			return nil, 0, err
		}
		rp, err := s.readPositions(ctx, roomID, userID)
		if err != nil {
			return nil, 0, err
		}
		var room *pushRoom
		for _, e := range evs {
			if e.Sender == userID {
				continue
			}
			ev := ParseEvent(e)
			if ev == nil {
				continue
			}
			if room == nil {
				if room, err = s.pushRoom(ctx, roomID, userID); err != nil {
					return nil, 0, err
				}
			}
			actions := ruleset.GetActions(room, ev)
			should := actions.Should()
			if !should.Notify || (onlyHighlight && !should.Highlight) {
				continue
			}
			all = append(all, Notification{Actions: actions, Event: ClientEvent(e, userID, ""), Read: rp.read(threadOf(ev), e.Pos), RoomID: roomID, TS: e.TS, pos: e.Pos})
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i].pos > all[j].pos })
	var next int64
	if len(all) > limit {
		all = all[:limit]
		next = all[limit-1].pos
	}
	return all, next, nil
}
