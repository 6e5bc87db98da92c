package homeserver

import "github.com/myelin-chat/myelin/audit"

// buildAudit builds the audit trail over the store, first: the EDU queue,
// the federation sender, ingest and the admin endpoints record to it.
func (s *Server) buildAudit() error {
	l, err := audit.New(audit.Options{Store: s.DB, Metrics: s.Metrics, Zones: auditZones{s}})
	if err != nil {
		return err
	}
	s.Audit = l
	return nil
}
