// Package mxhttp holds what every Matrix HTTP handler shares: the standard error
// type with its errcodes, JSON request decoding and response encoding.
package mxhttp

import (
	"encoding/json"
	"fmt"
	"net/http"
)

// Error is a Matrix standard error response: {"errcode": ..., "error": ...}.
// Extra fields (retry_after_ms, soft_logout, UIA flows...) go in Extra.
type Error struct {
	Status  int
	Code    string
	Message string
	Extra   map[string]any
}

func (e *Error) Error() string { return fmt.Sprintf("%s (%d): %s", e.Code, e.Status, e.Message) }

// MarshalJSON writes the error in the shape clients expect.
func (e *Error) MarshalJSON() ([]byte, error) {
	body := make(map[string]any, len(e.Extra)+2)
	for k, v := range e.Extra {
		body[k] = v
	}
	body["errcode"] = e.Code
	body["error"] = e.Message
	return json.Marshal(body)
}

// With returns a copy of the error carrying an extra top-level field.
func (e *Error) With(key string, value any) *Error {
	c := *e
	c.Extra = make(map[string]any, len(e.Extra)+1)
	for k, v := range e.Extra {
		c.Extra[k] = v
	}
	c.Extra[key] = value
	return &c
}

func newErr(status int, code string) func(format string, args ...any) *Error {
	return func(format string, args ...any) *Error {
		msg := format
		if len(args) > 0 {
			msg = fmt.Sprintf(format, args...)
		}
		return &Error{Status: status, Code: code, Message: msg}
	}
}

// Constructors for the errcodes of the client-server and server-server APIs.
var (
	Forbidden          = newErr(http.StatusForbidden, "M_FORBIDDEN")
	UnknownToken       = newErr(http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
	MissingToken       = newErr(http.StatusUnauthorized, "M_MISSING_TOKEN")
	Unauthorized       = newErr(http.StatusUnauthorized, "M_UNAUTHORIZED")
	BadJSON            = newErr(http.StatusBadRequest, "M_BAD_JSON")
	NotJSON            = newErr(http.StatusBadRequest, "M_NOT_JSON")
	NotFound           = newErr(http.StatusNotFound, "M_NOT_FOUND")
	LimitExceeded      = newErr(http.StatusTooManyRequests, "M_LIMIT_EXCEEDED")
	Unrecognized       = newErr(http.StatusNotFound, "M_UNRECOGNIZED")
	Unknown            = newErr(http.StatusBadRequest, "M_UNKNOWN")
	UserInUse          = newErr(http.StatusBadRequest, "M_USER_IN_USE")
	InvalidUsername    = newErr(http.StatusBadRequest, "M_INVALID_USERNAME")
	RoomInUse          = newErr(http.StatusBadRequest, "M_ROOM_IN_USE")
	InvalidRoomState   = newErr(http.StatusBadRequest, "M_INVALID_ROOM_STATE")
	UnsupportedRoomVer = newErr(http.StatusBadRequest, "M_UNSUPPORTED_ROOM_VERSION")
	IncompatibleRoomV  = newErr(http.StatusBadRequest, "M_INCOMPATIBLE_ROOM_VERSION")
	BadState           = newErr(http.StatusBadRequest, "M_BAD_STATE")
	GuestAccessForbid  = newErr(http.StatusForbidden, "M_GUEST_ACCESS_FORBIDDEN")
	MissingParam       = newErr(http.StatusBadRequest, "M_MISSING_PARAM")
	InvalidParam       = newErr(http.StatusBadRequest, "M_INVALID_PARAM")
	TooLarge           = newErr(http.StatusRequestEntityTooLarge, "M_TOO_LARGE")
	Exclusive          = newErr(http.StatusBadRequest, "M_EXCLUSIVE")
	UserDeactivated    = newErr(http.StatusForbidden, "M_USER_DEACTIVATED")
	WeakPassword       = newErr(http.StatusBadRequest, "M_WEAK_PASSWORD")
	ServerNotTrusted   = newErr(http.StatusBadRequest, "M_SERVER_NOT_TRUSTED")
	WrongRoomKeysVer   = newErr(http.StatusForbidden, "M_WRONG_ROOM_KEYS_VERSION")
	ResourceLimit      = newErr(http.StatusForbidden, "M_RESOURCE_LIMIT_EXCEEDED")
	CannotLeaveServerN = newErr(http.StatusForbidden, "M_CANNOT_LEAVE_SERVER_NOTICE_ROOM")
	UnableToAuthorize  = newErr(http.StatusBadRequest, "M_UNABLE_TO_AUTHORISE_JOIN") // federation make_join/send_join: 400
	UnableToGrant      = newErr(http.StatusBadRequest, "M_UNABLE_TO_GRANT_JOIN")
	NotYetUploaded     = newErr(http.StatusGatewayTimeout, "M_NOT_YET_UPLOADED")
	CannotOverwrite    = newErr(http.StatusConflict, "M_CANNOT_OVERWRITE_MEDIA")
	InvalidSignature   = newErr(http.StatusBadRequest, "M_INVALID_SIGNATURE")
	Internal           = newErr(http.StatusInternalServerError, "M_UNKNOWN")
)

// MethodNotAllowed is the spec's answer to a known path with the wrong method.
func MethodNotAllowed() *Error {
	return &Error{Status: http.StatusMethodNotAllowed, Code: "M_UNRECOGNIZED", Message: "Unrecognized request method"}
}
