package homeserver

import (
	"context"

	"github.com/myelin-chat/myelin/internal/config"
	"github.com/myelin-chat/myelin/residency"
	"github.com/myelin-chat/myelin/retention"
)

// buildRetention builds the retention purge (it runs only when
// retention.enabled): over the store, deleting purged media through the
// content repository, with the residency zones' default policies when any
// zone sets one.
func (s *Server) buildRetention() {
	o := retention.Options{Store: s.DB, Media: s.Media, Config: s.Config.Retention}
	if zoneRetention(s.Config.Residency) {
		o.Zones = zoneDefaults{s.Residency}
	}
	s.Retention = retention.New(o)
}

// zoneRetention reports whether the residency policy is on and some zone
// sets a default retention policy.
func zoneRetention(r config.Residency) bool {
	if !r.Enabled {
		return false
	}
	for _, z := range r.Zones {
		if z.Retention != nil {
			return true
		}
	}
	return false
}

// zoneDefaults is retention.ZoneDefaults over the residency policy: the
// retention of the zone a room is resident in. A room whose zone cannot be
// told keeps the server's default.
type zoneDefaults struct{ p *residency.Policy }

func (z zoneDefaults) DefaultFor(ctx context.Context, roomID string) (config.RetentionPolicy, bool) {
	c, err := z.p.RoomZone(ctx, roomID)
	if err != nil {
		return config.RetentionPolicy{}, false
	}
	zone, ok := z.p.Rules().Zone(c.Zone)
	if !ok || zone.Retention == nil {
		return config.RetentionPolicy{}, false
	}
	return *zone.Retention, true
}
