package clientapi

import (
	"errors"
	"net/http"

	"github.com/myelin-chat/myelin/internal/mxhttp"
	"github.com/myelin-chat/myelin/roomserver"
)

// roomErrorCodes are the Matrix errors the client API answers for the
// roomserver's kinds of failure. Specific kinds come before the general kinds
// they wrap (ErrInviteBlocked is also ErrForbidden).
var roomErrorCodes = []struct {
	kind   error
	status int
	code   string
}{
	{roomserver.ErrInviteBlocked, http.StatusForbidden, "ORG.MATRIX.MSC4155.INVITE_BLOCKED"},
	{roomserver.ErrNoticeRoomInvite, http.StatusForbidden, "M_CANNOT_LEAVE_SERVER_NOTICE_ROOM"},
	{roomserver.ErrUnableToAuthoriseJoin, http.StatusForbidden, "M_UNABLE_TO_AUTHORISE_JOIN"},
	{roomserver.ErrBadAlias, http.StatusBadRequest, "M_BAD_ALIAS"},
	{roomserver.ErrNotFound, http.StatusNotFound, "M_NOT_FOUND"},
	{roomserver.ErrForbidden, http.StatusForbidden, "M_FORBIDDEN"},
	{roomserver.ErrInvalidParam, http.StatusBadRequest, "M_INVALID_PARAM"},
	{roomserver.ErrBadJSON, http.StatusBadRequest, "M_BAD_JSON"},
	{roomserver.ErrNotJSON, http.StatusBadRequest, "M_NOT_JSON"},
	{roomserver.ErrTooLarge, http.StatusRequestEntityTooLarge, "M_TOO_LARGE"},
	{roomserver.ErrRoomInUse, http.StatusBadRequest, "M_ROOM_IN_USE"},
	{roomserver.ErrUnsupportedRoomVersion, http.StatusBadRequest, "M_UNSUPPORTED_ROOM_VERSION"},
	// PUT /directory/room/{alias} for an alias that exists: the spec's 409.
	{roomserver.ErrConflict, http.StatusConflict, "M_UNKNOWN"},
	// Forgetting a room before leaving it: the spec's 400 M_UNKNOWN.
	{roomserver.ErrInvalidState, http.StatusBadRequest, "M_UNKNOWN"},
	// Another server could not be asked (the spec names no code; Synapse's 502).
	{roomserver.ErrUnavailable, http.StatusBadGateway, "M_UNKNOWN"},
}

// roomError is the one place the roomserver's errors become Matrix errors
// (every handler calling the roomserver, or a module acting through it,
// passes its error here). The kind is the outermost roomserver error's: its
// cause may be of another kind. Errors of no roomserver kind (already Matrix
// errors, or internal ones answered 500) pass through unchanged.
func roomError(err error) error {
	if err == nil {
		return nil
	}
	kind, msg := err, err.Error()
	var rErr *roomserver.Error
	if errors.As(err, &rErr) {
		kind, msg = rErr.Kind, rErr.Message
	}
	for _, c := range roomErrorCodes {
		if errors.Is(kind, c.kind) {
			return &mxhttp.Error{Status: c.status, Code: c.code, Message: msg}
		}
	}
	return err
}

// roomResult maps the error of a roomserver call that returns a value.
func roomResult[T any](v T, err error) (T, error) {
	return v, roomError(err)
}
