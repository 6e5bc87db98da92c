package accounts

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/internal/mxhttp"
	"github.com/myelin-chat/myelin/storage"
)

// serverManagedAccountData are types clients may read but not set (spec:
// "Servers MUST reject setting account data for event types that the server
// manages"); m.fully_read goes through /read_markers, m.push_rules through /pushrules.
var serverManagedAccountData = map[string]bool{"m.fully_read": true, "m.push_rules": true}

const maxAccountDataTypeBytes = 255

// Bounds on what a client stores as account data. Every initial /sync (and
// sliding sync's account_data extension) loads and sends all of a user's
// entries: 30 entries of 9 MB made one initial sync peak at 2 GB of memory.
// The largest real entries (m.direct, m.ignored_user_list) hold about 100
// bytes per room or user. The total is counted in characters.
const (
	maxAccountDataBytes = 1 << 20 // one entry
	maxAccountDataTotal = 8 << 20 // all of a user's entries, global and per room
)

// SetAccountData stores an account data entry (roomID "" for global), which
// must be a JSON object, and wakes the user's /sync.
func (s *Service) SetAccountData(ctx context.Context, userID id.UserID, roomID id.RoomID, typ string, content json.RawMessage) error {
	if serverManagedAccountData[typ] {
		return &mxhttp.Error{Status: 405, Code: "M_BAD_JSON", Message: fmt.Sprintf("Cannot set %s through this API.", typ)}
	}
	if len(content) > maxAccountDataBytes {
		return mxhttp.TooLarge("Account data entries may hold at most %d bytes", maxAccountDataBytes)
	}
	others, err := s.store.AccountDataSize(ctx, userID.String(), string(roomID), typ)
	if err != nil {
		return err
	}
	if others+int64(len(content)) > maxAccountDataTotal {
		return mxhttp.TooLarge("A user's account data may hold at most %d bytes", maxAccountDataTotal)
	}
	return s.PutAccountData(ctx, userID, roomID, typ, content)
}

// PutAccountData stores an entry without the client-facing type restriction:
// the read-markers and push-rules handlers use it for m.fully_read and
// m.push_rules. It takes a stream position and notifies after commit.
func (s *Service) PutAccountData(ctx context.Context, userID id.UserID, roomID id.RoomID, typ string, content json.RawMessage) error {
	if typ == "" || len(typ) > maxAccountDataTypeBytes {
		return mxhttp.InvalidParam("Account data type must be 1 to %d bytes", maxAccountDataTypeBytes)
	}
	if roomID != "" && (len(roomID) < 2 || roomID[0] != '!') {
		return mxhttp.InvalidParam("%q is not a valid room ID", roomID)
	}
	var obj map[string]json.RawMessage
	if err := mxhttp.DecodeJSON(content, &obj); err != nil {
		return err
	}
	if obj == nil {
		return mxhttp.BadJSON("Account data content must be a JSON object")
	}
	pos, finish, err := s.store.AllocateStreamPos()
	if err != nil {
		return err
	}
	err = s.store.PutAccountData(ctx, userID.String(), string(roomID), typ, content, pos)
	finish()
	if err != nil {
		return err
	}
	if s.notifier != nil {
		s.notifier.Notify(pos, userID.String())
	}
	return nil
}

// GetAccountData returns an entry's content; M_NOT_FOUND if there is none.
func (s *Service) GetAccountData(ctx context.Context, userID id.UserID, roomID id.RoomID, typ string) (json.RawMessage, error) {
	if roomID != "" && (len(roomID) < 2 || roomID[0] != '!') {
		return nil, mxhttp.InvalidParam("%q is not a valid room ID", roomID)
	}
	c, err := s.store.GetAccountData(ctx, userID.String(), string(roomID), typ)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, mxhttp.NotFound("No account data of type %q", typ)
	}
	return c, err
}

// AccountDataSince returns the user's account data changed in the stream
// range (fromPos, toPos], global entries with RoomID "". For /sync.
func (s *Service) AccountDataSince(ctx context.Context, userID id.UserID, fromPos, toPos int64) ([]storage.AccountData, error) {
	return s.store.AccountDataSince(ctx, userID.String(), fromPos, toPos)
}

// MaxFilterBytes bounds a stored filter. Filters keep unknown keys (they are
// returned as uploaded), so the bound is on the text: the largest real one (a
// few hundred room IDs in a list) is far below it.
const MaxFilterBytes = 64 << 10

// CreateFilter validates and stores a filter, returning its ID.
func (s *Service) CreateFilter(ctx context.Context, userID id.UserID, raw []byte) (string, error) {
	if len(raw) > MaxFilterBytes {
		return "", mxhttp.TooLarge("A filter may be at most %d bytes", MaxFilterBytes)
	}
	if _, err := ParseFilter(raw); err != nil {
		return "", err
	}
	// Store it compacted: it is returned as uploaded, minus whitespace.
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return "", mxhttp.BadJSON("Malformed filter")
	}
	n, err := s.store.CreateFilter(ctx, userID.String(), buf.Bytes())
	if err != nil {
		return "", err
	}
	return strconv.FormatInt(n, 10), nil
}

// GetFilterJSON returns a stored filter as uploaded; M_NOT_FOUND if unknown.
func (s *Service) GetFilterJSON(ctx context.Context, userID id.UserID, filterID string) (json.RawMessage, error) {
	n, err := strconv.ParseInt(filterID, 10, 64)
	if err != nil || n < 0 {
		return nil, mxhttp.NotFound("Unknown filter")
	}
	f, err := s.store.GetFilter(ctx, userID.String(), n)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, mxhttp.NotFound("Unknown filter")
	}
	return f, err
}

// LoadFilter returns a stored filter parsed, for /sync's filter=<id>.
func (s *Service) LoadFilter(ctx context.Context, userID id.UserID, filterID string) (*mautrix.Filter, error) {
	raw, err := s.GetFilterJSON(ctx, userID, filterID)
	if err != nil {
		return nil, err
	}
	return ParseFilter(raw)
}
