package config

import (
	"errors"
	"testing"
	"time"
)

func TestRetentionValidation(t *testing.T) {
	if err := Default().Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	if Default().Retention.Enabled {
		t.Fatal("retention is on by default")
	}
	for key, set := range map[string]func(r *Retention){
		"retention.min_lifetime":                func(r *Retention) { r.MinLifetime.Duration = -time.Second },
		"retention.default_policy.max_lifetime": func(r *Retention) { r.DefaultPolicy.MaxLifetime.Duration = -1 },
		"retention.purge_interval":              func(r *Retention) { r.PurgeInterval.Duration = 0 },
		"retention.batch_size":                  func(r *Retention) { r.BatchSize = MaxRetentionBatch + 1 },
	} {
		c := Default()
		set(&c.Retention)
		var ke *KeyError
		if err := c.Validate(); !errors.As(err, &ke) || ke.Key != key {
			t.Errorf("%s: Validate = %v", key, err)
		}
	}
	c := Default()
	c.Retention.MinLifetime.Duration, c.Retention.MaxLifetime.Duration = 48*time.Hour, 24*time.Hour
	var ke *KeyError
	if err := c.Validate(); !errors.As(err, &ke) || ke.Key != "retention.min_lifetime" {
		t.Errorf("min above max: Validate = %v", err)
	}
	c.Retention.BatchSize = 0
	if err := c.Validate(); err == nil {
		t.Error("batch_size 0 accepted")
	}
}
