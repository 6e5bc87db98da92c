// Package metrics exposes Prometheus metrics: HTTP requests by route and
// status, latency histograms, database pool figures, and recovered panics.
package metrics

import (
	"net/http"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/myelin-chat/myelin/internal/mxhttp"
)

// Registry is a server's own metrics registry (several servers may run in one process in tests).
type Registry struct {
	*prometheus.Registry
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
}

// New returns a registry with Go runtime, process and HTTP metrics registered.
func New() *Registry {
	r := &Registry{Registry: prometheus.NewRegistry()}
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	r.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "myelin_http_requests_total", Help: "HTTP requests by route pattern, method and status.",
	}, []string{"route", "method", "status"})
	r.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "myelin_http_request_duration_seconds", Help: "HTTP request latency by route pattern and method.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
	}, []string{"route", "method"})
	r.MustRegister(r.requests, r.latency, PanicsRecovered)
	return r
}

// PanicsRecovered counts panics turned into errors instead of crashing the
// process (internal/recovery), by where they happened: the auth rules, a
// room worker, a timer. It is process-wide, like the panics it counts, and
// registered with every server's registry.
var PanicsRecovered = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "myelin_panics_recovered_total", Help: "Panics recovered instead of crashing the process, by where they happened.",
}, []string{"where"})

// PoolStatsFunc reports database connections: open, in use, idle.
type PoolStatsFunc func() (open, inUse, idle int)

// RegisterDBPool exports database pool figures as gauges.
func (r *Registry) RegisterDBPool(stats PoolStatsFunc) {
	gauge := func(name, help string, pick func(o, u, i int) int) prometheus.GaugeFunc {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 {
			return float64(pick(stats()))
		})
	}
	r.MustRegister(
		gauge("myelin_db_connections_open", "Open database connections.", func(o, _, _ int) int { return o }),
		gauge("myelin_db_connections_in_use", "Database connections in use.", func(_, u, _ int) int { return u }),
		gauge("myelin_db_connections_idle", "Idle database connections.", func(_, _, i int) int { return i }),
	)
}

// RegisterFollowerLag exports how far a stream follower (internal/follower)
// is behind the stream, in positions.
func (r *Registry) RegisterFollowerLag(name string, lag func() int64) {
	r.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "myelin_follower_lag_positions", Help: "Stream positions a follower of new events has yet to handle.",
		ConstLabels: prometheus.Labels{"follower": name},
	}, func() float64 { return float64(lag()) }))
}

// Handler serves the registry in the Prometheus text format.
func (r *Registry) Handler() http.Handler {
	return promhttp.HandlerFor(r.Registry, promhttp.HandlerOpts{})
}

// Middleware records every request under its chi route pattern (never the raw
// path, which would explode the label space).
func (r *Registry) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(sw, req)
		route := "unmatched"
		if rc := chi.RouteContext(req.Context()); rc != nil && rc.RoutePattern() != "" {
			route = rc.RoutePattern()
		}
		status := sw.status
		if mxhttp.ClientGone(req) {
			status = mxhttp.StatusClientClosedRequest // the client gave up: not a server error
		}
		r.requests.WithLabelValues(route, req.Method, strconv.Itoa(status)).Inc()
		r.latency.WithLabelValues(route, req.Method).Observe(time.Since(start).Seconds())
	})
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach the underlying writer (flushing, deadlines).
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
