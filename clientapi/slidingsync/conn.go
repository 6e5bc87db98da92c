package slidingsync

import (
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/myelin-chat/myelin/clientapi/syncv2"
)

// Per-connection state: what each connection (user, device, conn_id) was
// sent, so that later responses carry only what changed. It lives in memory
// only: after a restart, an eviction or an expiry the client is told
// M_UNKNOWN_POS and starts the connection again.

// roomSent is what a connection was sent of one room.
type roomSent struct {
	toPos int64 // the room's events up to this stream position were considered
	// limit is how many of the latest events up to toPos the client has
	// without a gap: the timeline limit it was last sent with, or more when
	// it has had every event since a larger one.
	limit      int
	cfg        *combined // the room config it was last sent with (immutable)
	stateKey   string    // cfg.key()
	membership string
	lazySent   memberSet // members whose m.room.member was sent (shared: copy on write)
}

// snapshot is a connection's state as of one issued pos. Snapshots are
// immutable once stored; a response builds a new one.
type snapshot struct {
	tok      syncv2.Token
	rooms    map[string]roomSent
	counts   map[string]int // list counts last sent
	toDevAck int64          // to-device messages deleted up to here
	// subs are the room subscriptions in force: each request's
	// room_subscriptions add to or replace them, unsubscribe_rooms removes
	// them (matrix-js-sdk sends a subscription once; matrix-rust-sdk sends
	// them all every time). At most maxSubscriptions, the least recently
	// given dropped first.
	subs map[string]subscription
	reqs uint64 // requests answered on the connection, to order subs
}

// subscription is a remembered room subscription.
type subscription struct {
	cfg  roomConfig
	last uint64 // the request (snapshot.reqs) that last gave it
}

// conn is one connection's recent snapshots, keyed by pos id: the latest,
// and a few before it (a client may retry with a pos whose response it never
// processed).
type conn struct {
	snaps    map[uint64]*snapshot
	lastUsed time.Time
}

const (
	maxSnapshotsPerConn = 3
	// One device's connections (one per conn_id): a client opening more
	// evicts its own least recently used, never other users'.
	maxConnsPerDevice = 10
	// Rooms remembered per snapshot: beyond this, the rest are forgotten
	// (sent again in full when they next match).
	maxRoomsPerConn = 5_000
	defaultMaxConns = 10_000
	defaultConnTTL  = 30 * time.Minute
)

// connections holds every connection's state, bounded in number and idle time.
type connections struct {
	mu       sync.Mutex
	m        map[string]*conn
	next     uint64
	maxConns int
	ttl      time.Duration
	swept    time.Time
	now      func() time.Time
}

func newConnections(maxConns int, ttl time.Duration) *connections {
	// Pos ids start at the start-up time so that a pos from before a restart
	// is never mistaken for a new one.
	return &connections{m: map[string]*conn{}, next: uint64(time.Now().UnixNano()), maxConns: maxConns, ttl: ttl, now: time.Now}
}

func connKey(userID, deviceID, connID string) string {
	return userID + "\x00" + deviceID + "\x00" + connID
}

// get returns the snapshot issued as pos on the connection, or nil.
// Snapshots older than pos are dropped: asking for pos acknowledges it.
func (c *connections) get(key, pos string) *snapshot {
	id, err := strconv.ParseUint(pos, 10, 64)
	if err != nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	cn := c.m[key]
	if cn == nil || c.now().Sub(cn.lastUsed) > c.ttl {
		delete(c.m, key)
		return nil
	}
	snap := cn.snaps[id]
	if snap == nil {
		return nil
	}
	for other := range cn.snaps {
		if other < id {
			delete(cn.snaps, other)
		}
	}
	cn.lastUsed = c.now()
	return snap
}

// put stores a snapshot and returns its pos. A new connection (initial
// request) replaces whatever the conn_id had.
func (c *connections) put(key string, snap *snapshot, fresh bool) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	c.sweepLocked(now)
	cn := c.m[key]
	if cn == nil || fresh {
		if cn == nil {
			c.evictDeviceLocked(key)
			if len(c.m) >= c.maxConns {
				c.evictLocked()
			}
		}
		cn = &conn{snaps: map[uint64]*snapshot{}}
		c.m[key] = cn
	}
	c.next++
	id := c.next
	trimRooms(snap)
	cn.snaps[id] = snap
	for len(cn.snaps) > maxSnapshotsPerConn {
		oldest := id
		for other := range cn.snaps {
			oldest = min(oldest, other)
		}
		delete(cn.snaps, oldest)
	}
	cn.lastUsed = now
	return strconv.FormatUint(id, 10)
}

// sweepLocked drops idle connections, at most once a minute.
func (c *connections) sweepLocked(now time.Time) {
	if now.Sub(c.swept) < time.Minute {
		return
	}
	c.swept = now
	for k, cn := range c.m {
		if now.Sub(cn.lastUsed) > c.ttl {
			delete(c.m, k)
		}
	}
}

// deviceOf is the (user, device) part of a connection key.
func deviceOf(key string) string {
	parts := strings.SplitN(key, "\x00", 3)
	if len(parts) < 2 {
		return key
	}
	return parts[0] + "\x00" + parts[1]
}

// evictDeviceLocked makes room for one more connection of key's device by
// dropping that device's least recently used connections.
func (c *connections) evictDeviceLocked(key string) {
	dev := deviceOf(key)
	var mine []string
	for k := range c.m {
		if deviceOf(k) == dev {
			mine = append(mine, k)
		}
	}
	for len(mine) >= maxConnsPerDevice {
		oldest := 0
		for i, k := range mine {
			if c.m[k].lastUsed.Before(c.m[mine[oldest]].lastUsed) {
				oldest = i
			}
		}
		delete(c.m, mine[oldest])
		mine = append(mine[:oldest], mine[oldest+1:]...)
	}
}

// trimRooms bounds what one snapshot remembers: rooms beyond the cap are
// forgotten, so they are sent again as new when they next match.
func trimRooms(snap *snapshot) {
	for k := range snap.rooms {
		if len(snap.rooms) <= maxRoomsPerConn {
			return
		}
		delete(snap.rooms, k)
	}
}

// evictLocked drops the least recently used connection.
func (c *connections) evictLocked() {
	var oldestKey string
	var oldest time.Time
	for k, cn := range c.m {
		if oldestKey == "" || cn.lastUsed.Before(oldest) {
			oldestKey, oldest = k, cn.lastUsed
		}
	}
	delete(c.m, oldestKey)
}

// size is the number of connections held (tests).
func (c *connections) size() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}

// memberSet is a small sorted set of user IDs. A snapshot holds one per room
// sent with lazy members, mostly of one or two members: a slice is a fifth
// of a map's size there.
type memberSet []string

func (s memberSet) has(u string) bool {
	_, ok := slices.BinarySearch(s, u)
	return ok
}

// with is s plus add, a new set (s is shared by older snapshots).
func (s memberSet) with(add []string) memberSet {
	out := make(memberSet, 0, len(s)+len(add))
	out = append(append(out, s...), add...)
	slices.Sort(out)
	return slices.Clip(slices.Compact(out))
}
