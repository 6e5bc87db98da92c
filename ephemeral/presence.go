package ephemeral

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

// MaxStatusMsgBytes bounds a presence status message: it is copied into the
// /sync of every user who shares a room with its author.
const MaxStatusMsgBytes = 1024

// SetPresence stores the user's presence and tells the users who share a
// room with them. With presence disabled nothing is stored or sent.
// setMsg=false keeps the current status message (sync's set_presence).
// A status message over MaxStatusMsgBytes is refused with M_TOO_LARGE (the
// spec's code for "the request or entity was too large").
func (s *Service) SetPresence(ctx context.Context, userID, state string, statusMsg *string, setMsg bool) error {
	if setMsg && statusMsg != nil && len(*statusMsg) > MaxStatusMsgBytes {
		return mxhttp.TooLarge("status_msg exceeds %d bytes", MaxStatusMsgBytes)
	}
	if !s.presenceEnabled {
		return nil
	}
	if !ValidPresence(state) {
		return mxhttp.InvalidParam("Unknown presence state %q", state)
	}
	if state != PresenceOffline {
		s.touchPresence(userID) // activity: restarts the idle/offline countdown
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
	return s.storePresence(ctx, old, storage.Presence{UserID: userID, State: state, StatusMsg: statusMsg,
		LastActiveTS: time.Now().UnixMilli(), CurrentlyActive: state == PresenceOnline})
}

// storePresence writes a presence change (old is the stored row, nil if
// none) at a new stream position and wakes the users who share a room with
// p.UserID (and p.UserID). Our user's change, if visible, goes to the
// servers sharing a room with them.
func (s *Service) storePresence(ctx context.Context, old *storage.Presence, p storage.Presence) error {
	pos, finish, err := s.stream.Allocate()
	if err != nil {
		return err
	}
	p.Pos = pos
	err = s.db.SetPresence(ctx, p)
	finish()
	if err != nil {
		return err
	}
	s.rememberPresence(p.UserID, p.State)
	users, err := s.rooms.UsersSharingRooms(ctx, p.UserID)
	if err != nil {
		return err
	}
	s.notifier.Notify(pos, append(users, p.UserID)...)
	if s.isLocal(p.UserID) && presenceVisiblyChanged(old, p) {
		s.sendPresence(ctx, p)
	}
	return nil
}

// presenceVisiblyChanged reports whether other users would see a difference
// between old and p (last_active_ago alone moves with time, not a change).
func presenceVisiblyChanged(old *storage.Presence, p storage.Presence) bool {
	if old == nil {
		return true
	}
	oldMsg, msg := "", ""
	if old.StatusMsg != nil {
		oldMsg = *old.StatusMsg
	}
	if p.StatusMsg != nil {
		msg = *p.StatusMsg
	}
	return old.State != p.State || oldMsg != msg || old.CurrentlyActive != p.CurrentlyActive
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
	c := s.contentOf(*p)
	return &c, nil
}

// PresenceSince returns the presence changes of users in (from, to].
func (s *Service) PresenceSince(ctx context.Context, users []string, from, to int64) ([]storage.Presence, error) {
	if !s.presenceEnabled {
		return nil, nil
	}
	return s.db.PresenceSince(ctx, users, from, to)
}

// PresenceContent renders a stored presence row as clients see it now.
func (s *Service) PresenceContent(p storage.Presence) PresenceContent { return s.contentOf(p) }

// contentOf is ContentOf with last_active_ago from the in-memory activity
// (syncing does not write the store), and currently_active only while online
// and active within the idle delay.
func (s *Service) contentOf(p storage.Presence) PresenceContent {
	if t := s.lastActive(p.UserID); !t.IsZero() && t.UnixMilli() > p.LastActiveTS {
		p.LastActiveTS = t.UnixMilli()
	}
	c := ContentOf(p)
	if c.CurrentlyActive != nil {
		active := *c.CurrentlyActive && c.LastActiveAgo < s.idleAfterMS()
		c.CurrentlyActive = &active
	}
	return c
}

func (s *Service) idleAfterMS() int64 {
	s.presenceMu.Lock()
	defer s.presenceMu.Unlock()
	return s.idleAfter.Milliseconds()
}

func (s *Service) rememberPresence(userID, state string) {
	s.presenceMu.Lock()
	defer s.presenceMu.Unlock()
	if len(s.presence) >= 100_000 {
		s.presence = map[string]string{}
	}
	s.presence[userID] = state
}
