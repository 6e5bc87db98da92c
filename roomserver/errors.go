package roomserver

import (
	"errors"
	"fmt"

	"github.com/myelin-chat/myelin/internal/mxhttp"
)

// The kinds of failure the roomserver, and the room modules beside it
// (roomview, directory), report to their callers. Each caller
// maps them to its own answer: clientapi to Matrix errcodes (clientapi's
// roomError), the federation handlers to theirs. Test with errors.Is; the
// human message is in an *Error. A specific kind wraps a general one, so a
// caller with no answer of its own for ErrInviteBlocked still sees ErrForbidden.
var (
	ErrNotFound               = errors.New("not found")
	ErrForbidden              = errors.New("forbidden")
	ErrInvalidParam           = errors.New("invalid parameter")
	ErrBadJSON                = errors.New("bad JSON")
	ErrNotJSON                = errors.New("not JSON")
	ErrTooLarge               = errors.New("too large")
	ErrRoomInUse              = errors.New("room alias in use")
	ErrConflict               = errors.New("already exists")
	ErrUnsupportedRoomVersion = errors.New("unsupported room version")
	// ErrInvalidState refuses an operation the user's current state in the
	// room does not allow (forgetting a room before leaving it).
	ErrInvalidState = errors.New("not allowed in the current state")
	// ErrUnavailable: another server the answer depends on could not be
	// asked or answered nonsense (a remote alias, a remote directory).
	ErrUnavailable = errors.New("remote server unavailable")

	ErrInviteBlocked = fmt.Errorf("invite blocked by the invitee: %w", ErrForbidden)
	// ErrBadAlias: an m.room.canonical_alias naming an alias that does not
	// point to the room.
	ErrBadAlias = fmt.Errorf("bad alias: %w", ErrInvalidParam)
	// ErrNoticeRoomInvite: a server notices invite cannot be rejected.
	ErrNoticeRoomInvite = fmt.Errorf("server notices invite: %w", ErrForbidden)
	// ErrUnableToAuthoriseJoin: a restricted join no local member can authorise.
	ErrUnableToAuthoriseJoin = fmt.Errorf("unable to authorise join: %w", ErrForbidden)
	// ErrUnknownRoom: the server has no state for the room (RoomVersion). The
	// writer answers it as not found; the reads turn it into M_FORBIDDEN (the
	// spec's answer for a room the user is not in) or their own not found.
	ErrUnknownRoom = fmt.Errorf("unknown room: %w", ErrNotFound)
)

// Error is a failure of one kind (one of the Err* sentinels) with the message
// for the user; Unwrap gives the lower error that caused it, if any.
type Error struct {
	Kind    error
	Message string
	cause   error
}

func (e *Error) Error() string { return e.Message }

// Is reports whether target is the error's kind or a kind it wraps.
func (e *Error) Is(target error) bool { return errors.Is(e.Kind, target) }

// Unwrap returns the cause, if the message was made with %w.
func (e *Error) Unwrap() error { return e.cause }

// NewError makes an *Error of kind; format and args are as fmt.Errorf's, a %w
// naming the cause. Without args the format is the message as is.
func NewError(kind error, format string, args ...any) *Error {
	if len(args) == 0 {
		return &Error{Kind: kind, Message: format}
	}
	err := fmt.Errorf(format, args...)
	return &Error{Kind: kind, Message: err.Error(), cause: errors.Unwrap(err)}
}

// NotFound, Forbidden, InvalidParam, BadJSON and TooLarge make an *Error of
// their kind, for the roomserver and the room modules beside it (roomview,
// directory); format and args are as NewError's.
func NotFound(format string, args ...any) error  { return NewError(ErrNotFound, format, args...) }
func Forbidden(format string, args ...any) error { return NewError(ErrForbidden, format, args...) }
func InvalidParam(format string, args ...any) error {
	return NewError(ErrInvalidParam, format, args...)
}
func BadJSON(format string, args ...any) error  { return NewError(ErrBadJSON, format, args...) }
func TooLarge(format string, args ...any) error { return NewError(ErrTooLarge, format, args...) }
func Unavailable(format string, args ...any) error {
	return NewError(ErrUnavailable, format, args...)
}

// eventJSONError converts the JSON checks the roomserver shares with the
// HTTP edge (mxhttp.CheckEventJSON, which answers *mxhttp.Error) into the
// roomserver's kinds, keeping the message and the check's error as the cause.
func eventJSONError(err error) error {
	var mErr *mxhttp.Error
	if !errors.As(err, &mErr) {
		return err
	}
	kind := ErrBadJSON
	switch mErr.Code {
	case "M_NOT_JSON":
		kind = ErrNotJSON
	case "M_TOO_LARGE":
		kind = ErrTooLarge
	}
	return &Error{Kind: kind, Message: mErr.Message, cause: err}
}
