// Package push is the module behind push rules (server defaults merged with
// the user's own), pushers (stored; delivery to push gateways comes later),
// unread notification counts and GET /notifications, and the copy of a
// room's push rules to its replacement when it is upgraded. /sync
// (clientapi/syncv2) and sliding sync read the rules and counts from it.
package push

import (
	"context"
	"sync"

	"github.com/myelin-chat/myelin/storage"
)

// Store is what the module keeps in the store. *storage.DB satisfies it.
type Store interface {
	PushRules(ctx context.Context, userID string) (ruleset string, pos int64, err error)
	UpdatePushRules(ctx context.Context, userID string, pos int64, update func(current string) (string, error)) error
	UsersWithPushRulesMentioning(ctx context.Context, text string) ([]string, error)
	SetPusher(ctx context.Context, p storage.Pusher, appendPusher bool) error
	DeletePusher(ctx context.Context, userID, appID, pushKey string) error
	Pushers(ctx context.Context, userID string) ([]storage.Pusher, error)
	UserReceipts(ctx context.Context, roomID, userID string) ([]storage.Receipt, error)
}

// Stream is the stream push rule changes are written at, and that
// /notifications reads up to: *storage.Stream.
type Stream interface {
	Allocate() (pos int64, finish func(), err error)
	Current() int64
}

// Rooms is what the module reads about rooms. *storage.DB satisfies it.
type Rooms interface {
	RoomsOfUser(ctx context.Context, userID string, memberships ...string) ([]storage.Membership, error)
	JoinedMembers(ctx context.Context, roomID string) ([]string, error)
	EventPosition(ctx context.Context, roomID, eventID string) (int64, error)
	RoomEventsRange(ctx context.Context, roomID string, from, to int64, limit int) ([]*storage.Event, bool, error)
	CurrentStateEvent(ctx context.Context, roomID, evType, stateKey string) (*storage.Event, error)
	UserMembershipHistory(ctx context.Context, roomID, userID string) ([]storage.UserMembershipChange, error)
	HistoryVisibilityChanges(ctx context.Context, roomID string) ([]storage.PositionedValue, error)
	// GetEvents loads the events a rendered notification refers to (clientevent.Store).
	GetEvents(ctx context.Context, ids []string) (map[string]*storage.Event, error)
	ErasedUsers(ctx context.Context, userIDs []string) (map[string]bool, error) // clientevent.Store
	GetRoom(ctx context.Context, roomID string) (*storage.RoomRow, error)
	// Batched reads for one user's counts in many rooms (rooms_counts.go).
	UserReceiptPositions(ctx context.Context, userID string, roomIDs []string) ([]storage.ReceiptPosition, error)
	UserMembershipHistories(ctx context.Context, userID string, roomIDs []string) (map[string][]storage.UserMembershipChange, error)
	RoomsEventsRange(ctx context.Context, from map[string]int64, to int64, limit int) (map[string][]*storage.Event, error)
	CurrentStateEventsInRooms(ctx context.Context, roomIDs []string, evType, stateKey string) (map[string]*storage.Event, error)
	JoinedMemberCounts(ctx context.Context, roomIDs []string) (map[string]int, error)
}

// Notifier wakes the /sync long-polls of the users a change concerns:
// *notifier.Notifier.
type Notifier interface {
	Notify(pos int64, users ...string)
}

// Options are what the module is built from.
type Options struct {
	Store    Store
	Stream   Stream
	Rooms    Rooms
	Notifier Notifier
	// AllowPrivateGateways admits pushers whose gateway is on a non-public
	// address (push.allow_private_gateways; development only).
	AllowPrivateGateways bool
	// Queue, when set, takes the notifications for push gateways
	// (*Delivery); QueueStore reads the pushers of a room and what the
	// recipients of an event need, for all of them at once. Without them
	// nothing is queued (pushers are only stored).
	Queue      Queue
	QueueStore QueueStore
}

// Service is the module.
type Service struct {
	db                   Store
	stream               Stream
	rooms                Rooms
	notifier             Notifier
	allowPrivateGateways bool
	queue                Queue
	queueStore           QueueStore
	badges               chan string // users whose badge count changed
	stop                 context.CancelFunc

	rulesMu  sync.Mutex
	rules    map[string]*cachedRules
	rulesGen map[string]int64

	unreadMu sync.Mutex
	unread   map[string]*unreadEntry // user\x00room → counts so far
}

// New builds the module. With a Queue it runs a goroutine for badge
// updates until Close.
func New(o Options) *Service {
	s := &Service{db: o.Store, stream: o.Stream, rooms: o.Rooms, notifier: o.Notifier,
		allowPrivateGateways: o.AllowPrivateGateways,
		rules:                map[string]*cachedRules{}, rulesGen: map[string]int64{}, unread: map[string]*unreadEntry{}}
	if o.Queue != nil && o.QueueStore != nil {
		s.queue, s.queueStore = o.Queue, o.QueueStore
		s.badges = make(chan string, 1024)
		var ctx context.Context
		ctx, s.stop = context.WithCancel(context.Background())
		go s.runBadges(ctx)
	}
	return s
}

// Close stops the badge updates.
func (s *Service) Close() {
	if s.stop != nil {
		s.stop()
	}
}
