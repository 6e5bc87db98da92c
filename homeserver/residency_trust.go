package homeserver

import (
	"context"
	"fmt"
	"time"

	"github.com/myelin-chat/myelin/audit"
	"github.com/myelin-chat/myelin/residency"
)

// startResidencyTrust puts the residency policy's trust list in force and
// records policy changes: the last accepted list from the store first (so
// a restart applies it even when its source is down), then a policy_change
// record if the policy differs from the one last recorded, then a first
// fetch before serving and a refresh every trust_list.refresh until close.
func (s *Server) startResidencyTrust(ctx context.Context) error {
	rc := s.Config.Residency
	if rc.Enabled && rc.TrustList.Configured() {
		r, err := residency.NewRefresher(residency.RefresherOptions{Config: s.Config, Policy: s.Residency, Store: s.DB,
			Recorder: policyRecorder{s}, Metrics: s.Metrics})
		if err != nil {
			return err
		}
		if err := r.ApplyStored(ctx); err != nil {
			return err
		}
		s.TrustList = r
	}
	if err := residency.RecordStartup(ctx, s.Residency, s.DB, policyRecorder{s}, time.Now()); err != nil {
		return fmt.Errorf("residency: %w", err)
	}
	if s.TrustList != nil {
		s.TrustList.Start(ctx)
	}
	return nil
}

// policyRecorder writes the residency policy's changes to the audit trail
// as policy_change records, at once (a change is rare and must not be lost
// in a queue).
type policyRecorder struct{ s *Server }

func (r policyRecorder) PolicyChanged(ctx context.Context, c residency.Change) error {
	_, err := r.s.Audit.Append(ctx, audit.Entry{Kind: audit.KindPolicyChange, Actor: r.s.Config.ServerName, Body: c})
	return err
}

// auditZones places flows' servers for the audit metrics' zone label. It
// reads s.Residency when asked: the audit log is built before the policy.
type auditZones struct{ s *Server }

func (z auditZones) ServerZone(server string) string {
	p := z.s.Residency
	if p == nil || !p.Enabled() {
		return "disabled"
	}
	if zn, _ := p.Rules().ServerZone(server); zn != "" {
		return zn
	}
	return "none"
}
