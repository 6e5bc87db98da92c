package accounts

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"maunium.net/go/mautrix/id"

	"github.com/myelin-chat/myelin/internal/config"
	"github.com/myelin-chat/myelin/internal/mxhttp"
	"github.com/myelin-chat/myelin/storage"
)

// Auth stage types.
const (
	StagePassword          = "m.login.password"
	StageDummy             = "m.login.dummy"
	StageRegistrationToken = "m.login.registration_token"
)

// UIASessionLifetime bounds how long a user-interactive auth session stays usable.
const UIASessionLifetime = 15 * time.Minute

// UIAFlow is one sequence of stages that completes authentication.
type UIAFlow struct {
	Stages []string `json:"stages"`
}

// UIAChallenge is the spec's 401 answer: the flows, the session and the
// stages completed so far, with errcode/error when the last attempt failed.
type UIAChallenge struct {
	Flows     []UIAFlow
	Params    map[string]any
	Session   string
	Completed []string
	Err       *mxhttp.Error // nil when no attempt failed
}

func (c *UIAChallenge) Error() string {
	if c.Err != nil {
		return "user-interactive auth required: " + c.Err.Error()
	}
	return "user-interactive auth required"
}

// HTTPStatus makes the challenge an mxhttp.Responder: it is answered as 401
// with the body below.
func (c *UIAChallenge) HTTPStatus() int { return http.StatusUnauthorized }

// MarshalJSON writes the 401 body.
func (c *UIAChallenge) MarshalJSON() ([]byte, error) {
	body := map[string]any{"flows": c.Flows, "params": c.Params, "session": c.Session}
	if c.Params == nil {
		body["params"] = map[string]any{}
	}
	if len(c.Completed) > 0 {
		body["completed"] = c.Completed
	}
	if c.Err != nil {
		body["errcode"] = c.Err.Code
		body["error"] = c.Err.Message
	}
	return json.Marshal(body)
}

// UIARequest describes an operation guarded by user-interactive auth.
type UIARequest struct {
	// UserID is the authenticated user, or "" for registration.
	UserID id.UserID
	// Operation identifies the request (method + version-independent path):
	// a session only completes the operation it was opened for.
	Operation string
	Flows     []UIAFlow
	// Auth is the request's raw "auth" object (nil when absent).
	Auth json.RawMessage
}

// UIAResult is a completed authentication.
type UIAResult struct {
	Session string
	// RegistrationToken is set when a flow used m.login.registration_token.
	RegistrationToken string
}

type uiaAuth struct {
	Type       string `json:"type"`
	Session    string `json:"session"`
	Password   string `json:"password"`
	User       string `json:"user"` // deprecated form of identifier
	Token      string `json:"token"`
	Identifier *struct {
		Type string `json:"type"`
		User string `json:"user"`
	} `json:"identifier"`
}

// PasswordFlows are the flows for operations on an existing account.
func PasswordFlows() []UIAFlow { return []UIAFlow{{Stages: []string{StagePassword}}} }

// RegistrationFlows are the flows /register offers in the configured mode.
func (s *Service) RegistrationFlows() []UIAFlow {
	if s.cfg.Register.Mode == config.RegistrationToken {
		return []UIAFlow{{Stages: []string{StageRegistrationToken}}}
	}
	return []UIAFlow{{Stages: []string{StageDummy}}}
}

// AuthenticateUIA runs one round of user-interactive auth. It returns the
// result when a flow is complete; otherwise a *UIAChallenge (to be sent as
// 401), or an *mxhttp.Error for requests that are wrong in other ways.
func (s *Service) AuthenticateUIA(ctx context.Context, req UIARequest) (*UIAResult, error) {
	now := s.now()
	if len(req.Auth) == 0 || string(req.Auth) == "null" {
		sess, err := s.newUIASession(ctx, req, now)
		if err != nil {
			return nil, err
		}
		return nil, &UIAChallenge{Flows: req.Flows, Session: sess.SessionID}
	}
	var auth uiaAuth
	if err := mxhttp.DecodeJSON(req.Auth, &auth); err != nil {
		return nil, mxhttp.BadJSON("auth: %s", errMessage(err))
	}
	var sess *storage.UIASession
	if auth.Session == "" {
		var err error
		if sess, err = s.newUIASession(ctx, req, now); err != nil {
			return nil, err
		}
	} else {
		var err error
		sess, err = s.store.GetUIASession(ctx, auth.Session)
		if errors.Is(err, storage.ErrNotFound) || err == nil && now.Sub(time.UnixMilli(sess.CreatedTS)) > UIASessionLifetime {
			return nil, mxhttp.Unknown("Unknown or expired auth session %q", auth.Session).With("session", auth.Session)
		}
		if err != nil {
			return nil, err
		}
		if sess.Request != req.Operation || sess.UserID != req.UserID.String() {
			return nil, mxhttp.Forbidden("Requested operation has changed during the UI authentication session.")
		}
	}
	challenge := func(e *mxhttp.Error) error {
		return &UIAChallenge{Flows: req.Flows, Session: sess.SessionID, Completed: sess.Completed, Err: e}
	}
	if auth.Type != "" && !slices.Contains(sess.Completed, auth.Type) {
		if !nextStageAllowed(req.Flows, sess.Completed, auth.Type) {
			return nil, challenge(mxhttp.Forbidden("Auth stage %q is not the next stage of any flow", auth.Type))
		}
		switch auth.Type {
		case StagePassword:
			if req.UserID == "" {
				return nil, challenge(mxhttp.Forbidden("m.login.password is only for existing accounts"))
			}
			if err := s.checkUIAIdentifier(req.UserID, &auth); err != nil {
				// Authenticating as someone else is refused outright (403,
				// as Synapse does), not answered with another challenge.
				return nil, err
			}
			if err := s.checkUIAPassword(ctx, req.UserID, &auth); err != nil {
				var mErr *mxhttp.Error
				if errors.As(err, &mErr) && mErr.Code != "M_LIMIT_EXCEEDED" {
					return nil, challenge(mErr)
				}
				return nil, err // throttled: a plain 429, not a new challenge
			}
		case StageDummy:
		case StageRegistrationToken:
			ok, err := s.reserveRegistrationToken(ctx, sess, auth.Token)
			if err != nil {
				return nil, err
			}
			if !ok {
				return nil, challenge(mxhttp.Unauthorized("Invalid registration token"))
			}
		default:
			return nil, challenge(mxhttp.Forbidden("Unsupported auth stage %q", auth.Type))
		}
		sess.Completed = append(sess.Completed, auth.Type)
		if auth.Type != StageRegistrationToken { // reserveRegistrationToken stored it with the token
			if err := s.store.CompleteUIAStage(ctx, sess.SessionID, sess.Completed); err != nil {
				return nil, fmt.Errorf("recording UIA stage: %w", err)
			}
		}
	}
	for _, f := range req.Flows {
		if slices.Equal(f.Stages, sess.Completed) {
			return &UIAResult{Session: sess.SessionID, RegistrationToken: sess.RegistrationToken}, nil
		}
	}
	return nil, challenge(nil)
}

// ClaimUIA uses up a completed session before the operation it guards runs.
// The claim is atomic: of several requests presenting the same completed
// session at once, exactly one proceeds; the others get M_UNKNOWN as for an
// unknown session. A registration-token use stays pending until
// SettleRegistration.
func (s *Service) ClaimUIA(ctx context.Context, res *UIAResult) error {
	token, err := s.store.ClaimUIASession(ctx, res.Session)
	if errors.Is(err, storage.ErrNotFound) {
		return mxhttp.Unknown("Auth session %q was already used", res.Session).With("session", res.Session)
	}
	if err != nil {
		return fmt.Errorf("claiming UIA session: %w", err)
	}
	res.RegistrationToken = token
	return nil
}

// SettleRegistration ends the registration-token use a claimed session held:
// completed when the account was created, released when it was not.
func (s *Service) SettleRegistration(ctx context.Context, res *UIAResult, created bool) error {
	if res.RegistrationToken == "" {
		return nil
	}
	return s.store.SettleRegistrationToken(ctx, res.RegistrationToken, created)
}

func nextStageAllowed(flows []UIAFlow, completed []string, stage string) bool {
	for _, f := range flows {
		if len(f.Stages) > len(completed) && slices.Equal(f.Stages[:len(completed)], completed) && f.Stages[len(completed)] == stage {
			return true
		}
	}
	return false
}

func (s *Service) newUIASession(ctx context.Context, req UIARequest, now time.Time) (*storage.UIASession, error) {
	// Expired sessions are swept as new ones open; this also releases the
	// registration-token uses they held.
	if err := s.store.ExpireUIASessions(ctx, now.Add(-UIASessionLifetime).UnixMilli()); err != nil {
		return nil, fmt.Errorf("expiring UIA sessions: %w", err)
	}
	sess := &storage.UIASession{SessionID: randomString(24), UserID: req.UserID.String(), Request: req.Operation, CreatedTS: now.UnixMilli()}
	if err := s.store.CreateUIASession(ctx, *sess); err != nil {
		return nil, err
	}
	return sess, nil
}

// checkUIAIdentifier checks that the identifier of an m.login.password
// stage, if any, names the authenticated user.
func (s *Service) checkUIAIdentifier(userID id.UserID, auth *uiaAuth) error {
	user := auth.User
	if auth.Identifier != nil && auth.Identifier.Type == "m.id.user" {
		user = auth.Identifier.User
	}
	if user != "" && s.ResolveUser(user) != userID {
		return mxhttp.Forbidden("The identifier does not match the authenticated user")
	}
	return nil
}

// checkUIAPassword checks an m.login.password stage: the password must be
// the authenticated user's (checkUIAIdentifier checked whom it names).
func (s *Service) checkUIAPassword(ctx context.Context, userID id.UserID, auth *uiaAuth) error {
	if auth.Identifier != nil && auth.Identifier.Type != "m.id.user" {
		return mxhttp.Forbidden("Unsupported identifier type %q", auth.Identifier.Type)
	}
	if len(auth.Password) > maxPasswordBytes {
		return mxhttp.Forbidden("Invalid password")
	}
	if err := s.checkUserPassword(ctx, userID, auth.Password); err != nil {
		var mErr *mxhttp.Error
		if errors.As(err, &mErr) && mErr.Code == "M_FORBIDDEN" {
			return mxhttp.Forbidden("Invalid password")
		}
		return err
	}
	return nil
}

// ResolveUser accepts a full user ID or a bare localpart. Local user IDs are
// case-insensitive here (logins, UIA identifiers): localparts are registered
// in lower case, as Synapse does, so @Alice:server is @alice:server.
func (s *Service) ResolveUser(user string) id.UserID {
	if !strings.HasPrefix(user, "@") {
		return s.UserID(strings.ToLower(user))
	}
	localpart, server, ok := strings.Cut(user[1:], ":")
	if ok && server == s.cfg.ServerName {
		return s.UserID(strings.ToLower(localpart))
	}
	return id.UserID(user)
}

func errMessage(err error) string {
	var mErr *mxhttp.Error
	if errors.As(err, &mErr) {
		return mErr.Message
	}
	return err.Error()
}
