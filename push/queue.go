package push

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"sync/atomic"
	"time"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/pushrules"

	"github.com/myelin-chat/myelin/clientevent"
	"github.com/myelin-chat/myelin/storage"
)

// DeliveryFollower names the follower (internal/follower) that runs
// QueuePushes; it is the key of its cursor in the store.
const DeliveryFollower = "push_delivery"

// Queue takes notifications for push gateways durably (*Delivery).
type Queue interface {
	Enqueue(ctx context.Context, items []storage.PushQueueItem) error
}

// QueueStore is what queueing reads besides Store: *storage.DB.
type QueueStore interface {
	RoomPushers(ctx context.Context, roomID string, before int64) ([]storage.Pusher, error)
	// Batched reads for all the recipients of an event (batch.go).
	JoinedRoomsOfUsers(ctx context.Context, userIDs []string) (map[string][]string, error)
	MemberDisplayNames(ctx context.Context, roomID string, userIDs []string) (map[string]string, error)
	ReceiptPositions(ctx context.Context, roomID string, userIDs []string) ([]storage.ReceiptPosition, error)
	MembershipHistories(ctx context.Context, roomID string, userIDs []string) (map[string][]storage.UserMembershipChange, error)
}

// QueuePushes follows new room events (follower DeliveryFollower): for each
// event, every local user joined to the room (or invited by it) whose push
// rules say notify gets one notification queued per http pusher. It only
// queues (Delivery sends). Idempotent: a replayed event is queued again
// under the same dedup key, which the store ignores.
func (s *Service) QueuePushes(ctx context.Context, events []*storage.Event) error {
	if s.queue == nil {
		return nil
	}
	var items []storage.PushQueueItem
	for i, ev := range events {
		more, err := s.pushesFor(ctx, ev, events[:i+1])
		if err != nil {
			return fmt.Errorf("queueing pushes for %s: %w", ev.EventID, err)
		}
		items = append(items, more...)
	}
	return s.queue.Enqueue(ctx, items)
}

// pusherData is the part of a pusher's data push delivery reads.
type pusherData struct {
	URL    string `json:"url"`
	Format string `json:"format"`
}

// storedPusher is a pusher as the client set it.
type storedPusher struct {
	Kind string                     `json:"kind"`
	Data map[string]json.RawMessage `json:"data"`
}

// httpPusher is an http pusher's gateway, format and the data the gateway
// gets (data less url).
type httpPusher struct {
	storage.Pusher
	url, format string
	data        map[string]json.RawMessage
}

func parseHTTPPusher(p storage.Pusher) (httpPusher, bool) {
	var sp storedPusher
	if json.Unmarshal([]byte(p.JSON), &sp) != nil || sp.Kind != "http" {
		return httpPusher{}, false // email pushers are never delivered: no mailer
	}
	hp := httpPusher{Pusher: p, data: map[string]json.RawMessage{}}
	for k, v := range sp.Data {
		switch k {
		case "url":
			_ = json.Unmarshal(v, &hp.url)
			continue
		case "format":
			_ = json.Unmarshal(v, &hp.format)
		}
		hp.data[k] = v // the spec: the data dictionary minus the url key
	}
	u, err := url.Parse(hp.url)
	return hp, err == nil && u.Path == gatewayPath // as POST /pushers/set checks
}

// eventFacts are what a notification says of an event's room and sender,
// read once per event for all its recipients.
type eventFacts struct {
	senderName, roomName, roomAlias string
	members                         int
	power                           *event.PowerLevelsEventContent
}

func (s *Service) stateContent(ctx context.Context, roomID, evType, stateKey string, into any) error {
	ev, err := s.rooms.CurrentStateEvent(ctx, roomID, evType, stateKey)
	if errors.Is(err, storage.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	var pdu struct {
		Content json.RawMessage `json:"content"`
	}
	if json.Unmarshal(ev.JSON, &pdu) == nil && len(pdu.Content) > 0 {
		_ = json.Unmarshal(pdu.Content, into)
	}
	return nil
}

func (s *Service) eventFacts(ctx context.Context, ev *storage.Event, joined int) (*eventFacts, error) {
	f := &eventFacts{members: joined}
	var member struct {
		DisplayName string `json:"displayname"`
	}
	var name struct {
		Name string `json:"name"`
	}
	var alias struct {
		Alias string `json:"alias"`
	}
	var power event.PowerLevelsEventContent
	for _, q := range []struct {
		typ, key string
		into     any
	}{{"m.room.member", ev.Sender, &member}, {"m.room.name", "", &name}, {"m.room.canonical_alias", "", &alias},
		{"m.room.power_levels", "", &power}} {
		if err := s.stateContent(ctx, ev.RoomID, q.typ, q.key, q.into); err != nil {
			return nil, err
		}
	}
	f.senderName, f.roomName, f.roomAlias, f.power = member.DisplayName, name.Name, alias.Alias, &power
	return f, nil
}

// pushesFor are the notifications ev gives rise to; page are the stream's
// events up to ev (all of them from page[0] on), which spare each recipient's
// unread count a read of the room.
func (s *Service) pushesFor(ctx context.Context, ev *storage.Event, page []*storage.Event) ([]storage.PushQueueItem, error) {
	pushers, err := s.queueStore.RoomPushers(ctx, ev.RoomID, ev.StreamPos)
	if err != nil {
		return nil, err
	}
	if ev.Type == "m.room.member" && ev.StateKey != nil && *ev.StateKey != ev.Sender {
		// The invited (or kicked, banned) user is not joined: their pushers too.
		target, err := s.db.Pushers(ctx, *ev.StateKey)
		if err != nil {
			return nil, err
		}
		for _, p := range target {
			if !containsPusher(pushers, p) {
				pushers = append(pushers, p)
			}
		}
	}
	byUser := map[string][]httpPusher{}
	var users []string
	for _, p := range pushers {
		if p.UserID == ev.Sender {
			continue
		}
		hp, ok := parseHTTPPusher(p)
		if !ok {
			continue
		}
		if byUser[p.UserID] == nil {
			users = append(users, p.UserID)
		}
		byUser[p.UserID] = append(byUser[p.UserID], hp)
	}
	if len(users) == 0 {
		return nil, nil
	}
	parsed := clientevent.PushEvent(ev)
	if parsed == nil {
		return nil, nil
	}
	joined, err := s.rooms.JoinedMembers(ctx, ev.RoomID)
	if err != nil {
		return nil, err
	}
	facts, err := s.eventFacts(ctx, ev, len(joined))
	if err != nil {
		return nil, err
	}
	// Everything per recipient is read once for all of them: their display
	// names here, their counts in unreadTotals; their rules are cached.
	rc, err := s.loadRoomContext(ctx, ev.RoomID, users, len(joined))
	if err != nil {
		return nil, err
	}
	rules := make(map[string]userRules, len(users))
	type notified struct {
		actions pushrules.PushActionArray
		should  pushrules.PushActionArrayShould
	}
	notify := map[string]notified{}
	var recipients []string
	for _, u := range users {
		rs, pos, err := s.PushRuleset(ctx, u)
		if err != nil {
			return nil, err
		}
		rules[u] = userRules{ruleset: rs, pos: pos}
		room := &pushRoom{members: facts.members, displayName: rc.names[u], power: facts.power}
		actions := rs.GetActions(room, parsed)
		if should := actions.Should(); should.Notify {
			notify[u] = notified{actions, should}
			recipients = append(recipients, u)
		}
	}
	if len(recipients) == 0 {
		return nil, nil
	}
	var recent []*storage.Event
	for _, e := range page {
		if e.RoomID == ev.RoomID {
			recent = append(recent, e)
		}
	}
	unread, err := s.unreadTotals(ctx, recipients, rules, ev.StreamPos, ev.RoomID, rc, recent, page[0].StreamPos-1)
	if err != nil {
		return nil, err
	}
	now := time.Now().UnixMilli()
	var items []storage.PushQueueItem
	for _, u := range recipients {
		n := notify[u]
		for _, p := range byUser[u] {
			body := notificationBody(ev, parsed, facts, u, p, n.actions, n.should, unread[u])
			items = append(items, storage.PushQueueItem{UserID: u, AppID: p.AppID, PushKey: p.PushKey, URL: p.url,
				Dedup: "e|" + ev.EventID + "|" + u + "|" + p.AppID + "|" + p.PushKey, Body: body, QueuedTS: now})
		}
	}
	return items, nil
}

func containsPusher(list []storage.Pusher, p storage.Pusher) bool {
	for _, q := range list {
		if q.UserID == p.UserID && q.AppID == p.AppID && q.PushKey == p.PushKey {
			return true
		}
	}
	return false
}

// gatewayDevice is one entry of the notification's devices.
type gatewayDevice struct {
	AppID     string                     `json:"app_id"`
	PushKey   string                     `json:"pushkey"`
	PushKeyTS int64                      `json:"pushkey_ts"`
	Data      map[string]json.RawMessage `json:"data"`
	Tweaks    map[string]any             `json:"tweaks"`
}

type gatewayCounts struct {
	Unread      int `json:"unread,omitempty"` // the spec: zero counts are omitted
	MissedCalls int `json:"missed_calls,omitempty"`
}

// gatewayNotification is the body's notification (the Push Gateway API).
type gatewayNotification struct {
	EventID           string          `json:"event_id,omitempty"`
	RoomID            string          `json:"room_id,omitempty"`
	Type              string          `json:"type,omitempty"`
	Sender            string          `json:"sender,omitempty"`
	SenderDisplayName string          `json:"sender_display_name,omitempty"`
	RoomName          string          `json:"room_name,omitempty"`
	RoomAlias         string          `json:"room_alias,omitempty"`
	UserIsTarget      bool            `json:"user_is_target,omitempty"`
	Prio              string          `json:"prio,omitempty"`
	Content           json.RawMessage `json:"content,omitempty"`
	Counts            gatewayCounts   `json:"counts"`
	Devices           []gatewayDevice `json:"devices"`
}

func device(p httpPusher, tweaks map[string]any) gatewayDevice {
	if tweaks == nil {
		tweaks = map[string]any{}
	}
	return gatewayDevice{AppID: p.AppID, PushKey: p.PushKey, PushKeyTS: p.CreatedTS / 1000, Data: p.data, Tweaks: tweaks}
}

// notificationBody is the request for one pusher. An encrypted event, or a
// pusher with format event_id_only, gets only the event and room IDs, the
// counts and the priority: nothing of the content or its senders leaves.
func notificationBody(ev *storage.Event, parsed *event.Event, f *eventFacts, userID string, p httpPusher,
	actions pushrules.PushActionArray, should pushrules.PushActionArrayShould, unread int) string {
	tweaks := map[string]any{}
	for _, a := range actions {
		if a.Action != pushrules.ActionSetTweak {
			continue
		}
		if a.Value == nil && a.Tweak == pushrules.TweakHighlight {
			tweaks[string(a.Tweak)] = true
		} else {
			tweaks[string(a.Tweak)] = a.Value
		}
	}
	// Synapse's rule: high when the event makes a sound or highlights, or may
	// (encrypted: what it says is unknown); low otherwise.
	prio := "low"
	if should.PlaySound || should.Highlight || ev.Type == "m.room.encrypted" {
		prio = "high"
	}
	n := gatewayNotification{EventID: ev.EventID, RoomID: ev.RoomID, Prio: prio, Counts: gatewayCounts{Unread: unread},
		Devices: []gatewayDevice{device(p, tweaks)}}
	if p.format != "event_id_only" && ev.Type != "m.room.encrypted" {
		n.Type, n.Sender, n.SenderDisplayName, n.RoomName, n.RoomAlias = ev.Type, ev.Sender, f.senderName, f.roomName, f.roomAlias
		n.UserIsTarget = ev.StateKey != nil && *ev.StateKey == userID && ev.Type == "m.room.member"
		if content, err := json.Marshal(parsed.Content.Raw); err == nil && len(parsed.Content.Raw) > 0 {
			n.Content = content
		}
	}
	b, _ := json.Marshal(map[string]any{"notification": n})
	return string(b)
}

// badgeSeq makes each badge update's dedup key unique.
var badgeSeq atomic.Int64

// ReceiptMoved drops the cached unread counts of userID in roomID: their read
// receipt there moved (ephemeral.ReceiptWatcher). With push delivery, the
// user's pushers get the new badge count (a notification with counts only),
// computed and queued in the background: the receipt's request does not wait.
func (s *Service) ReceiptMoved(userID, roomID string) {
	s.forgetUnread(userID, roomID)
	if s.queue == nil {
		return
	}
	select {
	case s.badges <- userID:
	default: // a burst beyond the buffer: the next notification carries the count
		slog.Warn("push: badge update dropped (queue full)", "user", userID)
	}
}

// runBadges queues badge updates until ctx ends.
func (s *Service) runBadges(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case u := <-s.badges:
			if err := s.queueBadge(ctx, u); err != nil && ctx.Err() == nil {
				slog.Warn("push: queueing a badge update", "user", u, "err", err)
			}
		}
	}
}

func (s *Service) queueBadge(ctx context.Context, userID string) error {
	pushers, err := s.db.Pushers(ctx, userID)
	if err != nil || len(pushers) == 0 {
		return err
	}
	rules, rulesPos, err := s.PushRuleset(ctx, userID)
	if err != nil {
		return err
	}
	totals, err := s.unreadTotals(ctx, []string{userID}, map[string]userRules{userID: {rules, rulesPos}}, s.stream.Current(), "", nil, nil, 0)
	if err != nil {
		return err
	}
	unread := totals[userID]
	now := time.Now()
	var items []storage.PushQueueItem
	for _, sp := range pushers {
		p, ok := parseHTTPPusher(sp)
		if !ok {
			continue
		}
		b, _ := json.Marshal(map[string]any{"notification": gatewayNotification{Counts: gatewayCounts{Unread: unread},
			Devices: []gatewayDevice{device(p, nil)}}})
		items = append(items, storage.PushQueueItem{UserID: userID, AppID: p.AppID, PushKey: p.PushKey, URL: p.url,
			Dedup: "b|" + strconv.FormatInt(now.UnixNano(), 36) + "|" + strconv.FormatInt(badgeSeq.Add(1), 36) + "|" + userID + "|" + p.AppID + "|" + p.PushKey,
			Body:  string(b), QueuedTS: now.UnixMilli()})
	}
	return s.queue.Enqueue(ctx, items)
}
