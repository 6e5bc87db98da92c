package mxhttp

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
)

// WriteJSON writes v as a JSON response with the given status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		slog.Error("encoding response", "err", err)
		status, body = http.StatusInternalServerError, []byte(`{"errcode":"M_UNKNOWN","error":"internal error encoding response"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// Responder is an error that is answered with its own JSON body and status
// rather than {"errcode", "error"}: a user-interactive auth challenge (401 with
// flows and session) is one.
type Responder interface {
	error
	HTTPStatus() int
}

// StatusClientClosedRequest is nginx's 499 "client closed request": the
// status the access log and the metrics record for a request whose client
// went away before the answer (no client ever sees it).
const StatusClientClosedRequest = 499

// ClientGone reports whether r's client cancelled it (closed the
// connection, gave up a long-poll): its context is canceled, not past a
// deadline the server set.
func ClientGone(r *http.Request) bool {
	return errors.Is(r.Context().Err(), context.Canceled)
}

// WriteError writes err as a Matrix error (or a Responder as itself). Other
// errors are logged and answered with a generic 500 so that internals never
// leak to clients; but when the client cancelled the request (the usual
// cause of such an error then is that cancellation), nothing is answered
// but 499 and it is logged at debug: not a server error.
func WriteError(w http.ResponseWriter, r *http.Request, err error) {
	var resp Responder
	if errors.As(err, &resp) {
		WriteJSON(w, resp.HTTPStatus(), resp)
		return
	}
	var mErr *Error
	if !errors.As(err, &mErr) && ClientGone(r) {
		slog.DebugContext(r.Context(), "request cancelled by the client", "method", r.Method, "path", r.URL.Path, "err", err)
		w.WriteHeader(StatusClientClosedRequest)
		return
	}
	if mErr == nil {
		slog.ErrorContext(r.Context(), "request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		mErr = Internal("Internal server error")
	}
	WriteJSON(w, mErr.Status, mErr)
}

// ReadJSON decodes the request body (already capped by the body-size middleware)
// into v. Not JSON at all gives M_NOT_JSON; JSON of the wrong shape gives M_BAD_JSON;
// a body over the cap gives M_TOO_LARGE. An empty body decodes as {}.
func ReadJSON(r *http.Request, v any) error {
	body, err := readBody(r)
	if err != nil {
		return err
	}
	return DecodeJSON(body, v)
}

// ReadRawJSON reads the request body for a handler that keeps it raw (account
// data, filters), after the same checks DecodeJSON makes (CheckJSON).
func ReadRawJSON(r *http.Request) (json.RawMessage, error) {
	body, err := readBody(r)
	if err != nil {
		return nil, err
	}
	if err := CheckJSON(body); err != nil {
		return nil, err
	}
	return body, nil
}

// readBody reads the raw request body: M_TOO_LARGE over the configured cap.
// Unexported so that every body a handler sees has been through CheckJSON.
func readBody(r *http.Request) ([]byte, error) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		var maxErr *http.MaxBytesError
		if errors.As(err, &maxErr) {
			return nil, TooLarge("Request body exceeds %d bytes", maxErr.Limit)
		}
		return nil, BadJSON("Could not read request body")
	}
	return body, nil
}

// DecodeJSON is ReadJSON for a body already in memory.
func DecodeJSON(body []byte, v any) error {
	if len(strings.TrimSpace(string(body))) == 0 {
		body = []byte("{}")
	}
	if err := CheckJSON(body); err != nil {
		return err
	}
	if err := json.Unmarshal(body, v); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) && typeErr.Field != "" {
			return BadJSON("Field %q has the wrong type: expected %s", typeErr.Field, typeErr.Type)
		}
		return BadJSON("Malformed JSON: %v", err)
	}
	return nil
}

// ReadJSONObject reads the body and requires a JSON object, returning it raw.
func ReadJSONObject(r *http.Request) (map[string]json.RawMessage, error) {
	var obj map[string]json.RawMessage
	if err := ReadJSON(r, &obj); err != nil {
		return nil, err
	}
	if obj == nil {
		return nil, BadJSON("Expected a JSON object")
	}
	return obj, nil
}

// HasNULEscape reports whether JSON text contains the escape \u0000 (a NUL
// inside a string). A backslash that is itself escaped ("\\u0000", the text
// "\u0000") does not count.
func HasNULEscape(body []byte) bool {
	for i := 0; ; {
		j := bytes.Index(body[i:], []byte(`u0000`))
		if j < 0 {
			return false
		}
		j += i
		backslashes := 0
		for k := j - 1; k >= 0 && body[k] == '\\'; k-- {
			backslashes++
		}
		if backslashes%2 == 1 {
			return true
		}
		i = j + 1
	}
}
