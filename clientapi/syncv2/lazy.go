package syncv2

import (
	"strings"
	"sync"
)

// lazyMembers remembers, per device and room, whose member events a device
// was sent, so that lazy-loading syncs without include_redundant_members do
// not send them again. It is a cache: a restart, a reused since token or the
// size bound only cause redundant member events, never missing ones.
type lazyMembers struct {
	mu      sync.Mutex
	rooms   map[string]map[string]bool // device key + room → users
	lastTok map[string]string          // device key → last next_batch issued
}

const maxLazyRooms = 100_000

func newLazyMembers() *lazyMembers {
	return &lazyMembers{rooms: map[string]map[string]bool{}, lastTok: map[string]string{}}
}

// known returns the users whose member events the device has in the room
// (nil to send all); reset forgets them (a full state is being sent).
func (l *lazyMembers) known(device, roomID string, reset bool) map[string]bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	key := device + "\x00" + roomID
	if reset {
		delete(l.rooms, key)
		return map[string]bool{}
	}
	out := map[string]bool{}
	for u := range l.rooms[key] {
		out[u] = true
	}
	return out
}

func (l *lazyMembers) remember(device, roomID string, users map[string]bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.rooms) >= maxLazyRooms {
		l.rooms = map[string]map[string]bool{}
	}
	key := device + "\x00" + roomID
	set := l.rooms[key]
	if set == nil {
		set = map[string]bool{}
		l.rooms[key] = set
	}
	for u := range users {
		set[u] = true
	}
}

// check forgets what the device was sent unless since is the token it was
// last given (a retry or an older token may not have seen those members).
func (l *lazyMembers) check(device, since string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lastTok[device] != since {
		l.forgetLocked(device)
	}
}

// issued records the token a device was given.
func (l *lazyMembers) issued(device, next string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.lastTok) >= maxLazyRooms {
		l.lastTok = map[string]string{}
	}
	l.lastTok[device] = next
}

// forget drops what the device was sent (a response that was not delivered).
func (l *lazyMembers) forget(device string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.forgetLocked(device)
}

func (l *lazyMembers) forgetLocked(device string) {
	delete(l.lastTok, device)
	prefix := device + "\x00"
	for key := range l.rooms {
		if strings.HasPrefix(key, prefix) {
			delete(l.rooms, key)
		}
	}
}
