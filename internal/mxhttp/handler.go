package mxhttp

import (
	"net/http"
	"net/url"

	"github.com/go-chi/chi/v5"
)

// HandlerFunc is an HTTP handler that returns its error instead of writing it,
// so every error path gets the same Matrix error encoding.
type HandlerFunc func(w http.ResponseWriter, r *http.Request) error

// ServeHTTP implements http.Handler.
func (f HandlerFunc) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if err := f(w, r); err != nil {
		WriteError(w, r, err)
	}
}

// JSON wraps a handler that returns a value to encode with 200 OK.
func JSON(f func(r *http.Request) (any, error)) http.Handler {
	return HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		v, err := f(r)
		if err != nil {
			return err
		}
		WriteJSON(w, http.StatusOK, v)
		return nil
	})
}

// Empty is the {} body many endpoints answer with.
var Empty = struct{}{}

// EmptyOr is the answer of a handler for JSON whose operation returns only an
// error: {} on success, err otherwise.
func EmptyOr(err error) (any, error) {
	if err != nil {
		return nil, err
	}
	return Empty, nil
}

// PathParam is the URL path parameter name, percent-decoded exactly once.
// chi matches on the escaped path when the request carries one (r.URL.RawPath,
// e.g. "%23alias" or "!room%3Aserver"), and on the decoded path otherwise; only
// the former needs unescaping, so "%25" in a room ID stays a literal "%".
func PathParam(r *http.Request, name string) string {
	v := chi.URLParam(r, name)
	if r.URL.RawPath == "" {
		return v
	}
	if u, err := url.PathUnescape(v); err == nil {
		return u
	}
	return v
}
