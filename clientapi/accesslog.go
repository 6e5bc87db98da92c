package clientapi

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/myelin-chat/myelin/internal/authn"
	"github.com/myelin-chat/myelin/internal/mxhttp"
)

// accessLog logs one line per request at level (nil: off): method, route
// pattern, status, duration, user and a request ID, which the answer also
// carries as X-Request-Id so that a user's report can be matched to the
// line. The route pattern, not the path, is logged: paths and query strings
// carry access tokens (?access_token=), room aliases and search terms.
// Answers of 5xx are logged at error whatever the level.
func accessLog(level *slog.Level, next http.Handler) http.Handler {
	if level == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		reqID := newRequestID()
		w.Header().Set("X-Request-Id", reqID)
		ctx, who := authn.WithTracker(r.Context())
		sw := &accessWriter{ResponseWriter: w, status: http.StatusOK}
		defer func() {
			// Logged on the way out of a panic too (Middleware answers it with a 500).
			status := sw.status
			if mxhttp.ClientGone(r) {
				status = mxhttp.StatusClientClosedRequest // whatever was written, nobody read it
			}
			if v := recover(); v != nil {
				status = http.StatusInternalServerError
				defer panic(v)
			}
			lvl := *level
			if status >= 500 {
				lvl = slog.LevelError
			}
			user := ""
			if who.Device != nil {
				user = who.Device.UserID.String()
			}
			slog.Log(context.WithoutCancel(ctx), lvl, "request", "method", r.Method, "route", routePattern(r), "status", status,
				"duration_ms", time.Since(start).Milliseconds(), "user", user, "request_id", reqID)
		}()
		next.ServeHTTP(sw, r.WithContext(ctx))
	})
}

// routePattern is the chi pattern the request matched ("unmatched" if none).
func routePattern(r *http.Request) string {
	if rc := chi.RouteContext(r.Context()); rc != nil && rc.RoutePattern() != "" {
		return rc.RoutePattern()
	}
	return "unmatched"
}

// accessLogLevel parses logging.access_log; nil for off.
func accessLogLevel(s string) *slog.Level {
	var l slog.Level
	if s == "off" || l.UnmarshalText([]byte(s)) != nil {
		return nil
	}
	return &l
}

func newRequestID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// accessWriter records the status of the answer.
type accessWriter struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (w *accessWriter) WriteHeader(code int) {
	if !w.wrote {
		w.status, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *accessWriter) Write(b []byte) (int, error) {
	w.wrote = true
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the underlying writer (flushing, deadlines).
func (w *accessWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
