package mxhttp

import "net/http"

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
