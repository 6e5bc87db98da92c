package config

import "time"

// PushDelivery tunes push delivery (push.Delivery): the queue of
// notifications for push gateways.
type PushDelivery struct {
	// Workers bounds the gateways sent to at once.
	Workers int `yaml:"workers"`
	// PerGateway bounds the requests in flight to one gateway (different
	// pushers; one pusher's notifications go one at a time, in order).
	PerGateway int `yaml:"per_gateway"`
	// RequestTimeout bounds one request to a gateway.
	RequestTimeout Duration `yaml:"request_timeout"`
	// MinBackoff and MaxBackoff bound the wait after a gateway failed (5xx,
	// 429, a timeout, a refused connection); it doubles with each failure.
	MinBackoff Duration `yaml:"min_backoff"`
	MaxBackoff Duration `yaml:"max_backoff"`
	// MaxRetryAge: a notification still undelivered this long after it was
	// queued is given up (counted) at its next failure.
	MaxRetryAge Duration `yaml:"max_retry_age"`
}

func defaultPushDelivery() PushDelivery {
	return PushDelivery{Workers: 16, PerGateway: 16, RequestTimeout: Duration{10 * time.Second},
		MinBackoff: Duration{time.Second}, MaxBackoff: Duration{time.Hour}, MaxRetryAge: Duration{24 * time.Hour}}
}

func (c *Config) validatePushDelivery(bad func(key, format string, args ...any)) {
	d := c.Push.Delivery
	if d.Workers < 1 || d.Workers > 1000 {
		bad("push.delivery.workers", "must be between 1 and 1000, got %d", d.Workers)
	}
	if d.PerGateway < 1 || d.PerGateway > 1000 {
		bad("push.delivery.per_gateway", "must be between 1 and 1000, got %d", d.PerGateway)
	}
	if d.RequestTimeout.Duration < 100*time.Millisecond || d.RequestTimeout.Duration > 5*time.Minute {
		bad("push.delivery.request_timeout", "must be between 100ms and 5m, got %s", d.RequestTimeout.Duration)
	}
	if d.MinBackoff.Duration < 10*time.Millisecond || d.MaxBackoff.Duration < d.MinBackoff.Duration || d.MaxBackoff.Duration > 7*24*time.Hour {
		bad("push.delivery.min_backoff", "min_backoff must be at least 10ms and at most max_backoff, max_backoff at most 168h (got %s, %s)",
			d.MinBackoff.Duration, d.MaxBackoff.Duration)
	}
	if d.MaxRetryAge.Duration < time.Second || d.MaxRetryAge.Duration > 30*24*time.Hour {
		bad("push.delivery.max_retry_age", "must be between 1s and 720h, got %s", d.MaxRetryAge.Duration)
	}
}
