// Package retention enforces message retention (MSC1763): each room's
// m.room.retention policy, bounded by the server's limits and completed by
// its default policy, and a background purge that redacts expired events in
// place, in bounded batches, and deletes the media only they named.
package retention

import (
	"math"
	"time"

	"github.com/tidwall/gjson"
)

// Policy is a retention policy's lifetimes (0: unset).
type Policy struct {
	MinLifetime time.Duration
	MaxLifetime time.Duration
}

// ParsePolicy reads the content of an m.room.retention state event. A field
// that is not a positive integer of milliseconds is unset (MSC1763 allows
// either to be absent); a huge one is capped rather than overflowing.
func ParsePolicy(content string) Policy {
	c := gjson.Parse(content)
	return Policy{MinLifetime: lifetimeField(c, "min_lifetime"), MaxLifetime: lifetimeField(c, "max_lifetime")}
}

func lifetimeField(c gjson.Result, key string) time.Duration {
	v := c.Get(key)
	if v.Type != gjson.Number || v.Num != math.Trunc(v.Num) || v.Num < 1 {
		return 0
	}
	const maxMillis = math.MaxInt64 / int64(time.Millisecond)
	if v.Num >= float64(maxMillis) {
		return time.Duration(maxMillis) * time.Millisecond
	}
	return time.Duration(v.Int()) * time.Millisecond
}

// Bounds are the server's side of retention: the limits every room's
// effective max_lifetime is brought within (0: no limit) and the default
// policy of rooms without one (per room: the default of the room's
// residency zone where it sets one, ZoneDefaults).
type Bounds struct {
	MinLifetime time.Duration
	MaxLifetime time.Duration
	Default     Policy
}

// Lifetime is how long the server keeps a room's messages, and false when
// it keeps them forever. room is the room's policy (nil without an
// m.room.retention event). As in Synapse, a field the room leaves unset
// comes from the default policy, and the result is brought within the
// server's limits; the room's min_lifetime (MSC1763: keep at least this
// long) raises a shorter max_lifetime.
func (b Bounds) Lifetime(room *Policy) (time.Duration, bool) {
	p := b.Default
	if room != nil {
		if room.MinLifetime > 0 {
			p.MinLifetime = room.MinLifetime
		}
		if room.MaxLifetime > 0 {
			p.MaxLifetime = room.MaxLifetime
		}
	}
	if p.MaxLifetime <= 0 {
		return 0, false
	}
	l := max(p.MaxLifetime, p.MinLifetime)
	if b.MinLifetime > 0 {
		l = max(l, b.MinLifetime)
	}
	if b.MaxLifetime > 0 {
		l = min(l, b.MaxLifetime)
	}
	return l, true
}
