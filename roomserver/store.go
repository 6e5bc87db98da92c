package roomserver

import (
	"context"
	"encoding/json"

	"github.com/myelin-chat/myelin/storage"
)

// Store is what the roomserver uses of the store (*storage.DB): the rooms it
// writes (WriteRoomEvents) and the state, memberships, aliases and
// transaction IDs the writer and the room-state reads consult.
type Store interface {
	GetRoom(ctx context.Context, roomID string) (*storage.RoomRow, error)
	MaxSnapshotID(ctx context.Context) (int64, error)
	SnapshotState(ctx context.Context, snapshot int64) (storage.StateMap, error)
	CurrentStateEvents(ctx context.Context, roomID string) ([]*storage.Event, error)
	GetEvent(ctx context.Context, eventID string) (*storage.Event, error)
	GetEvents(ctx context.Context, ids []string) (map[string]*storage.Event, error)
	GetMembership(ctx context.Context, roomID, userID string) (*storage.Membership, error)
	JoinedServers(ctx context.Context, roomID string) ([]string, error)
	Heroes(ctx context.Context, roomID, userID string, limit int) ([]string, error)
	RoomsOfUser(ctx context.Context, userID string, memberships ...string) ([]storage.Membership, error)
	ForgetRoom(ctx context.Context, roomID, userID string) error
	LookupTxn(ctx context.Context, userID, deviceID, txnID string) (roomID, eventID string, err error)
	// WriteRoomEvents commits a batch of a room's events (the writer's one write).
	WriteRoomEvents(ctx context.Context, w *storage.RoomWrite) error
	// InsertHistoricalEvents stores backfilled history below everything (ImportBackfill).
	InsertHistoricalEvents(ctx context.Context, roomID string, events []storage.Event) ([]storage.Event, error)
	// RedactionTargets: the events a room's stored redactions name (backfilled ones are stored redacted).
	RedactionTargets(ctx context.Context, roomID string) (map[string]string, error)

	// Aliases and the directory flag of rooms being created or upgraded.
	ResolveAlias(ctx context.Context, alias string) (roomID, creator string, err error)
	CreateAlias(ctx context.Context, alias, roomID, creator string) error
	MoveAliases(ctx context.Context, fromRoom, toRoom string) error
	SetRoomPublic(ctx context.Context, roomID string, public bool) error

	// The invitee's invite filter (account data) and profile (for member events).
	GetAccountData(ctx context.Context, userID, roomID, typ string) (json.RawMessage, error)
	GetUser(ctx context.Context, userID string) (*storage.User, error)

	// Out-of-band memberships (outofband.go).
	WriteOutOfBand(ctx context.Context, e *storage.Event, roomVersion string) error
	LatestOutOfBand(ctx context.Context, roomID, userID string) (*storage.OutOfBand, error)
	WriteOutOfBandUnjoined(ctx context.Context, e *storage.Event, roomVersion, server string) error
	OutOfBandEventIDs(ctx context.Context, roomID string) ([]string, error)
}

// Stream allocates positions in the one stream (*storage.Stream): a batch
// of n events takes n positions, finished once committed.
type Stream interface {
	AllocateN(n int) (first int64, finish func(), err error)
}
