// Package recovery turns a panic in one piece of work into an error for that
// piece of work, so that one bad event or request cannot take the whole
// process down. Every recovered panic is logged with its stack and counted in
// metrics.PanicsRecovered.
//
// Request handlers are covered by the HTTP middleware (which records its
// panics here too, as HTTPHandler); Call, Go and Func are for the calls and
// goroutines the middleware does not see: the auth rules, room workers,
// timers and fan-out goroutines.
package recovery

import (
	"fmt"
	"log/slog"
	"runtime/debug"

	"github.com/myelin-chat/myelin/internal/metrics"
)

// Where a panic was recovered: the label of metrics.PanicsRecovered. Keep
// the set small and fixed.
const (
	EventAuth     = "eventauth"
	RoomWorker    = "roomserver_worker"
	Notary        = "federation_notary"
	RemoteQuery   = "keyserver_remote_query"
	TypingTimer   = "typing_timer"
	PresenceTimer = "presence_timer"
	HTTPHandler   = "http_handler"
	Follower      = "follower"
)

// PanicError is what a recovered panic becomes.
type PanicError struct {
	Where string
	Value any
}

func (e *PanicError) Error() string { return fmt.Sprintf("panic in %s: %v", e.Where, e.Value) }

// Recovered logs and counts a panic value obtained from recover() and
// returns it as an error. Call it from the deferred function that called
// recover(); attrs are slog key-value pairs identifying the work (an event
// ID, a room).
func Recovered(where string, v any, attrs ...any) *PanicError {
	metrics.PanicsRecovered.WithLabelValues(where).Inc()
	args := append([]any{"where", where, "panic", v}, attrs...)
	args = append(args, "stack", string(debug.Stack()))
	slog.Error("recovered from a panic", args...)
	return &PanicError{Where: where, Value: v}
}

// Call runs fn and returns its error, or a *PanicError if it panicked.
func Call(where string, fn func() error, attrs ...any) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = Recovered(where, v, attrs...)
		}
	}()
	return fn()
}

// Go runs fn in a new goroutine; a panic in it is logged and counted instead
// of ending the process. fn must leave nothing waiting on it when it panics
// (release locks and answer channels in defers).
func Go(where string, fn func(), attrs ...any) {
	go func() { _ = Call(where, func() error { fn(); return nil }, attrs...) }()
}

// Func wraps fn so that a panic in it is recovered, for callbacks run on
// goroutines we do not start ourselves (time.AfterFunc).
func Func(where string, fn func(), attrs ...any) func() {
	return func() { _ = Call(where, func() error { fn(); return nil }, attrs...) }
}
