package ephemeral

import (
	"sort"
	"sync"
	"time"

	"github.com/myelin-chat/myelin/internal/recovery"
)

// Typing holds who is typing in which room, in memory only (the spec makes
// typing notifications ephemeral). Every change bumps a serial that sync
// tokens carry, so an incremental sync reports a room's typing list exactly
// when it changed since the client's token. The serial starts at the start-up
// time in milliseconds, so tokens issued before a restart stay below it.
type Typing struct {
	mu     sync.Mutex
	serial int64
	rooms  map[string]*roomTyping
	// onChange is called (outside the lock) with the room whose list changed,
	// the user who started or stopped typing there, and their new state.
	onChange func(roomID, userID string, typing bool)
}

type roomTyping struct {
	serial int64 // serial of the last change
	users  map[string]*typingEntry
}

// typingEntry is one user's typing notification; its identity tells an
// expiring timer whether it was replaced meanwhile.
type typingEntry struct{ timer *time.Timer }

// NewTyping returns an empty tracker; onChange is called after every change.
func NewTyping(onChange func(roomID, userID string, typing bool)) *Typing {
	return &Typing{serial: time.Now().UnixMilli(), rooms: map[string]*roomTyping{}, onChange: onChange}
}

// Serial is the serial of the latest change.
func (t *Typing) Serial() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.serial
}

// Set marks user as typing in room for timeout, or stops it.
func (t *Typing) Set(roomID, userID string, typing bool, timeout time.Duration) {
	t.mu.Lock()
	rt := t.rooms[roomID]
	if rt == nil {
		rt = &roomTyping{users: map[string]*typingEntry{}}
		t.rooms[roomID] = rt
	}
	old, was := rt.users[userID]
	if was {
		old.timer.Stop()
		delete(rt.users, userID)
	}
	if typing {
		entry := &typingEntry{}
		entry.timer = time.AfterFunc(timeout, recovery.Func(recovery.TypingTimer, func() { t.expire(roomID, userID, entry) }, "room", roomID))
		rt.users[userID] = entry
	}
	changed := typing != was
	if changed {
		t.serial++
		rt.serial = t.serial
	}
	if len(rt.users) == 0 && !changed {
		delete(t.rooms, roomID)
	}
	t.mu.Unlock()
	if changed && t.onChange != nil {
		t.onChange(roomID, userID, typing)
	}
}

func (t *Typing) expire(roomID, userID string, entry *typingEntry) {
	t.mu.Lock()
	rt := t.rooms[roomID]
	if rt == nil || rt.users[userID] != entry {
		t.mu.Unlock()
		return // replaced or stopped meanwhile
	}
	delete(rt.users, userID)
	t.serial++
	rt.serial = t.serial
	t.mu.Unlock()
	if t.onChange != nil {
		t.onChange(roomID, userID, false)
	}
}

// Since returns the room's typing users and whether the list changed after
// serial (always true for serial 0, the initial sync, if anyone types).
func (t *Typing) Since(roomID string, serial int64) (users []string, changed bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	rt := t.rooms[roomID]
	if rt == nil {
		return nil, false
	}
	for u := range rt.users {
		users = append(users, u)
	}
	sort.Strings(users)
	if serial == 0 {
		return users, len(users) > 0
	}
	return users, rt.serial > serial
}
