package server

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are the api's Prometheus metrics, in a registry of their own per
// Server (no global registry), served on GET /metrics.
type metrics struct {
	reg        *prometheus.Registry
	submits    *prometheus.CounterVec
	requests   *prometheus.CounterVec
	durations  *prometheus.HistogramVec
	confirms   *prometheus.CounterVec
	cacheReads *prometheus.CounterVec
	waiters    prometheus.Gauge
	// limits: see limits.go.
	rateLimited  *prometheus.CounterVec
	rateErrors   prometheus.Counter
	backpressure *prometheus.CounterVec
	shed         prometheus.Counter
	rerouted     *prometheus.CounterVec
	// the single submit path's groups: see group.go.
	groupJobs *prometheus.HistogramVec
	groupTime *prometheus.HistogramVec
	grouped   *prometheus.GaugeVec
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		submits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "warren_api_jobs_submitted_total",
			Help: "Jobs accepted (committed to Postgres), by queue and type.",
		}, []string{"queue", "type"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "warren_api_http_requests_total",
			Help: "HTTP requests answered, by route pattern and status code.",
		}, []string{"route", "status"}),
		durations: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "warren_api_http_request_duration_seconds",
			Help:    "Time to answer an HTTP request, by route pattern (includes ?wait).",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"route"}),
		confirms: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "warren_api_publish_confirms_total",
			Help: "Job messages published to RabbitMQ, by result: ok (confirmed), failed (left to the scheduler's relay) or timeout (answered before the confirm; published late or by the relay).",
		}, []string{"result"}),
		cacheReads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "warren_api_cache_reads_total",
			Help: "Job reads from the Redis cache, by result: hit, miss or error (then Postgres answers).",
		}, []string{"result"}),
		waiters: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "warren_api_waiters_in_progress",
			Help: "Requests holding a ?wait for a job to finish.",
		}),
	}
	m.rateLimited = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "warren_api_rate_limited_total",
		Help: "Submit requests refused with 429 by their tenant's rate limit (WARREN_RATE_LIMIT), by tenant.",
	}, []string{"tenant"})
	m.rateErrors = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "warren_api_rate_limit_errors_total",
		Help: "Rate limit checks that Redis did not answer; the submits were let through (fail open).",
	})
	m.shed = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "warren_api_submits_shed_total",
		Help: "Submit requests refused with 503 because the process had WARREN_MAX_SUBMITS_IN_FLIGHT in flight already.",
	})
	m.rerouted = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "warren_api_submits_rerouted_total",
		Help: "Submits sent on to the next shard, by the shard they left and why: unreachable (the dial failed) or not_answering (its statement ran longer than the patience).",
	}, []string{"shard", "reason"})
	m.backpressure = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "warren_api_backpressure_rejections_total",
		Help: "Jobs refused with 503 because their queue was deeper than WARREN_MAX_QUEUE_DEPTH, by queue.",
	}, []string{"queue"})
	m.groupJobs = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "warren_api_group_jobs",
		Help:    "Jobs per group INSERT (step insert) and per group Publish (step publish) of the single submit path, where concurrent submits share them.",
		Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256, 512},
	}, []string{"step"})
	m.groupTime = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "warren_api_group_duration_seconds",
		Help:    "Time one group INSERT (step insert) or group Publish until confirmed (step publish) of the single submit path took.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	}, []string{"step"})
	m.grouped = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "warren_api_group_submits_in_progress",
		Help: "Single submits waiting for their group INSERT (step insert) or group Publish (step publish), or in it.",
	}, []string{"step"})
	for _, st := range []string{"insert", "publish"} {
		m.groupJobs.WithLabelValues(st)
		m.groupTime.WithLabelValues(st)
		m.grouped.WithLabelValues(st)
	}
	for _, r := range []string{"ok", "failed", "timeout"} {
		m.confirms.WithLabelValues(r)
	}
	for _, r := range []string{"hit", "miss", "error"} {
		m.cacheReads.WithLabelValues(r)
	}
	m.reg.MustRegister(m.submits, m.requests, m.durations, m.confirms, m.cacheReads, m.waiters,
		m.rateLimited, m.rateErrors, m.backpressure, m.shed, m.rerouted, m.groupJobs, m.groupTime, m.grouped,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// instrument counts and times the requests h answers under the route label.
func (m *metrics) instrument(route string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		h.ServeHTTP(sw, r)
		m.requests.WithLabelValues(route, strconv.Itoa(sw.status)).Inc()
		m.durations.WithLabelValues(route).Observe(time.Since(start).Seconds())
	})
}

// statusWriter remembers the status code written.
type statusWriter struct {
	http.ResponseWriter
	status      int
	wroteHeader bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wroteHeader {
		w.status, w.wroteHeader = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
