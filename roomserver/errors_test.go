package roomserver

import (
	"errors"
	"testing"

	"github.com/myelin-chat/myelin/internal/mxhttp"
)

// TestErrorKinds: a roomserver error is its kind (and the general kind a
// specific one wraps) under errors.Is, an *Error under errors.As, keeps the
// message the user reads and unwraps to its cause.
func TestErrorKinds(t *testing.T) {
	cause := errors.New("auth rule 4.1")
	err := Forbidden("Event not allowed: %w", cause)
	if !errors.Is(err, ErrForbidden) || errors.Is(err, ErrNotFound) || !errors.Is(err, cause) {
		t.Errorf("forbidden with cause: Is forbidden %v, not found %v, cause %v",
			errors.Is(err, ErrForbidden), errors.Is(err, ErrNotFound), errors.Is(err, cause))
	}
	var e *Error
	if !errors.As(err, &e) || e.Message != "Event not allowed: auth rule 4.1" || err.Error() != e.Message {
		t.Errorf("message %q", err.Error())
	}

	if !errors.Is(errInviteBlocked, ErrInviteBlocked) || !errors.Is(errInviteBlocked, ErrForbidden) {
		t.Error("an invite blocked is not also forbidden")
	}
	if errors.Is(Forbidden("x"), ErrInviteBlocked) {
		t.Error("forbidden is an invite blocked")
	}
	if err := unknownRoom(); !errors.Is(err, ErrUnknownRoom) || !errors.Is(err, ErrNotFound) || err.Error() != "Unknown room" {
		t.Errorf("unknown room: %v", err)
	}
}

// TestEventJSONError: the JSON checks shared with the HTTP edge answer the
// roomserver's kinds with their message.
func TestEventJSONError(t *testing.T) {
	for body, kind := range map[string]error{
		`{"a": 1.5}`: ErrBadJSON,
		`{"a": `:     ErrNotJSON,
	} {
		err := eventJSONError(mxhttp.CheckEventJSON([]byte(body)))
		var e *Error
		if !errors.As(err, &e) || e.Kind != kind || e.Message == "" {
			t.Errorf("%s: %v, want kind %v", body, err, kind)
		}
	}
	if eventJSONError(mxhttp.CheckEventJSON([]byte(`{"a": 1}`))) != nil {
		t.Error("good JSON refused")
	}
}
