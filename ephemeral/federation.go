package ephemeral

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/storage"
)

// EDU types this module sends and receives (spec: server-server API, "Typing
// Notifications", "Receipts", "Presence").
const (
	EDUTyping   = "m.typing"
	EDUReceipt  = "m.receipt"
	EDUPresence = "m.presence"
)

// Federation timings and bounds.
const (
	// RemoteTypingTimeout is how long a remote user's typing lasts without a
	// refresh: the EDU carries no timeout, so the receiver picks one. Synapse
	// keeps remote typing for 60 s (its FEDERATION_TIMEOUT) and its senders
	// refresh every 40 s; we take the same 60 s so either side's refreshes
	// keep it alive, and a sender that vanishes stops "typing" within a minute.
	RemoteTypingTimeout = 60 * time.Second
	// typingRefresh is how often our user's continued typing (a client
	// re-sending typing=true) is sent again, well within the receivers' 60 s.
	typingRefresh = 30 * time.Second
	// MaxReceiptRooms, MaxReceiptUsers and MaxReceiptEventIDs bound an
	// inbound m.receipt EDU (rooms, users per room, event IDs per user's
	// receipt); parts beyond them are dropped.
	MaxReceiptRooms    = 100
	MaxReceiptUsers    = 100
	MaxReceiptEventIDs = 10
	// MaxPresencePush bounds the users of an inbound m.presence EDU.
	MaxPresencePush = 500
	// maxIDBytes bounds a user, room, event or thread ID (the spec's 255).
	maxIDBytes = 255
	// eduSendTimeout bounds queueing an EDU from a timer (typing expiry,
	// presence decay), where no request context exists.
	eduSendTimeout = 10 * time.Second
)

// isLocal reports whether userID is one of our users (all are, without a
// server name: federation off).
func (s *Service) isLocal(userID string) bool {
	return s.serverName == "" || id.UserID(userID).Homeserver() == s.serverName
}

// others drops our own name from servers.
func (s *Service) others(servers []string) []string {
	return slices.DeleteFunc(servers, func(srv string) bool { return srv == s.serverName })
}

// sendTyping sends our user's typing state to the room's other joined
// servers. Typing is ephemeral: a failure is logged, nothing else.
func (s *Service) sendTyping(ctx context.Context, roomID, userID string, typing bool) {
	if s.edus == nil {
		return
	}
	key := roomID + "\x00" + userID
	s.typingSentMu.Lock()
	if typing {
		if len(s.typingSent) >= 100_000 {
			s.typingSent = map[string]time.Time{}
		}
		s.typingSent[key] = time.Now()
	} else {
		delete(s.typingSent, key)
	}
	s.typingSentMu.Unlock()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), eduSendTimeout)
	defer cancel()
	servers, err := s.rooms.JoinedServers(ctx, roomID)
	if err != nil {
		slog.Warn("typing: listing the room's servers", "room", roomID, "err", err)
		return
	}
	if servers = s.others(servers); len(servers) == 0 {
		return
	}
	content, _ := json.Marshal(map[string]any{"room_id": roomID, "user_id": userID, "typing": typing})
	if err := s.edus.QueueEDU(ctx, servers, EDUTyping, content, true); err != nil {
		slog.Warn("typing: queueing the EDU", "room", roomID, "err", err)
	}
}

// refreshRemoteTyping re-sends our user's continued typing once the last
// send is typingRefresh old, so the other servers' RemoteTypingTimeout does
// not end it while the client keeps saying it types.
func (s *Service) refreshRemoteTyping(ctx context.Context, roomID, userID string) {
	if s.edus == nil || !s.isLocal(userID) {
		return
	}
	s.typingSentMu.Lock()
	last, ok := s.typingSent[roomID+"\x00"+userID]
	s.typingSentMu.Unlock()
	if ok && time.Since(last) < typingRefresh {
		return
	}
	s.sendTyping(ctx, roomID, userID, true)
}

// receiptEDU is an m.receipt EDU's content: room → receipt type → user.
type receiptEDU map[string]map[string]map[string]struct {
	EventIDs []string `json:"event_ids"`
	Data     struct {
		TS       int64  `json:"ts"`
		ThreadID string `json:"thread_id,omitempty"`
	} `json:"data"`
}

// sendReceipt sends our user's public read receipt to the room's other
// joined servers, durably (receipts are not ephemeral: the queue keeps them
// for a server that is down).
func (s *Service) sendReceipt(ctx context.Context, roomID, userID, eventID, threadID string, ts int64) error {
	if s.edus == nil {
		return nil
	}
	servers, err := s.rooms.JoinedServers(ctx, roomID)
	if err != nil {
		return fmt.Errorf("listing the servers of %s for a receipt: %w", roomID, err)
	}
	if servers = s.others(servers); len(servers) == 0 {
		return nil
	}
	data := map[string]any{"ts": ts}
	if threadID != "" {
		data["thread_id"] = threadID
	}
	content, _ := json.Marshal(map[string]any{roomID: map[string]any{ReceiptRead: map[string]any{
		userID: map[string]any{"event_ids": []string{eventID}, "data": data}}}})
	if err := s.edus.QueueEDU(ctx, servers, EDUReceipt, content, false); err != nil {
		return fmt.Errorf("queueing the receipt of %s in %s: %w", userID, roomID, err)
	}
	return nil
}

// presenceEDU is an m.presence EDU's content.
type presenceEDU struct {
	Push []presenceUpdate `json:"push"`
}

type presenceUpdate struct {
	UserID          string  `json:"user_id"`
	Presence        string  `json:"presence"`
	StatusMsg       *string `json:"status_msg,omitempty"`
	LastActiveAgo   int64   `json:"last_active_ago"`
	CurrentlyActive bool    `json:"currently_active"`
}

// sendPresence sends our user's presence to the other servers sharing a room
// with them. Presence is ephemeral: a failure is logged, nothing else.
func (s *Service) sendPresence(ctx context.Context, p storage.Presence) {
	if s.edus == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), eduSendTimeout)
	defer cancel()
	servers, err := s.rooms.ServersSharingRoomsWith(ctx, p.UserID)
	if err != nil {
		slog.Warn("presence: listing the servers sharing rooms", "user", p.UserID, "err", err)
		return
	}
	if servers = s.others(servers); len(servers) == 0 {
		return
	}
	s.sentLocal(time.Now(), p.UserID) // the next ping is a ping interval away
	content, _ := json.Marshal(presenceEDU{Push: []presenceUpdate{s.updateOf(p)}})
	if err := s.edus.QueueEDU(ctx, servers, EDUPresence, content, true); err != nil {
		slog.Warn("presence: queueing the EDU", "user", p.UserID, "err", err)
	}
}

// errDropped collects what an inbound EDU named that its origin may not
// speak for; the handler applies the rest and returns this for the log.
type errDropped []string

func (e errDropped) Error() string { return "dropped: " + strings.Join(e, "; ") }

func (e errDropped) orNil() error {
	if len(e) == 0 {
		return nil
	}
	return e
}

// speaksFor reports why origin may not speak for userID ("" if it may): the
// user's server must be the origin.
func speaksFor(origin, userID string) string {
	if len(userID) > maxIDBytes {
		return "user ID too long"
	}
	_, server, err := id.UserID(userID).Parse()
	if err != nil {
		return fmt.Sprintf("bad user ID %q", userID)
	}
	if server != origin {
		return fmt.Sprintf("%s is not a user of %s", userID, origin)
	}
	return ""
}

// roomAllows reports why origin may not speak in roomID ("" if it may): the
// room is known here and its current server ACL does not deny origin.
func (s *Service) roomAllows(ctx context.Context, roomID, origin string) (string, error) {
	if len(roomID) > maxIDBytes || !strings.HasPrefix(roomID, "!") {
		return fmt.Sprintf("bad room ID %q", roomID), nil
	}
	// The origin must have a member joined there per our state (which also
	// means we know the room): one query per room, before any per-user one.
	servers, err := s.rooms.JoinedServers(ctx, roomID)
	if err != nil {
		return "", fmt.Errorf("reading the servers of %s: %w", roomID, err)
	}
	if !slices.Contains(servers, origin) {
		return fmt.Sprintf("%s has no member joined to %s", origin, roomID), nil
	}
	if s.serverACL == nil {
		return "", nil
	}
	acl, err := s.rooms.CurrentStateEvent(ctx, roomID, "m.room.server_acl", "")
	if errors.Is(err, storage.ErrNotFound) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("reading the server ACL of %s: %w", roomID, err)
	}
	if !s.serverACL(acl.JSON, origin) {
		return fmt.Sprintf("%s is denied by the server ACL of %s", origin, roomID), nil
	}
	return "", nil
}

// joined reports why userID may not act in roomID ("" if it may): it must be
// joined there per our state (which also means we know the room).
func (s *Service) joined(ctx context.Context, roomID, userID string) (string, error) {
	m, err := s.rooms.GetMembership(ctx, roomID, userID)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return "", fmt.Errorf("reading the membership of %s in %s: %w", userID, roomID, err)
	}
	if m == nil || m.Membership != "join" {
		return fmt.Sprintf("%s is not joined to %s", userID, roomID), nil
	}
	return "", nil
}

// ReceiveTyping takes an inbound m.typing EDU (ingest.EDUHandler): a user of
// origin, joined to a room origin may speak in, starts or stops typing there
// for RemoteTypingTimeout.
func (s *Service) ReceiveTyping(ctx context.Context, origin string, content json.RawMessage) error {
	var edu struct {
		RoomID string `json:"room_id"`
		UserID string `json:"user_id"`
		Typing bool   `json:"typing"`
	}
	if err := json.Unmarshal(content, &edu); err != nil {
		return fmt.Errorf("m.typing from %s: %w", origin, err)
	}
	if why := speaksFor(origin, edu.UserID); why != "" {
		return errDropped{why}
	}
	why, err := s.roomAllows(ctx, edu.RoomID, origin)
	if err == nil && why == "" {
		why, err = s.joined(ctx, edu.RoomID, edu.UserID)
	}
	if err != nil {
		return err
	}
	if why != "" {
		return errDropped{why}
	}
	s.typing.Set(edu.RoomID, edu.UserID, edu.Typing, RemoteTypingTimeout)
	return nil
}

// ReceiveReceipt takes an inbound m.receipt EDU (ingest.EDUHandler): the
// m.read receipts of origin's users joined to rooms origin may speak in are
// stored as local ones are (they show in the /sync of the room's members);
// the rest is dropped.
func (s *Service) ReceiveReceipt(ctx context.Context, origin string, content json.RawMessage) error {
	var edu receiptEDU
	if err := json.Unmarshal(content, &edu); err != nil {
		return fmt.Errorf("m.receipt from %s: %w", origin, err)
	}
	var dropped errDropped
	rooms := sortedKeys(edu)
	if len(rooms) > MaxReceiptRooms {
		dropped = append(dropped, fmt.Sprintf("%d rooms over %d", len(rooms)-MaxReceiptRooms, MaxReceiptRooms))
		rooms = rooms[:MaxReceiptRooms]
	}
	for _, roomID := range rooms {
		why, err := s.roomAllows(ctx, roomID, origin)
		if err != nil {
			return err
		}
		if why != "" {
			dropped = append(dropped, why)
			continue
		}
		for typ, users := range edu[roomID] {
			if typ != ReceiptRead { // the only receipt type servers exchange
				dropped = append(dropped, fmt.Sprintf("receipt type %q", typ))
				continue
			}
			ids := sortedKeys(users)
			if len(ids) > MaxReceiptUsers {
				dropped = append(dropped, fmt.Sprintf("%d users over %d in %s", len(ids)-MaxReceiptUsers, MaxReceiptUsers, roomID))
				ids = ids[:MaxReceiptUsers]
			}
			for _, userID := range ids {
				r := users[userID]
				why := speaksFor(origin, userID)
				if why == "" {
					if why, err = s.joined(ctx, roomID, userID); err != nil {
						return err
					}
				}
				if why == "" {
					why = validReceipt(r.EventIDs, r.Data.ThreadID)
				}
				if why != "" {
					dropped = append(dropped, why)
					continue
				}
				eventID, err := s.latestEvent(ctx, roomID, r.EventIDs)
				if err != nil {
					return err
				}
				ts := r.Data.TS
				if now := time.Now().UnixMilli(); ts <= 0 || ts > now+time.Minute.Milliseconds() {
					ts = now
				}
				if err := s.storeReceipt(ctx, storage.Receipt{RoomID: roomID, UserID: userID, Type: ReceiptRead,
					ThreadID: r.Data.ThreadID, EventID: eventID, TS: ts}); err != nil {
					return err
				}
			}
		}
	}
	return dropped.orNil()
}

// validReceipt reports what is wrong with a receipt's event IDs and thread
// ("" if nothing).
func validReceipt(eventIDs []string, threadID string) string {
	if len(eventIDs) == 0 || len(eventIDs) > MaxReceiptEventIDs {
		return fmt.Sprintf("a receipt with %d event IDs", len(eventIDs))
	}
	for _, ev := range eventIDs {
		if len(ev) > maxIDBytes || !strings.HasPrefix(ev, "$") {
			return fmt.Sprintf("bad event ID %q", ev)
		}
	}
	if threadID != "" && threadID != "main" && (len(threadID) > maxIDBytes || !strings.HasPrefix(threadID, "$")) {
		return fmt.Sprintf("bad thread ID %q", threadID)
	}
	return ""
}

// latestEvent picks the event a receipt naming several points at: the latest
// we have in the room, else the first (a receipt may arrive before its event;
// /sync shows it by ID all the same).
func (s *Service) latestEvent(ctx context.Context, roomID string, eventIDs []string) (string, error) {
	best, bestPos := eventIDs[0], int64(-1)
	for _, ev := range eventIDs {
		pos, err := s.rooms.EventPosition(ctx, roomID, ev)
		if errors.Is(err, storage.ErrNotFound) {
			continue
		}
		if err != nil {
			return "", err
		}
		if pos > bestPos {
			best, bestPos = ev, pos
		}
	}
	return best, nil
}

// ReceivePresence takes an inbound m.presence EDU (ingest.EDUHandler): the
// presence of origin's users who share a room with one of ours is stored and
// shown to the users sharing a room with them. Ignored with presence off.
func (s *Service) ReceivePresence(ctx context.Context, origin string, content json.RawMessage) error {
	if !s.presenceEnabled {
		return nil
	}
	var edu presenceEDU
	if err := json.Unmarshal(content, &edu); err != nil {
		return fmt.Errorf("m.presence from %s: %w", origin, err)
	}
	var dropped errDropped
	if len(edu.Push) > MaxPresencePush {
		dropped = append(dropped, fmt.Sprintf("%d users over %d", len(edu.Push)-MaxPresencePush, MaxPresencePush))
		edu.Push = edu.Push[:MaxPresencePush]
	}
	for _, u := range edu.Push {
		why := speaksFor(origin, u.UserID)
		switch {
		case why != "":
		case !ValidPresence(u.Presence):
			why = fmt.Sprintf("presence %q of %s", u.Presence, u.UserID)
		case u.StatusMsg != nil && len(*u.StatusMsg) > MaxStatusMsgBytes:
			why = fmt.Sprintf("status_msg of %s over %d bytes", u.UserID, MaxStatusMsgBytes)
		}
		if why == "" {
			var err error
			if why, err = s.sharesRoomWithOurs(ctx, u.UserID); err != nil {
				return err
			}
			if why != "" {
				s.holdPresence(u) // perhaps our user's join is still under way
			}
		}
		if why != "" {
			dropped = append(dropped, why)
			continue
		}
		if err := s.storeRemotePresence(ctx, u); err != nil {
			return err
		}
		s.heardRemote(u.UserID, u.Presence, time.Now()) // FederationTimeout counts from now
	}
	return dropped.orNil()
}

// sharesRoomWithOurs reports why we keep no presence of userID ("" if we do):
// only users sharing a room with one of ours are shown it, so a server
// cannot fill the store with presence nobody here may see.
func (s *Service) sharesRoomWithOurs(ctx context.Context, userID string) (string, error) {
	// Our server among the servers sharing a room with them: one indexed
	// query, not the list of every user sharing a room.
	servers, err := s.rooms.ServersSharingRoomsWith(ctx, userID)
	if err != nil {
		return "", err
	}
	if slices.Contains(servers, s.serverName) {
		return "", nil
	}
	return fmt.Sprintf("%s shares no room with our users", userID), nil
}

// storeRemotePresence stores a remote user's presence when it visibly
// changed (last_active_ago alone is not worth a stream write).
func (s *Service) storeRemotePresence(ctx context.Context, u presenceUpdate) error {
	old, err := s.db.GetPresence(ctx, u.UserID)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return err
	}
	const maxAgo = int64(365 * 24 * time.Hour / time.Millisecond)
	p := storage.Presence{UserID: u.UserID, State: u.Presence, StatusMsg: u.StatusMsg,
		LastActiveTS:    time.Now().UnixMilli() - min(max(u.LastActiveAgo, 0), maxAgo),
		CurrentlyActive: u.Presence == PresenceOnline && u.CurrentlyActive}
	if !presenceVisiblyChanged(old, p) {
		return nil
	}
	return s.storePresence(ctx, old, p)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
