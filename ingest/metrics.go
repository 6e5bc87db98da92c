package ingest

import "github.com/prometheus/client_golang/prometheus"

// Registerer is where the engine registers its metrics (*metrics.Registry).
type Registerer = prometheus.Registerer

const (
	outcomeAccepted   = "accepted"
	outcomeRejected   = "rejected"
	outcomeSoftFailed = "soft_failed"
)

type metrics struct {
	pdus       *prometheus.CounterVec // outcome, reason: both from fixed sets
	txnSeconds prometheus.Histogram
	refused    prometheus.Counter
	edus       *prometheus.CounterVec // type (a handled type, or "other"), result
}

func newMetrics(reg Registerer) (*metrics, error) {
	m := &metrics{
		pdus: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "myelin_federation_inbound_pdus_total",
			Help: "Inbound PDUs by outcome (accepted, rejected, soft_failed) and reason (bad_json, too_large, unknown_room, origin, acl, residency, signature, missing_prev, missing_state, auth, auth_current_state, internal).",
		}, []string{"outcome", "reason"}),
		txnSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "myelin_federation_inbound_transaction_seconds", Help: "Time to process an inbound transaction.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "myelin_federation_inbound_transactions_refused_total",
			Help: "Inbound transactions refused because their origin had too many in progress.",
		}),
		edus: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "myelin_federation_edus_total",
			Help: "Inbound EDUs by type (the handled types; other) and result (ok, error, panic, ignored, refused: by the residency policy).",
		}, []string{"type", "result"}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.pdus, m.txnSeconds, m.refused, m.edus} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *metrics) pdu(outcome, reason string) { m.pdus.WithLabelValues(outcome, reason).Inc() }

func (m *metrics) edu(typ, result string) { m.edus.WithLabelValues(typ, result).Inc() }
