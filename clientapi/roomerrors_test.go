package clientapi

import (
	"errors"
	"fmt"
	"net/http"
	"testing"

	"github.com/myelin-chat/myelin/internal/mxhttp"
	"github.com/myelin-chat/myelin/roomserver"
)

// TestRoomErrorMapping: each roomserver kind answers the errcode and status
// the client API has always answered for it, with the error's own message.
func TestRoomErrorMapping(t *testing.T) {
	want := map[error]struct {
		status int
		code   string
	}{
		roomserver.ErrNotFound:               {http.StatusNotFound, "M_NOT_FOUND"},
		roomserver.ErrForbidden:              {http.StatusForbidden, "M_FORBIDDEN"},
		roomserver.ErrInvalidParam:           {http.StatusBadRequest, "M_INVALID_PARAM"},
		roomserver.ErrBadJSON:                {http.StatusBadRequest, "M_BAD_JSON"},
		roomserver.ErrNotJSON:                {http.StatusBadRequest, "M_NOT_JSON"},
		roomserver.ErrTooLarge:               {http.StatusRequestEntityTooLarge, "M_TOO_LARGE"},
		roomserver.ErrRoomInUse:              {http.StatusBadRequest, "M_ROOM_IN_USE"},
		roomserver.ErrConflict:               {http.StatusConflict, "M_UNKNOWN"},
		roomserver.ErrUnsupportedRoomVersion: {http.StatusBadRequest, "M_UNSUPPORTED_ROOM_VERSION"},
		roomserver.ErrInvalidState:           {http.StatusBadRequest, "M_UNKNOWN"},
		roomserver.ErrUnavailable:            {http.StatusBadGateway, "M_UNKNOWN"},
		roomserver.ErrInviteBlocked:          {http.StatusForbidden, "ORG.MATRIX.MSC4155.INVITE_BLOCKED"},
		roomserver.ErrBadAlias:               {http.StatusBadRequest, "M_BAD_ALIAS"},
		roomserver.ErrNoticeRoomInvite:       {http.StatusForbidden, "M_CANNOT_LEAVE_SERVER_NOTICE_ROOM"},
		roomserver.ErrUnableToAuthoriseJoin:  {http.StatusForbidden, "M_UNABLE_TO_AUTHORISE_JOIN"},
	}
	if len(want) != len(roomErrorCodes) {
		t.Errorf("%d kinds mapped, %d tested", len(roomErrorCodes), len(want))
	}
	for kind, w := range want {
		// As the roomserver returns it, and wrapped by a module on the way (servernotices).
		err := &roomserver.Error{Kind: kind, Message: "the message"}
		for _, in := range []error{err, fmt.Errorf("sending a notice: %w", err)} {
			var m *mxhttp.Error
			if !errors.As(roomError(in), &m) || m.Status != w.status || m.Code != w.code || m.Message != "the message" {
				t.Errorf("%v: got %+v, want %d %s", kind, m, w.status, w.code)
			}
		}
	}
}

// TestRoomErrorPassesOthersThrough: no error stays no error; Matrix errors
// (reads not converted yet, other modules) and internal errors (answered 500
// by mxhttp.WriteError) are unchanged; the outermost kind wins over its cause's.
func TestRoomErrorPassesOthersThrough(t *testing.T) {
	if roomError(nil) != nil {
		t.Error("nil mapped to an error")
	}
	mx := mxhttp.NotFound("Event not found")
	internal := errors.New("database is locked")
	for _, err := range []error{mx, internal} {
		if got := roomError(err); got != err {
			t.Errorf("%v became %v", err, got)
		}
	}
	outer := &roomserver.Error{Kind: roomserver.ErrInvalidParam, Message: "Cannot create room"}
	var m *mxhttp.Error
	if !errors.As(roomError(outer), &m) || m.Code != "M_INVALID_PARAM" {
		t.Errorf("got %+v", m)
	}
	if !errors.As(roomError(roomserver.ErrForbidden), &m) || m.Code != "M_FORBIDDEN" {
		t.Errorf("a bare kind: got %+v", m)
	}
}
