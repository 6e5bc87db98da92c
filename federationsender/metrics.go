package federationsender

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Registerer is where the sender registers its metrics (*metrics.Registry).
type Registerer = prometheus.Registerer

// TopDestinations is how many destinations get their own queue figures.
// Per-destination labels for every server would grow without bound (any
// server that joins a room adds one); the deepest queues are the ones an
// operator acts on, and the totals (destination="_all") cover the rest.
const TopDestinations = 10

type senderMetrics struct {
	txns      *prometheus.CounterVec
	dropped   prometheus.Counter
	pduErrors prometheus.Counter
	// residencyWithheld: PDUs the residency policy kept from a destination,
	// by stage (queue: when queued; txn: queued, then refused when the
	// transaction was built).
	residencyWithheld *prometheus.CounterVec
}

func noMetrics() *senderMetrics {
	return &senderMetrics{
		txns:              prometheus.NewCounterVec(prometheus.CounterOpts{Name: "unused"}, []string{"result"}),
		dropped:           prometheus.NewCounter(prometheus.CounterOpts{Name: "unused"}),
		pduErrors:         prometheus.NewCounter(prometheus.CounterOpts{Name: "unused"}),
		residencyWithheld: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "unused"}, []string{"stage"}),
	}
}

func newMetrics(reg Registerer, s *Sender) (*senderMetrics, error) {
	m := &senderMetrics{
		txns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "myelin_federation_transactions_total", Help: "Federation transactions sent, by result (sent, failed).",
		}, []string{"result"}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "myelin_federation_queue_dropped_total", Help: "Queued PDUs dropped by the catch-up trim of a destination long down.",
		}),
		pduErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "myelin_federation_pdu_errors_total", Help: "PDUs a destination acknowledged with an error (not retried).",
		}),
		residencyWithheld: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "myelin_federation_residency_withheld_pdus_total",
			Help: "PDUs the data-localization policy kept from a destination, by stage (queue, txn).",
		}, []string{"stage"}),
	}
	for _, c := range []prometheus.Collector{m.txns, m.dropped, m.pduErrors, m.residencyWithheld, &queueCollector{s: s}} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// queueCollector reads the queue figures from the store at scrape time: the
// TopDestinations deepest queues and the totals.
type queueCollector struct{ s *Sender }

var (
	depthDesc = prometheus.NewDesc("myelin_federation_queue_pdus",
		"PDUs queued for a destination (the deepest queues, and _all).", []string{"destination"}, nil)
	ageDesc = prometheus.NewDesc("myelin_federation_queue_oldest_age_seconds",
		"Age of the oldest PDU queued for a destination (the deepest queues, and _all).", []string{"destination"}, nil)
)

func (c *queueCollector) Describe(ch chan<- *prometheus.Desc) { ch <- depthDesc; ch <- ageDesc }

func (c *queueCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	top, total, err := c.s.opts.Store.FederationQueueStats(ctx, TopDestinations)
	if err != nil {
		slog.Warn("federation sender: reading queue figures", "err", err)
		return
	}
	now := c.s.opts.Now()
	emit := func(dest string, depth, oldest int64) {
		age := 0.0
		if depth > 0 {
			age = max(0, now.Sub(time.UnixMilli(oldest)).Seconds())
		}
		ch <- prometheus.MustNewConstMetric(depthDesc, prometheus.GaugeValue, float64(depth), dest)
		ch <- prometheus.MustNewConstMetric(ageDesc, prometheus.GaugeValue, age, dest)
	}
	emit("_all", total.Depth, total.OldestTS)
	for _, t := range top {
		emit(t.Destination, t.Depth, t.OldestTS)
	}
}
