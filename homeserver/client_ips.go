package homeserver

import (
	"context"
	"log/slog"
	"time"
)

// clientIPPurge clears our users' client IP addresses (devices'
// last_seen_ip) once last seen longer ago than our residency zone's
// client_ip_retention, on a timer from New until close.
type clientIPPurge struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// startClientIPPurge starts the purge when the residency policy is on and
// our zone sets client_ip_retention.
func (s *Server) startClientIPPurge() {
	r := s.Config.Residency
	if !r.Enabled {
		return
	}
	zone, ok := r.ZoneNamed(r.Zone)
	keep := zone.ClientIPRetention.Duration
	if !ok || keep <= 0 {
		return
	}
	// Often enough that an IP outlives the setting by a small fraction of it.
	interval := min(max(keep/60, time.Second), time.Hour)
	ctx, cancel := context.WithCancel(context.Background())
	p := &clientIPPurge{cancel: cancel, done: make(chan struct{})}
	s.clientIPs = p
	go func() {
		defer close(p.done)
		t := time.NewTimer(0)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			n, err := s.DB.ForgetClientIPs(ctx, time.Now().Add(-keep).UnixMilli())
			switch {
			case err != nil && ctx.Err() == nil:
				slog.Warn("client IP purge", "err", err)
			case n > 0:
				slog.Info("client IP purge", "devices", n)
			}
			t.Reset(interval)
		}
	}()
}

// stopClientIPPurge stops the timer and waits for a run in progress.
func (s *Server) stopClientIPPurge() {
	if s.clientIPs != nil {
		s.clientIPs.cancel()
		<-s.clientIPs.done
	}
}
