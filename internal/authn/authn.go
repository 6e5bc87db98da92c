// Package authn authenticates client requests by access token and carries the
// authenticated device in the request context.
package authn

import (
	"context"
	"net/http"
	"strings"

	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/internal/mxhttp"
)

// Device is the authenticated caller.
type Device struct {
	UserID   id.UserID
	DeviceID id.DeviceID
	IsAdmin  bool
}

// Verifier resolves an access token to its device. It returns an *mxhttp.Error
// (M_UNKNOWN_TOKEN, with soft_logout for expired tokens) when the token is not valid.
type Verifier interface {
	VerifyAccessToken(ctx context.Context, token string) (*Device, error)
}

type ctxKey struct{}

type trackerKey struct{}

// Tracker lets a handler outside authentication (the access log) learn whom
// a request authenticated as: WithDevice records the device in it.
type Tracker struct{ Device *Device }

// WithTracker returns ctx carrying a new Tracker.
func WithTracker(ctx context.Context) (context.Context, *Tracker) {
	t := &Tracker{}
	return context.WithValue(ctx, trackerKey{}, t), t
}

// WithDevice returns ctx carrying d.
func WithDevice(ctx context.Context, d *Device) context.Context {
	if t, ok := ctx.Value(trackerKey{}).(*Tracker); ok {
		t.Device = d
	}
	return context.WithValue(ctx, ctxKey{}, d)
}

// FromContext returns the authenticated device, or nil on unauthenticated routes.
func FromContext(ctx context.Context) *Device {
	d, _ := ctx.Value(ctxKey{}).(*Device)
	return d
}

// FromRequest is FromContext(r.Context()): the caller of an authenticated route.
func FromRequest(r *http.Request) *Device { return FromContext(r.Context()) }

// TokenFromRequest extracts the access token from the Authorization header or
// the deprecated access_token query parameter.
func TokenFromRequest(r *http.Request) (string, bool) {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, token, ok := strings.Cut(h, " ")
		if ok && strings.EqualFold(scheme, "Bearer") && token != "" {
			return strings.TrimSpace(token), true
		}
		return "", false
	}
	if t := r.URL.Query().Get("access_token"); t != "" {
		return t, true
	}
	return "", false
}

// Require rejects requests without a valid access token: M_MISSING_TOKEN when
// none is given, M_UNKNOWN_TOKEN when it is not valid.
func Require(v Verifier) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			token, ok := TokenFromRequest(r)
			if !ok {
				mxhttp.WriteError(w, r, mxhttp.MissingToken("Missing access token"))
				return
			}
			dev, err := v.VerifyAccessToken(r.Context(), token)
			if err != nil {
				mxhttp.WriteError(w, r, err)
				return
			}
			next.ServeHTTP(w, r.WithContext(WithDevice(r.Context(), dev)))
		})
	}
}

// Optional serves endpoints whose authentication the spec makes optional:
// without a token the request goes on with no device in its context; with
// one, the token must be valid (M_UNKNOWN_TOKEN otherwise) and the device is
// carried as with Require.
func Optional(v Verifier) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			token, ok := TokenFromRequest(r)
			if !ok {
				if r.Header.Get("Authorization") != "" {
					// A malformed Authorization header is not "no token".
					mxhttp.WriteError(w, r, mxhttp.MissingToken("Malformed Authorization header"))
					return
				}
				next.ServeHTTP(w, r)
				return
			}
			dev, err := v.VerifyAccessToken(r.Context(), token)
			if err != nil {
				mxhttp.WriteError(w, r, err)
				return
			}
			next.ServeHTTP(w, r.WithContext(WithDevice(r.Context(), dev)))
		})
	}
}
