package retention

import (
	"context"
	"testing"
	"time"

	"github.com/myelin-chat/myelin/internal/config"
)

type zoneMap map[string]config.RetentionPolicy

func (z zoneMap) DefaultFor(_ context.Context, roomID string) (config.RetentionPolicy, bool) {
	p, ok := z[roomID]
	return p, ok
}

// A room's zone default replaces the server's default policy, within the
// server's bounds; a room's own policy still wins over it.
func TestRoomBoundsZoneDefault(t *testing.T) {
	p := &Purger{bounds: Bounds{MaxLifetime: 10 * day, Default: Policy{MaxLifetime: 5 * day}},
		zones: zoneMap{"!eu:x": {MaxLifetime: config.Duration{Duration: 2 * day}}, "!long:x": {MaxLifetime: config.Duration{Duration: 30 * day}}}}
	ctx := context.Background()
	for _, c := range []struct {
		room string
		own  *Policy
		want time.Duration
	}{
		{"!eu:x", nil, 2 * day},
		{"!eu:x", &Policy{MaxLifetime: 3 * day}, 3 * day},
		{"!long:x", nil, 10 * day}, // brought within retention.max_lifetime
		{"!other:x", nil, 5 * day}, // no zone default: the server's
	} {
		if got, ok := p.roomBounds(ctx, c.room).Lifetime(c.own); !ok || got != c.want {
			t.Errorf("%s (own %+v): %v %v, want %v", c.room, c.own, got, ok, c.want)
		}
	}
}
