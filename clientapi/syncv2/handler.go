package syncv2

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/myelin-chat/myelin/ephemeral"
	"github.com/myelin-chat/myelin/internal/authn"
	"github.com/myelin-chat/myelin/internal/mxhttp"
)

// testHookBeforeWait, when set by a test, runs between a long-poll's first
// read and its wait (the window a lost wake-up would fall into).
var testHookBeforeWait func()

// maxTimeout caps a long-poll, so that proxies and clients do not time out first.
const maxTimeout = 5 * time.Minute

// ServeHTTP answers GET /sync.
func (s *Syncer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	resp, err := s.handle(r)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, resp)
}

func (s *Syncer) handle(r *http.Request) (*Response, error) {
	ctx := r.Context()
	dev := authn.FromContext(ctx)
	q := r.URL.Query()
	req := &Request{UserID: dev.UserID.String(), DeviceID: dev.DeviceID.String()}

	if since := q.Get("since"); since != "" {
		t, err := ParseToken(since)
		if err != nil {
			return nil, err
		}
		if t.Pos > s.stream.Current() {
			return nil, mxhttp.InvalidParam("since token is from the future")
		}
		req.Since, req.sinceParam = t, since
	} else {
		req.Initial = true
	}
	timeout := time.Duration(0)
	if v := q.Get("timeout"); v != "" {
		ms, err := strconv.ParseInt(v, 10, 64)
		if err != nil || ms < 0 {
			return nil, mxhttp.InvalidParam("timeout must be a non-negative integer (milliseconds)")
		}
		timeout = min(time.Duration(ms)*time.Millisecond, maxTimeout)
	}
	var err error
	if req.FullState, err = boolParam(q, "full_state"); err != nil {
		return nil, err
	}
	if req.UseStateAfter, err = boolParam(q, "use_state_after"); err != nil {
		return nil, err
	}
	setPresence := q.Get("set_presence")
	if setPresence == "" {
		setPresence = ephemeral.PresenceOnline
	}
	if !ephemeral.ValidPresence(setPresence) {
		return nil, mxhttp.InvalidParam("set_presence must be online, offline or unavailable")
	}
	filter, err := s.loadFilter(ctx, req.UserID, q.Get("filter"))
	if err != nil {
		return nil, err
	}
	req.Filter = filter

	// "offline" only means: don't mark the user online by syncing.
	if setPresence != ephemeral.PresenceOffline {
		if err := s.ephemeral.SetPresence(ctx, req.UserID, setPresence, nil, false); err != nil {
			return nil, err
		}
	}
	// Lazy-loaded members the device was sent count only along one token chain.
	s.lazy.check(req.DeviceKey(), req.sinceParam)
	resp, err := s.Sync(ctx, req, timeout)
	if err != nil {
		s.lazy.forget(req.DeviceKey())
		return nil, err
	}
	s.lazy.issued(req.DeviceKey(), resp.NextBatch)
	return resp, nil
}

// boolParam is an optional true/false query parameter.
func boolParam(q url.Values, name string) (bool, error) {
	switch q.Get(name) {
	case "", "false":
		return false, nil
	case "true":
		return true, nil
	}
	return false, mxhttp.InvalidParam("%s must be true or false", name)
}

func (s *Syncer) loadFilter(ctx context.Context, userID, param string) (*Filter, error) {
	if param == "" {
		return &Filter{}, nil
	}
	if strings.HasPrefix(strings.TrimSpace(param), "{") {
		return ParseFilter(param)
	}
	n, err := strconv.ParseInt(param, 10, 64)
	if err != nil {
		return nil, mxhttp.InvalidParam("No filter with ID %q", param)
	}
	raw, err := s.store.GetFilter(ctx, userID, n)
	if isNotFound(err) {
		return nil, mxhttp.InvalidParam("No filter with ID %q", param)
	}
	if err != nil {
		return nil, fmt.Errorf("reading filter %s: %w", param, err)
	}
	return parseStoredFilter(raw)
}

// Sync answers one request: at once when there is something after its token
// (or it is an initial or full-state sync), otherwise when the notifier says
// something arrived, or empty at the timeout.
func (s *Syncer) Sync(ctx context.Context, req *Request, timeout time.Duration) (*Response, error) {
	// The wake mark before the typing serial: a typing change after the read
	// wakes the wait below even if it lands before the wait begins.
	mark := s.notifier.WakeMark()
	to := s.current()
	resp, err := s.build(ctx, req, to)
	if err != nil || req.Initial || req.FullState || timeout == 0 || resp.hasUpdates() {
		return resp, err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if testHookBeforeWait != nil {
		testHookBeforeWait()
	}
	for {
		// Wake-ups are per user: anything after `to` that concerns them, or typing.
		if !s.notifier.WaitMarked(ctx, req.UserID, to.Pos, mark) {
			return resp, nil
		}
		mark = s.notifier.WakeMark()
		next := s.current()
		if next == to {
			continue // a wake-up for something not yet readable; wait again
		}
		r, err := s.build(ctx, req, next)
		if err != nil {
			if ctx.Err() != nil {
				return resp, nil // timed out mid-build: answer with what we had
			}
			return nil, err
		}
		resp, to = r, next
		if resp.hasUpdates() {
			return resp, nil
		}
	}
}

func (s *Syncer) current() Token {
	// The typing serial first: a change after it is reported again next time
	// rather than lost.
	typing := s.ephemeral.TypingSerial()
	return Token{Pos: s.stream.Current(), Typing: typing}
}
