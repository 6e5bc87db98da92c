package push

import (
	"context"
	"encoding/json"
	"errors"
	"sort"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/pushrules"

	"github.com/myelin-chat/myelin/clientevent"
	"github.com/myelin-chat/myelin/storage"
	"github.com/myelin-chat/myelin/visibility"
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
	if ev, err := s.rooms.CurrentStateEvent(ctx, roomID, "m.room.member", userID); err == nil {
		var pdu struct {
			Content struct {
				DisplayName string `json:"displayname"`
			} `json:"content"`
		}
		_ = json.Unmarshal(ev.JSON, &pdu)
		r.displayName = pdu.Content.DisplayName
	} else if !errors.Is(err, storage.ErrNotFound) {
		return nil, err
	}
	if ev, err := s.rooms.CurrentStateEvent(ctx, roomID, "m.room.power_levels", ""); err == nil {
		var pdu struct {
			Content event.PowerLevelsEventContent `json:"content"`
		}
		if json.Unmarshal(ev.JSON, &pdu) == nil {
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
		if !isReadReceipt(r.Type) {
			continue
		}
		pos, err := s.rooms.EventPosition(ctx, roomID, r.EventID)
		if errors.Is(err, storage.ErrNotFound) {
			continue
		}
		if err != nil {
			return rp, err
		}
		rp.add(r.ThreadID, pos)
	}
	return rp, nil
}

func isReadReceipt(typ string) bool {
	return typ == string(event.ReceiptTypeRead) || typ == string(event.ReceiptTypeReadPrivate)
}

// add records a read receipt at pos, of thread ("" for unthreaded).
func (rp *readPositions) add(thread string, pos int64) {
	if thread == "" {
		rp.all = max(rp.all, pos)
	} else {
		rp.threads[thread] = max(rp.threads[thread], pos)
	}
}

// membershipView is a user's membership history in a room. Like Synapse,
// which records push actions only for the members of a room when an event is
// sent, an event counts (unread counts, /notifications) only when the user
// was joined at the time: never what was sent before they joined or while
// they were away, whatever the room's history visibility lets them read.
// Joined at the time implies they may see it (visibility.History).
type membershipView struct {
	hv visibility.History
	// firstJoin is the position of the user's first join (0: never joined);
	// spellStart that of the join that began their current stay (0: not joined).
	firstJoin, spellStart int64
}

func (s *Service) membershipView(ctx context.Context, roomID, userID string) (membershipView, error) {
	hist, err := s.rooms.UserMembershipHistory(ctx, roomID, userID)
	if err != nil {
		return membershipView{}, err
	}
	return membershipViewOf(hist), nil
}

// membershipViewOf is the view of a user's membership history in a room,
// oldest first.
func membershipViewOf(hist []storage.UserMembershipChange) membershipView {
	var mv membershipView
	prev := "leave"
	for _, m := range hist {
		mv.hv.Memberships = append(mv.hv.Memberships, visibility.Positioned{Pos: m.StreamPos, Value: m.Membership})
		if m.Membership == "join" && prev != "join" {
			mv.spellStart = m.StreamPos
			if mv.firstJoin == 0 {
				mv.firstJoin = m.StreamPos
			}
		}
		if m.Membership != "join" {
			mv.spellStart = 0
		}
		prev = m.Membership
	}
	return mv
}

// notificationViewer renders notifications for the user: their membership at
// each event, and prev_content only where they may see the replaced event
// (the room's history visibility read only when that needs it).
func (s *Service) notificationViewer(ctx context.Context, roomID, userID string, mv *membershipView) *clientevent.Viewer {
	loaded := false
	return &clientevent.Viewer{UserID: userID, MembershipAt: mv.hv.MembershipAt, CanSee: func(pos int64) (bool, error) {
		if mv.hv.JoinedAt(pos) {
			return true, nil
		}
		if !loaded {
			vis, err := s.rooms.HistoryVisibilityChanges(ctx, roomID)
			if err != nil {
				return false, err
			}
			mv.hv.Visibility, loaded = vis, true
		}
		return mv.hv.CanSee(pos), nil
	}}
}

// counts reports whether the event at pos may notify the user.
func (mv *membershipView) counts(pos int64) bool { return mv.hv.JoinedAt(pos) }

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
	members  membershipView // reloaded when the user's membership changes
	upTo     int64
	main     Counts
	threads  map[string]Counts
	room     *pushRoom // push context; dropped when state events pass
}

// maxUnreadEntries bounds the cache; past it the cache starts over.
const maxUnreadEntries = 100_000

// unreadKey keys the cache: threaded and unthreaded counts apart, so that
// push delivery's (unthreaded) and a threaded client's /sync do not evict
// each other's.
func unreadKey(userID, roomID string, threaded bool) string {
	if threaded {
		return userID + "\x00" + roomID + "\x00t"
	}
	return userID + "\x00" + roomID
}

func (s *Service) forgetUnread(userID, roomID string) {
	s.unreadMu.Lock()
	delete(s.unread, unreadKey(userID, roomID, false))
	delete(s.unread, unreadKey(userID, roomID, true))
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
func (s *Service) UnreadCounts(ctx context.Context, userID, roomID string, upTo int64, rules *pushrules.PushRuleset, rulesPos int64, threaded bool, recent []*storage.Event, recentFrom int64) (Counts, map[string]Counts, error) {
	key := unreadKey(userID, roomID, threaded)
	e, ok := s.cachedEntry(key, rulesPos, threaded, upTo)
	if !ok {
		rp, err := s.readPositions(ctx, roomID, userID)
		if err != nil {
			return Counts{}, nil, err
		}
		mv, err := s.membershipView(ctx, roomID, userID)
		if err != nil {
			return Counts{}, nil, err
		}
		e = newUnreadEntry(rulesPos, threaded, rp, mv, upTo)
	}
	if e.upTo < upTo {
		var evs []*storage.Event
		if recent != nil && recentFrom <= e.upTo {
			evs = eventsAfter(recent, e.upTo)
		} else {
			var err error
			if evs, _, err = s.rooms.RoomEventsRange(ctx, roomID, e.upTo, upTo, maxUnreadScan); err != nil {
				return Counts{}, nil, err
			}
		}
		c := unreadCounter{parse: clientevent.PushEvent, room: func() (*pushRoom, error) { return s.pushRoom(ctx, roomID, userID) }}
		if err := s.countEvents(ctx, userID, roomID, &e, evs, upTo, rules, c); err != nil {
			return Counts{}, nil, err
		}
	}
	s.storeUnread(key, e)
	main, threads := e.counts()
	return main, threads, nil
}

// cachedEntry is a copy of the cached entry under key when it was counted
// with the rules at rulesPos up to at most upTo.
func (s *Service) cachedEntry(key string, rulesPos int64, threaded bool, upTo int64) (unreadEntry, bool) {
	s.unreadMu.Lock()
	cached := s.unread[key]
	s.unreadMu.Unlock()
	if cached == nil || cached.rulesPos != rulesPos || cached.threaded != threaded || cached.upTo > upTo {
		return unreadEntry{}, false
	}
	e := *cached
	e.threads = make(map[string]Counts, len(cached.threads))
	for k, v := range cached.threads {
		e.threads[k] = v
	}
	return e, true
}

// newUnreadEntry starts counting, with nothing counted yet, from the read
// receipt or, without one (or an older one), from the join that began the
// user's stay: not from the room's start.
func newUnreadEntry(rulesPos int64, threaded bool, rp readPositions, mv membershipView, upTo int64) unreadEntry {
	from := max(rp.all, mv.spellStart)
	if mv.spellStart == 0 {
		from = max(rp.all, upTo) // not joined: nothing to count
	}
	return unreadEntry{rulesPos: rulesPos, threaded: threaded, rp: rp, members: mv, upTo: from, threads: map[string]Counts{}}
}

// storeUnread caches e under key unless a newer entry is there.
func (s *Service) storeUnread(key string, e unreadEntry) {
	s.unreadMu.Lock()
	defer s.unreadMu.Unlock()
	if len(s.unread) >= maxUnreadEntries {
		s.unread = map[string]*unreadEntry{}
	}
	if cur := s.unread[key]; cur == nil || cur.upTo <= e.upTo {
		s.unread[key] = &e
	}
}

// counts are e's main counts and its threads' non-zero ones.
func (e *unreadEntry) counts() (Counts, map[string]Counts) {
	threads := make(map[string]Counts, len(e.threads))
	for k, v := range e.threads {
		if v.Notifications > 0 {
			threads[k] = v
		}
	}
	return e.main, threads
}

// eventsAfter are the events of evs with positions above pos.
func eventsAfter(evs []*storage.Event, pos int64) []*storage.Event {
	var out []*storage.Event
	for _, ev := range evs {
		if ev.StreamPos > pos {
			out = append(out, ev)
		}
	}
	return out
}

// cachedUnread are the cached unthreaded counts of userID in roomID, when
// they were computed with the rules at rulesPos up to at least upTo (a /sync
// ahead of push delivery's follower): newer than a count up to upTo.
func (s *Service) cachedUnread(userID, roomID string, rulesPos, upTo int64) (Counts, bool) {
	s.unreadMu.Lock()
	defer s.unreadMu.Unlock()
	e := s.unread[unreadKey(userID, roomID, false)]
	if e == nil || e.rulesPos != rulesPos || e.upTo < upTo {
		return Counts{}, false
	}
	return e.main, true
}

// unreadCounter is how countEvents gets the user's push context and the events
// as push rules see them: read per user by /sync, shared by all the
// recipients of an event by push delivery.
type unreadCounter struct {
	room  func() (*pushRoom, error)
	parse func(*storage.Event) *event.Event
}

// countEvents adds evs, the events in (e.upTo, upTo], to e.
func (s *Service) countEvents(ctx context.Context, userID, roomID string, e *unreadEntry, evs []*storage.Event, upTo int64, rules *pushrules.PushRuleset, c unreadCounter) error {
	e.upTo = upTo
	var err error
	for _, ev := range evs {
		if ev.StateKey != nil {
			e.room = nil // members, names or power levels may have changed
			if ev.Type == "m.room.member" && *ev.StateKey == userID {
				if e.members, err = s.membershipView(ctx, roomID, userID); err != nil {
					return err
				}
			}
		}
	}
	for _, ev := range evs {
		if ev.Sender == userID || !e.members.counts(ev.StreamPos) {
			continue
		}
		parsed := c.parse(ev)
		if parsed == nil {
			continue
		}
		thread := threadOf(parsed)
		if e.rp.read(thread, ev.StreamPos) {
			continue
		}
		if e.room == nil {
			if e.room, err = c.room(); err != nil {
				return err
			}
		}
		should := rules.GetActions(e.room, parsed).Should()
		if !should.Notify {
			continue
		}
		n := e.main
		inThread := e.threaded && thread != "main"
		if inThread {
			n = e.threads[thread]
		}
		n.Notifications++
		if should.Highlight {
			n.Highlights++
		}
		if inThread {
			e.threads[thread] = n
		} else {
			e.main = n
		}
	}
	return nil
}

// Notification is one entry of GET /notifications.
type Notification struct {
	Actions    WireActions     `json:"actions"`
	Event      json.RawMessage `json:"event"`
	ProfileTag string          `json:"profile_tag,omitempty"`
	Read       bool            `json:"read"`
	RoomID     string          `json:"room_id"`
	TS         int64           `json:"ts"`
	pos        int64
}

// Bounds of GET /notifications: each of the user's rooms is read backwards
// in batches of notificationBatch events, at most notificationRoomScan of
// them per request.
const (
	notificationBatch    = 100
	notificationRoomScan = 300
)

// Notifications lists the events in the user's joined rooms that notified
// them, newest first, with positions below before (0: from the newest),
// computed from the user's current push rules: only events sent while the
// user was joined (membershipView). It returns at most limit entries and the
// position to continue from (0 when there are no more). The work per room is
// bounded: when a room's scan stops short, the page ends where that room's
// scan did and the next one continues from there (possibly after an empty page).
func (s *Service) Notifications(ctx context.Context, userID string, before int64, limit int, onlyHighlight bool) ([]Notification, int64, error) {
	upTo := s.stream.Current()
	rooms, err := s.rooms.RoomsOfUser(ctx, userID, "join")
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
	all := []Notification{} // the answer's "notifications" is an array, even empty
	var cutoff int64        // notifications below it are not known yet: a room's scan stopped there
	more := false           // a room stopped at limit notifications
	for _, room := range rooms {
		roomID := room.RoomID
		mv, err := s.membershipView(ctx, roomID, userID)
		if err != nil {
			return nil, 0, err
		}
		if mv.firstJoin == 0 {
			continue
		}
		rp, err := s.readPositions(ctx, roomID, userID)
		if err != nil {
			return nil, 0, err
		}
		var pr *pushRoom
		var notified []*storage.Event // rendered together once the room is scanned
		found, scanned := 0, 0
		hi := before - 1
		for found < limit && hi > mv.firstJoin {
			if scanned >= notificationRoomScan {
				cutoff = max(cutoff, hi+1)
				break
			}
			evs, _, err := s.rooms.RoomEventsRange(ctx, roomID, mv.firstJoin, hi, notificationBatch)
			if err != nil {
				return nil, 0, err
			}
			if len(evs) == 0 {
				break
			}
			scanned += len(evs)
			hi = evs[0].StreamPos - 1
			for i := len(evs) - 1; i >= 0 && found < limit; i-- {
				e := evs[i]
				if e.Sender == userID || !mv.counts(e.StreamPos) {
					continue
				}
				ev := clientevent.PushEvent(e)
				if ev == nil {
					continue
				}
				if pr == nil {
					if pr, err = s.pushRoom(ctx, roomID, userID); err != nil {
						return nil, 0, err
					}
				}
				actions := ruleset.GetActions(pr, ev)
				should := actions.Should()
				if !should.Notify || (onlyHighlight && !should.Highlight) {
					continue
				}
				found++
				notified = append(notified, e)
				all = append(all, Notification{Actions: WireActions(actions), Read: rp.read(threadOf(ev), e.StreamPos), RoomID: roomID, TS: e.OriginServerTS, pos: e.StreamPos})
			}
			if len(evs) < notificationBatch {
				break
			}
		}
		if len(notified) > 0 {
			rendered, err := clientevent.Render(ctx, s.rooms, s.notificationViewer(ctx, roomID, userID, &mv), notified)
			if err != nil {
				return nil, 0, err
			}
			for i, ev := range rendered {
				all[len(all)-len(rendered)+i].Event = ev
			}
		}
		more = more || found >= limit // the room may have older ones
	}
	sort.Slice(all, func(i, j int) bool { return all[i].pos > all[j].pos })
	if cutoff > 0 {
		n := sort.Search(len(all), func(i int) bool { return all[i].pos < cutoff })
		all = all[:n]
	}
	var next int64
	switch {
	case len(all) > limit || (len(all) == limit && more):
		all = all[:limit]
		next = all[limit-1].pos
	case cutoff > 0:
		next = cutoff
	}
	return all, next, nil
}
