package worker

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// The outcomes of an attempt, as the "outcome" label of the worker's metrics
// names them.
const (
	outcomeSucceeded  = "succeeded"   // result stored
	outcomeRetrying   = "retrying"    // failed; will run again after its backoff
	outcomeDead       = "dead"        // failed for good
	outcomeSnoozed    = "snoozed"     // runs again later, attempt not counted
	outcomeHandedBack = "handed_back" // shutdown: queued again for another worker
	outcomeCancelled  = "cancelled"   // cancelled or taken away while running: not recorded
	outcomeError      = "error"       // the outcome could not be written
)

// metrics are one Worker's Prometheus collectors.
type metrics struct {
	reg      *prometheus.Registry
	started  *prometheus.CounterVec
	finished *prometheus.CounterVec
	duration *prometheus.HistogramVec
	running  *prometheus.GaugeVec
	stale    prometheus.Counter
	parked   prometheus.Counter
	leases   *prometheus.CounterVec
}

func newMetrics(reg *prometheus.Registry) *metrics {
	m := &metrics{
		reg: reg,
		started: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "warren_worker_jobs_started_total",
			Help: "Attempts started (jobs claimed), by queue and type.",
		}, []string{"queue", "type"}),
		finished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "warren_worker_jobs_finished_total",
			Help: "Attempts ended, by queue, type and outcome: succeeded, retrying (failed, will retry), dead, snoozed, handed_back (shutdown), cancelled (cancelled or reaped while running), error (outcome not written).",
		}, []string{"queue", "type", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "warren_worker_job_duration_seconds",
			Help:    "Time spent in the handler per attempt, by type and outcome.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600},
		}, []string{"type", "outcome"}),
		running: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "warren_worker_jobs_running",
			Help: "Jobs running in this process now, by type.",
		}, []string{"type"}),
		stale: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "warren_worker_stale_messages_total",
			Help: "Messages dropped because their job was no longer queued (finished, cancelled or duplicate).",
		}),
		parked: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "warren_worker_parked_messages_total",
			Help: "Messages set aside for a while (the park delay): no handler for their type here, a job of a tenant this worker does not serve, or one whose shard is not answering.",
		}),
		leases: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "warren_worker_lease_renewals_total",
			Help: "Lease renewal statements, by result (ok, error).",
		}, []string{"result"}),
	}
	reg.MustRegister(m.started, m.finished, m.duration, m.running, m.stale, m.parked, m.leases)
	return m
}

// Metrics returns an HTTP handler serving the worker's Prometheus metrics in
// the text exposition format, for a /metrics endpoint. The worker's
// collectors live in a registry of their own (Config.Registry, or one made
// by New with the Go runtime and process collectors), never the global one.
func (w *Worker) Metrics() http.Handler {
	return promhttp.HandlerFor(w.metrics.reg, promhttp.HandlerOpts{Registry: w.metrics.reg})
}

func defaultRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}
