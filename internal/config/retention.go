package config

import "time"

// Retention configures message retention (MSC1763): rooms' m.room.retention
// policies, bounded by the server, and the background purge that removes
// expired events' content. Off by default.
type Retention struct {
	Enabled bool `yaml:"enabled"`
	// MinLifetime and MaxLifetime bound every room's effective max_lifetime
	// (0: no bound): events are never purged younger than MinLifetime, and
	// always once older than MaxLifetime when a room has a lifetime at all.
	MinLifetime Duration `yaml:"min_lifetime"`
	MaxLifetime Duration `yaml:"max_lifetime"`
	// DefaultPolicy applies to rooms without an m.room.retention state event
	// (a per-zone default comes with the residency policy).
	DefaultPolicy RetentionPolicy `yaml:"default_policy"`
	// PurgeInterval is how often the purge runs; BatchSize how many events
	// each of its transactions purges (at most 500).
	PurgeInterval Duration `yaml:"purge_interval"`
	BatchSize     int      `yaml:"batch_size"`
}

// RetentionPolicy is a retention policy's lifetimes (0: unset).
type RetentionPolicy struct {
	MinLifetime Duration `yaml:"min_lifetime"`
	MaxLifetime Duration `yaml:"max_lifetime"`
}

// MaxRetentionBatch bounds retention.batch_size: one purge transaction never
// holds the write lock longer than this many events take.
const MaxRetentionBatch = 500

func defaultRetention() Retention {
	return Retention{PurgeInterval: Duration{time.Hour}, BatchSize: MaxRetentionBatch}
}

func (r Retention) validate(bad func(key, format string, args ...any)) {
	for key, d := range map[string]Duration{"retention.min_lifetime": r.MinLifetime, "retention.max_lifetime": r.MaxLifetime,
		"retention.default_policy.min_lifetime": r.DefaultPolicy.MinLifetime,
		"retention.default_policy.max_lifetime": r.DefaultPolicy.MaxLifetime} {
		if d.Duration < 0 {
			bad(key, "must not be negative")
		}
	}
	if r.MinLifetime.Duration > 0 && r.MaxLifetime.Duration > 0 && r.MinLifetime.Duration > r.MaxLifetime.Duration {
		bad("retention.min_lifetime", "must not exceed retention.max_lifetime")
	}
	if r.PurgeInterval.Duration < 10*time.Millisecond {
		bad("retention.purge_interval", "must be at least 10ms")
	}
	if r.BatchSize < 1 || r.BatchSize > MaxRetentionBatch {
		bad("retention.batch_size", "must be between 1 and %d", MaxRetentionBatch)
	}
}
