package scheduler

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are one Scheduler's Prometheus metrics, in a registry of its own
// (no global registry).
type metrics struct {
	reg *prometheus.Registry

	dispatched     prometheus.Counter
	batches        prometheus.Counter
	dispatchErrors prometheus.Counter

	callbackAttempts   *prometheus.CounterVec
	callbacksDelivered prometheus.Counter
	callbacksFailed    prometheus.Counter

	tickSeconds *prometheus.HistogramVec
	dutyErrors  *prometheus.CounterVec

	queueReady     *prometheus.GaugeVec
	queueConsumers *prometheus.GaugeVec

	leader        prometheus.Gauge
	leaderChanges *prometheus.CounterVec
	relayed       prometheus.Counter
	reaped        *prometheus.CounterVec
	deleted       *prometheus.CounterVec
	cronEnqueued  *prometheus.CounterVec
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		dispatched: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "warren_scheduler_jobs_dispatched_total",
			Help: "Due scheduled and retrying jobs published to RabbitMQ and marked queued.",
		}),
		batches: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "warren_scheduler_dispatch_batches_total",
			Help: "Batches of due jobs published (one confirmed Publish call each).",
		}),
		dispatchErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "warren_scheduler_dispatch_errors_total",
			Help: "Dispatch batches that failed (RabbitMQ or a shard unreachable); their jobs stay due and go out on a later tick.",
		}),
		callbackAttempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "warren_scheduler_callback_attempts_total",
			Help: "Callback delivery attempts, by outcome: delivered, retry (will try again) or failed (gave up).",
		}, []string{"outcome"}),
		callbacksDelivered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "warren_scheduler_callbacks_delivered_total",
			Help: "Callbacks the receiver accepted with a 2xx.",
		}),
		callbacksFailed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "warren_scheduler_callbacks_failed_total",
			Help: "Callbacks given up on (attempts used up, no signing secret, or an unusable URL).",
		}),
		tickSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "warren_scheduler_tick_duration_seconds",
			Help:    "Time one round of a scheduler duty took, by duty.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120},
		}, []string{"duty"}),
		dutyErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "warren_scheduler_tick_errors_total",
			Help: "Rounds of a scheduler duty that ended in an error, by duty.",
		}, []string{"duty"}),
		queueReady: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "warren_scheduler_queue_ready_messages",
			Help: "Messages ready for delivery in a queue's RabbitMQ job queue, refreshed periodically.",
		}, []string{"queue"}),
		queueConsumers: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "warren_scheduler_queue_consumers",
			Help: "Consumers on a queue's RabbitMQ job queue, refreshed periodically.",
		}, []string{"queue"}),
		leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "warren_scheduler_leader",
			Help: "1 while this scheduler is the leader (runs the relay, reaper, retention, cron and autoscaler), else 0.",
		}),
		leaderChanges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "warren_scheduler_leadership_changes_total",
			Help: "Changes of this scheduler's leadership: acquired, lost (its lock's session failed) or released (shutdown).",
		}, []string{"change"}),
		relayed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "warren_scheduler_jobs_relayed_total",
			Help: "Queued jobs without a confirmed message that the outbox relay published.",
		}),
		reaped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "warren_scheduler_jobs_reaped_total",
			Help: "Running jobs whose worker was lost (lease expired), by outcome: requeued or dead.",
		}, []string{"outcome"}),
		deleted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "warren_scheduler_jobs_deleted_total",
			Help: "Old jobs deleted by retention, by rule: finished (succeeded, cancelled) or dead.",
		}, []string{"rule"}),
		cronEnqueued: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "warren_scheduler_cron_jobs_enqueued_total",
			Help: "Cron ticks whose job this scheduler enqueued, by cron entry.",
		}, []string{"cron"}),
	}
	for _, o := range []string{"delivered", "retry", "failed"} {
		m.callbackAttempts.WithLabelValues(o)
	}
	for _, c := range []string{"acquired", "lost", "released"} {
		m.leaderChanges.WithLabelValues(c)
	}
	for _, o := range []string{"requeued", "dead"} {
		m.reaped.WithLabelValues(o)
	}
	for _, r := range []string{"finished", "dead"} {
		m.deleted.WithLabelValues(r)
	}
	m.reg.MustRegister(m.dispatched, m.batches, m.dispatchErrors,
		m.callbackAttempts, m.callbacksDelivered, m.callbacksFailed,
		m.tickSeconds, m.dutyErrors, m.queueReady, m.queueConsumers,
		m.leader, m.leaderChanges, m.relayed, m.reaped, m.deleted, m.cronEnqueued,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}
