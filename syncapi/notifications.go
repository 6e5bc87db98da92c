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

// UnreadCounts counts the room's unread notifications for userID up to
// position upTo. With threaded, events in threads are counted per thread
// root and left out of the main counts (unread_thread_notifications).
func (s *Service) UnreadCounts(ctx context.Context, userID, roomID string, upTo int64, rules *pushrules.PushRuleset, threaded bool) (Counts, map[string]Counts, error) {
	var main Counts
	threads := map[string]Counts{}
	rp, err := s.readPositions(ctx, roomID, userID)
	if err != nil {
		return main, nil, err
	}
	evs, _, err := s.rooms.RoomEventsRange(ctx, roomID, rp.all, upTo, maxUnreadScan)
	if err != nil {
		return main, nil, err
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
		thread := threadOf(ev)
		if rp.read(thread, e.Pos) {
			continue
		}
		if room == nil {
			if room, err = s.pushRoom(ctx, roomID, userID); err != nil {
				return main, nil, err
			}
		}
		should := rules.GetActions(room, ev).Should()
		if !should.Notify {
			continue
		}
		c := main
		if threaded && thread != "main" {
			c = threads[thread]
		}
		c.Notifications++
		if should.Highlight {
			c.Highlights++
		}
		if threaded && thread != "main" {
			threads[thread] = c
		} else {
			main = c
		}
	}
	return main, threads, nil
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
	rules, _, err := s.PushRules(ctx, userID)
	if err != nil {
		return nil, 0, err
	}
	ruleset := rules.Ruleset()
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
			all = append(all, Notification{Actions: actions, Event: ClientEvent(e), Read: rp.read(threadOf(ev), e.Pos), RoomID: roomID, TS: e.TS, pos: e.Pos})
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
