// Package ephemeral is the module behind the client endpoints whose data
// /sync carries outside the room timelines: typing (in memory), receipts and
// read markers, and presence. GET /sync (clientapi/syncv2) and sliding sync
// read from it.
package ephemeral

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/internal/mxhttp"
	"github.com/myelin-chat/myelin/storage"
)

// Store is what the module keeps in the store. *storage.DB satisfies it.
type Store interface {
	UpsertReceipt(ctx context.Context, r storage.Receipt) error
	GetPresence(ctx context.Context, userID string) (*storage.Presence, error)
	SetPresence(ctx context.Context, p storage.Presence) error
	PresenceSince(ctx context.Context, userIDs []string, from, to int64) ([]storage.Presence, error)
	UsersNotOffline(ctx context.Context) ([]string, error)
}

// Stream hands out the stream positions receipts and presence are written
// at: *storage.Stream.
type Stream interface {
	Allocate() (pos int64, finish func(), err error)
}

// Rooms is what the module reads about rooms. *storage.DB satisfies it.
type Rooms interface {
	GetMembership(ctx context.Context, roomID, userID string) (*storage.Membership, error)
	JoinedMembers(ctx context.Context, roomID string) ([]string, error)
	UsersSharingRooms(ctx context.Context, userID string) ([]string, error)
	EventPosition(ctx context.Context, roomID, eventID string) (int64, error)
	// For federation: a room's server ACL, the servers joined to a room
	// (where typing and receipts go), and those sharing a room with a user
	// (where their presence goes).
	CurrentStateEvent(ctx context.Context, roomID, evType, stateKey string) (*storage.Event, error)
	JoinedServers(ctx context.Context, roomID string) ([]string, error)
	ServersSharingRoomsWith(ctx context.Context, userID string) ([]string, error)
	// GetEvent reads the membership a join replaced (PresenceOnJoin).
	GetEvent(ctx context.Context, eventID string) (*storage.Event, error)
}

// Notifier wakes the /sync long-polls of the users a change concerns:
// *notifier.Notifier.
type Notifier interface {
	Notify(pos int64, users ...string)
	Wake(users ...string)
}

// AccountData writes room account data (m.fully_read): accounts.Service.
type AccountData interface {
	PutAccountData(ctx context.Context, userID id.UserID, roomID id.RoomID, typ string, content json.RawMessage) error
}

// ReceiptWatcher is told after a user's read receipt in a room moved: the
// push module's unread counts for that room start over (push.Service).
type ReceiptWatcher interface {
	ReceiptMoved(userID, roomID string)
}

// EDUSender queues EDUs for other servers in the federation sender's durable
// per-destination queue (federationsender.Queue). Our own name and servers
// the policy refuses are skipped there; ephemeral EDUs (typing, presence) may
// be dropped for a destination that is down, receipts never are.
type EDUSender interface {
	QueueEDU(ctx context.Context, destinations []string, eduType string, content json.RawMessage, ephemeral bool) error
}

// Options are what the module is built from.
type Options struct {
	Store    Store
	Stream   Stream
	Rooms    Rooms
	Notifier Notifier
	// AccountData may be nil: read markers then refuse m.fully_read.
	AccountData AccountData
	// Receipts may be nil.
	Receipts ReceiptWatcher
	// Presence is the presence.enabled switch: off, nothing is stored or sent.
	Presence bool
	// ServerName is ours: whose users' typing, receipts and presence we send.
	ServerName string
	// EDUs sends our users' typing, receipts and presence to the other
	// servers; nil with federation off.
	EDUs EDUSender
	// ServerACL applies a room's m.room.server_acl event to the origin of an
	// inbound typing or receipt EDU (federationapi.ACLAllows); nil: ACLs are
	// not checked.
	ServerACL func(aclPDU []byte, server string) bool
}

// Service is the module.
type Service struct {
	db              Store
	stream          Stream
	rooms           Rooms
	notifier        Notifier
	presenceEnabled bool
	accountData     AccountData
	receipts        ReceiptWatcher
	typing          *Typing
	serverName      string
	edus            EDUSender
	serverACL       func(aclPDU []byte, server string) bool

	typingSentMu sync.Mutex
	typingSent   map[string]time.Time // room+"\x00"+user → when our user's typing was last sent

	presenceMu   sync.Mutex
	presence     map[string]string // user → last stored presence state
	activity     map[string]*presenceActivity
	idleAfter    time.Duration
	offlineAfter time.Duration

	// Presence between servers (presence_federation.go).
	fedMu         sync.Mutex
	remoteHeard   map[string]time.Time // remote user not offline → when their server last told us
	localSent     map[string]time.Time // our user → when their presence last went to other servers
	pingEvery     time.Duration
	remoteTimeout time.Duration
	pingTimer     *time.Timer
	expireTimer   *time.Timer
	fedClosed     bool
	held          map[string]heldPresence // remote user → presence that came before our user's join
}

// New builds the module and, with presence on, re-arms the idle timers of the
// users stored as not offline and starts the federation ping and expiry
// timers (presence_federation.go).
func New(o Options) *Service {
	s := &Service{db: o.Store, stream: o.Stream, rooms: o.Rooms, notifier: o.Notifier, presenceEnabled: o.Presence,
		accountData: o.AccountData, receipts: o.Receipts,
		serverName: o.ServerName, edus: o.EDUs, serverACL: o.ServerACL, typingSent: map[string]time.Time{},
		presence: map[string]string{}, activity: map[string]*presenceActivity{},
		idleAfter: DefaultIdleAfter, offlineAfter: DefaultOfflineAfter,
		remoteHeard: map[string]time.Time{}, localSent: map[string]time.Time{}, held: map[string]heldPresence{},
		pingEvery: FederationPingInterval, remoteTimeout: FederationTimeout}
	s.typing = NewTyping(s.typingChanged)
	if s.presenceEnabled {
		if err := s.rearmPresence(context.Background()); err != nil {
			slog.Error("presence: re-arming idle timers", "err", err)
		}
		s.startFederationPresence()
	}
	return s
}

// PresenceEnabled reports the presence.enabled switch.
func (s *Service) PresenceEnabled() bool { return s.presenceEnabled }

// TypingSerial is the serial of the latest typing change (a /sync token's typing part).
func (s *Service) TypingSerial() int64 { return s.typing.Serial() }

// TypingSince returns roomID's typing users and whether the list changed after serial.
func (s *Service) TypingSince(roomID string, serial int64) (users []string, changed bool) {
	return s.typing.Since(roomID, serial)
}

func (s *Service) typingChanged(roomID, userID string, typing bool) {
	if s.isLocal(userID) {
		s.sendTyping(context.Background(), roomID, userID, typing)
	}
	members, err := s.rooms.JoinedMembers(context.Background(), roomID)
	if err != nil {
		return // the typing list is still right; only this wake-up is lost
	}
	s.notifier.Wake(members...)
}

func (s *Service) requireJoined(ctx context.Context, roomID, userID string) error {
	m, err := s.rooms.GetMembership(ctx, roomID, userID)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return fmt.Errorf("reading the membership of %s in %s: %w", userID, roomID, err)
	}
	if m == nil || m.Membership != "join" {
		return mxhttp.Forbidden("You are not joined to this room")
	}
	return nil
}

// SetTyping starts (for timeout) or stops the user's typing notification.
func (s *Service) SetTyping(ctx context.Context, roomID, userID string, typing bool, timeout time.Duration) error {
	if err := s.requireJoined(ctx, roomID, userID); err != nil {
		return err
	}
	const maxTimeout = 2 * time.Minute
	if timeout <= 0 || timeout > maxTimeout {
		timeout = maxTimeout
	}
	s.typing.Set(roomID, userID, typing, timeout)
	if typing {
		s.refreshRemoteTyping(ctx, roomID, userID)
	}
	return nil
}

// Receipt types a client may send.
const (
	ReceiptRead        = "m.read"
	ReceiptReadPrivate = "m.read.private"
	FullyRead          = "m.fully_read"
)

// SendReceipt stores a receipt on eventID and wakes who should see it
// (everyone in the room; only the owner for m.read.private).
func (s *Service) SendReceipt(ctx context.Context, roomID, userID, receiptType, eventID, threadID string) error {
	if err := s.requireJoined(ctx, roomID, userID); err != nil {
		return err
	}
	if _, err := s.rooms.EventPosition(ctx, roomID, eventID); err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return mxhttp.NotFound("Event not found in this room")
		}
		return err
	}
	if threadID != "" && threadID != "main" {
		if _, err := s.rooms.EventPosition(ctx, roomID, threadID); err != nil {
			if errors.Is(err, storage.ErrNotFound) {
				return mxhttp.InvalidParam("thread_id is not an event in this room")
			}
			return err
		}
	}
	ts := time.Now().UnixMilli()
	if err := s.storeReceipt(ctx, storage.Receipt{RoomID: roomID, UserID: userID, Type: receiptType, ThreadID: threadID,
		EventID: eventID, TS: ts}); err != nil {
		return err
	}
	if receiptType == ReceiptRead {
		// Public receipts only: m.read.private never leaves the server.
		return s.sendReceipt(ctx, roomID, userID, eventID, threadID, ts)
	}
	return nil
}

// storeReceipt writes r at a new stream position and wakes who should see it
// (everyone in the room; only the owner for m.read.private). Our users'
// unread counts start over; a remote user's receipt has none here.
func (s *Service) storeReceipt(ctx context.Context, r storage.Receipt) error {
	pos, finish, err := s.stream.Allocate()
	if err != nil {
		return err
	}
	r.Pos = pos
	err = s.db.UpsertReceipt(ctx, r)
	finish()
	if err != nil {
		return err
	}
	if s.receipts != nil && s.isLocal(r.UserID) {
		s.receipts.ReceiptMoved(r.UserID, r.RoomID)
	}
	if r.Type == ReceiptReadPrivate {
		s.notifier.Notify(pos, r.UserID)
		return nil
	}
	members, err := s.rooms.JoinedMembers(ctx, r.RoomID)
	if err != nil {
		return err
	}
	s.notifier.Notify(pos, members...)
	return nil
}

// SetReadMarkers moves the fully-read marker (room account data) and the
// read receipts in one call (POST /rooms/{roomId}/read_markers).
func (s *Service) SetReadMarkers(ctx context.Context, roomID, userID, fullyRead, read, readPrivate string) error {
	if err := s.requireJoined(ctx, roomID, userID); err != nil {
		return err
	}
	for _, ev := range []string{fullyRead, read, readPrivate} {
		if ev == "" {
			continue
		}
		if _, err := s.rooms.EventPosition(ctx, roomID, ev); err != nil {
			if errors.Is(err, storage.ErrNotFound) {
				return mxhttp.NotFound("Event %s not found in this room", ev)
			}
			return err
		}
	}
	if fullyRead != "" {
		if s.accountData == nil {
			return mxhttp.Unrecognized("m.fully_read needs room account data, not available on this server yet")
		}
		content, _ := json.Marshal(map[string]string{"event_id": fullyRead})
		if err := s.accountData.PutAccountData(ctx, id.UserID(userID), id.RoomID(roomID), FullyRead, content); err != nil {
			return err
		}
	}
	if read != "" {
		if err := s.SendReceipt(ctx, roomID, userID, ReceiptRead, read, ""); err != nil {
			return err
		}
	}
	if readPrivate != "" {
		if err := s.SendReceipt(ctx, roomID, userID, ReceiptReadPrivate, readPrivate, ""); err != nil {
			return err
		}
	}
	return nil
}
