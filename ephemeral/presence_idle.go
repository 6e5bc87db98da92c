package ephemeral

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/myelin-chat/myelin/internal/recovery"
	"github.com/myelin-chat/myelin/storage"
)

// Presence of users who stop syncing decays: unavailable after IdleAfter
// without activity (a sync or a presence PUT), offline after OfflineAfter.
// Each active user has one timer, reset by their activity; nothing scans all
// users (a restart re-arms timers for the users stored as not offline, once).
const (
	DefaultIdleAfter    = 5 * time.Minute
	DefaultOfflineAfter = 30 * time.Minute
)

type presenceActivity struct {
	last  time.Time
	timer *time.Timer
}

// SetPresenceTimeouts changes the idle and offline delays (tests; call before
// users sync).
func (s *Service) SetPresenceTimeouts(idle, offline time.Duration) {
	s.presenceMu.Lock()
	defer s.presenceMu.Unlock()
	s.idleAfter, s.offlineAfter = idle, offline
}

// touchPresence records activity of userID now and (re)arms their decay timer.
func (s *Service) touchPresence(userID string) {
	s.touchPresenceAt(userID, time.Now())
}

func (s *Service) touchPresenceAt(userID string, at time.Time) {
	s.presenceMu.Lock()
	defer s.presenceMu.Unlock()
	a := s.activity[userID]
	if a == nil {
		a = &presenceActivity{}
		s.activity[userID] = a
		a.timer = time.AfterFunc(s.idleAfter, recovery.Func(recovery.PresenceTimer, func() { s.decayPresence(userID) }, "user", userID))
	} else {
		a.timer.Reset(s.idleAfter)
	}
	a.last = at
}

// lastActive is the in-memory time of the user's last activity (zero if none).
func (s *Service) lastActive(userID string) time.Time {
	s.presenceMu.Lock()
	defer s.presenceMu.Unlock()
	if a := s.activity[userID]; a != nil {
		return a.last
	}
	return time.Time{}
}

// decayPresence runs when a user's timer fires: online becomes unavailable
// once idle, anything but offline becomes offline once gone long enough.
func (s *Service) decayPresence(userID string) {
	s.presenceMu.Lock()
	a := s.activity[userID]
	if a == nil {
		s.presenceMu.Unlock()
		return
	}
	idle := time.Since(a.last)
	last := a.last
	next := ""
	switch {
	case idle >= s.offlineAfter:
		next = PresenceOffline
		delete(s.activity, userID)
	case idle >= s.idleAfter:
		next = PresenceUnavailable
		a.timer.Reset(s.offlineAfter - idle)
	default:
		a.timer.Reset(s.idleAfter - idle) // active again meanwhile
	}
	s.presenceMu.Unlock()
	if next == "" {
		return
	}
	ctx := context.Background()
	p, err := s.db.GetPresence(ctx, userID)
	if err != nil {
		if !errors.Is(err, storage.ErrNotFound) {
			slog.Error("presence decay", "user", userID, "err", err)
		}
		return
	}
	if p.State == next || p.State == PresenceOffline || (next == PresenceUnavailable && p.State != PresenceOnline) {
		return
	}
	if err := s.storePresence(ctx, p, storage.Presence{UserID: userID, State: next, StatusMsg: p.StatusMsg,
		LastActiveTS: last.UnixMilli()}); err != nil {
		slog.Error("presence decay", "user", userID, "err", err)
	}
}

// rearmPresence starts decay timers for the users stored as not offline
// (after a restart, their timers were lost), counting from now.
func (s *Service) rearmPresence(ctx context.Context) error {
	users, err := s.db.UsersNotOffline(ctx)
	if err != nil {
		return err
	}
	now := time.Now()
	for _, u := range users {
		if s.isLocal(u) {
			s.touchPresence(u)
		} else { // their server pings; without one for FederationTimeout, offline
			s.heardRemote(u, PresenceOnline, now)
		}
	}
	return nil
}

// Close stops the presence decay, ping and expiry timers (on shutdown,
// before the store closes).
func (s *Service) Close() {
	s.stopFederationPresence()
	s.presenceMu.Lock()
	defer s.presenceMu.Unlock()
	for userID, a := range s.activity {
		a.timer.Stop()
		delete(s.activity, userID)
	}
}
