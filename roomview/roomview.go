// Package roomview is rooms as a client reads them: /messages, /context,
// /event, /state, /members, /joined_members, /joined_rooms, relations,
// threads, timestamp_to_event, the room summary and space hierarchy,
// server-side search and event reports. It reads the store only, never
// through the room writer (roomserver), and applies history visibility
// (visibility) for the reading user. Its failures are the roomserver's error
// kinds (roomserver.Error), which clientapi and the federation handlers map.
package roomview

import (
	"context"

	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/storage"
)

// Store is what the reads use of the store (*storage.DB).
type Store interface {
	GetRoom(ctx context.Context, roomID string) (*storage.RoomRow, error)
	ResolveAlias(ctx context.Context, alias string) (roomID, creator string, err error)
	GetEvent(ctx context.Context, eventID string) (*storage.Event, error)
	GetEvents(ctx context.Context, ids []string) (map[string]*storage.Event, error)
	ErasedUsers(ctx context.Context, userIDs []string) (map[string]bool, error) // clientevent.Store
	// EventsInStreamOrder is GetEvents as a list in stream order (a state's events).
	EventsInStreamOrder(ctx context.Context, ids []string) ([]*storage.Event, error)
	CurrentStateEvent(ctx context.Context, roomID, evType, stateKey string) (*storage.Event, error)
	CurrentStateEvents(ctx context.Context, roomID string) ([]*storage.Event, error)
	SnapshotState(ctx context.Context, snapshot int64) (storage.StateMap, error)
	StateAtPosition(ctx context.Context, roomID string, pos int64) (storage.StateMap, error)
	GetMembership(ctx context.Context, roomID, userID string) (*storage.Membership, error)
	RoomMembers(ctx context.Context, roomID string, memberships ...string) ([]storage.Membership, error)
	RoomsOfUser(ctx context.Context, userID string, memberships ...string) ([]storage.Membership, error)
	MemberCounts(ctx context.Context, roomID string) (joined, invited int, err error)
	// JoinedServers are the servers with joined members (the federation hierarchy's access check).
	JoinedServers(ctx context.Context, roomID string) ([]string, error)
	FirstMemberPosition(ctx context.Context, roomID string) (int64, error)
	MemberEventBefore(ctx context.Context, roomID, userID string, pos int64) (*storage.Event, error)
	UserMembershipHistory(ctx context.Context, roomID, userID string) ([]storage.UserMembershipChange, error)
	HistoryVisibilityChanges(ctx context.Context, roomID string) ([]storage.PositionedValue, error)
	IgnoredUsers(ctx context.Context, userID string) (map[string]bool, error)
	TopoPosAtStream(ctx context.Context, roomID string, pos int64) (storage.TopoPos, error)
	RoomEventsByTopology(ctx context.Context, roomID string, from storage.TopoPos, to *storage.TopoPos, backwards bool, limit int, streamRanges [][2]int64) ([]*storage.Event, error)
	Relations(ctx context.Context, roomID, eventID, relType, evType string, hops int, from int64, to *int64, backwards bool, limit int) ([]*storage.Event, error)
	ThreadRoots(ctx context.Context, roomID string, before int64, limit int) ([]*storage.Event, []int64, error)
	ThreadReplies(ctx context.Context, rootID string) ([]storage.ThreadReply, error)
	EventNearTimestamp(ctx context.Context, roomID string, ts int64, forwards bool) (*storage.Event, error)
	SearchEvents(ctx context.Context, q *storage.SearchQuery) ([]storage.SearchHit, error)
	CountSearch(ctx context.Context, q *storage.SearchQuery) (int, error)
	SearchRooms(ctx context.Context, q *storage.SearchQuery) (map[string]int, error)
	// AddReport records a user's report of an event or room for the admins.
	AddReport(ctx context.Context, roomID, eventID, reporter, reason string, score *int64, ts int64) error
	// KnownEvents reports which event IDs are stored (backfill: which prev_events we lack).
	KnownEvents(ctx context.Context, ids []string) (map[string]bool, error)
}

// Options are what the reads are built from.
type Options struct {
	Store Store
	// RemoteSpaces describes rooms of a space hierarchy this server does not
	// know (other servers' /hierarchy); nil: they are left out.
	RemoteSpaces RemoteSpaces
	// Backfill, when set (federation on), fetches history older than what
	// the server has from other servers when /messages reaches it.
	Backfill Backfiller
	// Timestamps, when set (federation on), asks other servers for the
	// event nearest a time when ours may lie in history we lack
	// (timestamp_to_event).
	Timestamps RemoteTimestamps
}

// Backfiller fetches from other servers the history that precedes events
// of a room we have but whose prev_events we lack (package backfill), and
// stores it (the roomserver's ImportBackfill). added: something was stored.
// roomview never calls the network itself: this and RemoteSpaces are its ways out.
type Backfiller interface {
	Backfill(ctx context.Context, roomID id.RoomID, from []id.EventID) (added bool, err error)
}

// Service answers the client reads of rooms.
type Service struct {
	db           Store
	remoteSpaces RemoteSpaces
	backfill     Backfiller
	timestamps   RemoteTimestamps
}

// New builds the service.
func New(o Options) *Service {
	return &Service{db: o.Store, remoteSpaces: o.RemoteSpaces, backfill: o.Backfill, timestamps: o.Timestamps}
}
