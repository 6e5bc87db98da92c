package syncapi

import (
	"context"
	"errors"
	"time"

	"github.com/myelin-chat/myelin/internal/mxhttp"
	"github.com/myelin-chat/myelin/storage"
)

// Presence states.
const (
	PresenceOnline      = "online"
	PresenceOffline     = "offline"
	PresenceUnavailable = "unavailable"
)

// PresenceContent is the content of an m.presence event and the body of
// GET /presence/{userId}/status.
type PresenceContent struct {
	Presence        string  `json:"presence"`
	StatusMsg       *string `json:"status_msg,omitempty"`
	LastActiveAgo   int64   `json:"last_active_ago,omitempty"`
	CurrentlyActive *bool   `json:"currently_active,omitempty"`
}

// ContentOf renders a stored presence row.
func ContentOf(p storage.Presence) PresenceContent {
	c := PresenceContent{Presence: p.State, StatusMsg: p.StatusMsg}
	if p.LastActiveTS > 0 {
		c.LastActiveAgo = max(time.Now().UnixMilli()-p.LastActiveTS, 0)
	}
	if p.State == PresenceOnline {
		active := p.CurrentlyActive
		c.CurrentlyActive = &active
	}
	return c
}

// ValidPresence reports whether state is a presence state a client may set.
func ValidPresence(state string) bool {
	return state == PresenceOnline || state == PresenceOffline || state == PresenceUnavailable
}

// SetPresence stores the user's presence and tells the users who share a
// room with them. With presence disabled nothing is stored or sent.
// setMsg=false keeps the current status message (sync's set_presence).
func (s *Service) SetPresence(ctx context.Context, userID, state string, statusMsg *string, setMsg bool) error {
	if !s.presenceEnabled {
		return nil
	}
	if !ValidPresence(state) {
		return mxhttp.InvalidParam("Unknown presence state %q", state)
	}
	if !setMsg {
		// Syncing keeps a user online; only a change of state is worth a write.
		s.presenceMu.Lock()
		same := s.presence[userID] == state
		s.presenceMu.Unlock()
		if same {
			return nil
		}
	}
	now := time.Now().UnixMilli()
	old, err := s.db.GetPresence(ctx, userID)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return err
	}
	if !setMsg {
		if old != nil {
			statusMsg = old.StatusMsg
		}
		if old != nil && old.State == state {
			s.rememberPresence(userID, state)
			return nil
		}
	}
	pos, finish := s.db.Stream.Allocate()
	err = s.db.SetPresence(ctx, storage.Presence{
		UserID: userID, State: state, StatusMsg: statusMsg, LastActiveTS: now,
		CurrentlyActive: state == PresenceOnline, Pos: pos,
	})
	finish()
	if err != nil {
		return err
	}
	s.rememberPresence(userID, state)
	users, err := s.rooms.UsersSharingRooms(ctx, userID)
	if err != nil {
		return err
	}
	s.notifier.Notify(pos, append(users, userID)...)
	return nil
}

// GetPresence answers GET /presence/{userId}/status for requester.
func (s *Service) GetPresence(ctx context.Context, requester, target string) (*PresenceContent, error) {
	if target != requester {
		users, err := s.rooms.UsersSharingRooms(ctx, requester)
		if err != nil {
			return nil, err
		}
		shared := false
		for _, u := range users {
			shared = shared || u == target
		}
		if !shared {
			return nil, mxhttp.Forbidden("You are not allowed to see this user's presence")
		}
	}
	if !s.presenceEnabled {
		return &PresenceContent{Presence: PresenceOffline}, nil
	}
	p, err := s.db.GetPresence(ctx, target)
	if errors.Is(err, storage.ErrNotFound) {
		return &PresenceContent{Presence: PresenceOffline}, nil
	}
	if err != nil {
		return nil, err
	}
	c := ContentOf(*p)
	return &c, nil
}

// PresenceSince returns the presence changes of users in (from, to].
func (s *Service) PresenceSince(ctx context.Context, users []string, from, to int64) ([]storage.Presence, error) {
	if !s.presenceEnabled {
		return nil, nil
	}
	return s.db.PresenceSince(ctx, users, from, to)
}

func (s *Service) rememberPresence(userID, state string) {
	s.presenceMu.Lock()
	defer s.presenceMu.Unlock()
	if len(s.presence) >= 100_000 {
		s.presence = map[string]string{}
	}
	s.presence[userID] = state
}
