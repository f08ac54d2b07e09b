package autoscale

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Source gives the queues' figures from Postgres: waiting and running jobs,
// the oldest wait, and arrivals, completions and the mean job time over the
// window. The store's QueueLoad, adapted, has it.
type Source interface {
	Load(ctx context.Context, queues []string, window time.Duration) ([]QueueLoad, error)
}

// Broker gives a queue's RabbitMQ figures: messages ready and consumers.
// *broker.Broker has it.
type Broker interface {
	QueueDepth(ctx context.Context, queue string) (ready, consumers int, err error)
}

// Config configures an Autoscaler.
type Config struct {
	// Policy decides; its Interval is how often Tick should be called.
	Policy Policy
	// Queues are the queues the fleet's workers consume.
	Queues []string
	// Window is the span of the arrival and completion rates; default 30s.
	Window time.Duration
	// Resync is how often the number of workers ordered is read again from
	// the backend, to notice a change made by hand; default 1m. In between
	// the autoscaler trusts what it ordered (a remote API call less per
	// tick).
	Resync time.Duration
	// Backend names the scaler in logs and metrics ("local", …).
	Backend string
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Autoscaler sizes the worker fleet: each Tick reads the figures, asks the
// policy and tells the scaler. Run it as a leader-only scheduler duty every
// Policy.Interval. Ticks must not overlap.
type Autoscaler struct {
	cfg    Config
	src    Source
	br     Broker
	scaler Scaler
	log    *slog.Logger
	m      *autoscaleMetrics

	state    State
	ordered  int       // workers ordered, as last read or set
	synced   time.Time // when ordered was last read from the backend
	known    bool
	lastTick time.Time
	ups      []order // recent scale-ups: the workers that may still be starting
}

// figuresTimeout bounds the reading of a tick's figures.
const figuresTimeout = 15 * time.Second

type order struct {
	at time.Time
	n  int
}

// New returns an Autoscaler. br may be nil (no RabbitMQ figures: workers
// still starting are then counted for Policy.Startup after their order).
// Its metrics are registered with reg.
func New(cfg Config, src Source, br Broker, scaler Scaler, reg prometheus.Registerer, log *slog.Logger) (*Autoscaler, error) {
	if err := cfg.Policy.Validate(); err != nil {
		return nil, fmt.Errorf("autoscale: %w", err)
	}
	if len(cfg.Queues) == 0 {
		return nil, errors.New("autoscale: no queues")
	}
	if cfg.Window <= 0 {
		cfg.Window = 30 * time.Second
	}
	if cfg.Resync <= 0 {
		cfg.Resync = time.Minute
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m := newAutoscaleMetrics()
	if reg != nil {
		if err := m.register(reg); err != nil {
			return nil, fmt.Errorf("autoscale: %w", err)
		}
	}
	return &Autoscaler{cfg: cfg, src: src, br: br, scaler: scaler, log: log.With("backend", cfg.Backend), m: m}, nil
}

// Tick makes one decision: it reads the figures, decides, and scales when
// the decision changes the fleet. Without figures (a shard or the backend
// unreachable) it changes nothing and returns the error.
func (a *Autoscaler) Tick(ctx context.Context) error {
	now := a.cfg.Now()
	p := a.cfg.Policy
	// After a gap (this scheduler was not the leader), the memory of the
	// window is stale and the fleet may have changed hands: start afresh.
	if !a.lastTick.IsZero() && now.Sub(a.lastTick) > 3*p.Interval+p.DownWindow {
		a.state, a.known, a.ups = State{}, false, nil
	}
	a.lastTick = now
	// The figures are worth little late: a tick waits for them at most
	// figuresTimeout. Scaling, with its retries, gets the duty's context.
	fctx, cancel := context.WithTimeout(ctx, figuresTimeout)
	defer cancel()
	loads, err := a.src.Load(fctx, a.cfg.Queues, a.cfg.Window)
	if err != nil {
		a.m.errors.WithLabelValues("figures").Inc()
		return fmt.Errorf("autoscale: queue figures (no decision this tick): %w", err)
	}
	consumers := -1 // unknown
	for i := range loads {
		q := &loads[i]
		a.m.observe(q)
		if a.br == nil {
			continue
		}
		ready, n, err := a.br.QueueDepth(fctx, q.Queue)
		if err != nil {
			// Not declared yet (no job so far), or RabbitMQ away: Postgres
			// has the figures that matter.
			a.log.Debug("no RabbitMQ figures for the queue", "queue", q.Queue, "error", err)
			continue
		}
		a.m.queueReady.WithLabelValues(q.Queue).Set(float64(ready))
		a.m.queueConsumers.WithLabelValues(q.Queue).Set(float64(n))
		consumers = max(consumers, n) // a worker consumes every queue of the fleet
	}
	if !a.known || now.Sub(a.synced) >= a.cfg.Resync {
		n, err := a.scaler.Workers(ctx)
		if err != nil {
			a.m.errors.WithLabelValues("backend").Inc()
			return fmt.Errorf("autoscale: read the number of workers: %w", err)
		}
		if a.known && n != a.ordered {
			a.log.Info("the number of workers was changed outside the autoscaler", "ordered", a.ordered, "found", n)
			a.ups = nil
		}
		a.ordered, a.synced, a.known = n, now, true
	}
	current, starting := a.fleet(now, consumers)
	o := Observation{At: now, Queues: loads, Current: current, Starting: starting}
	d := p.Decide(&a.state, o)
	a.m.desired.Set(float64(d.Desired))
	a.m.need.Set(d.Need)
	a.m.workers.WithLabelValues("up").Set(float64(current))
	a.m.workers.WithLabelValues("starting").Set(float64(starting))
	a.m.decisions.WithLabelValues(d.Direction).Inc()
	if d.Desired == a.ordered {
		a.log.Debug("autoscale: "+d.Reason, "workers", a.ordered)
		return nil
	}
	attrs := []any{"from", a.ordered, "to", d.Desired, "up", current, "starting", starting, "need", fmt.Sprintf("%.2f", d.Need)}
	if err := a.scaler.Scale(ctx, d.Desired); err != nil {
		a.m.errors.WithLabelValues("backend").Inc()
		a.known = false // read it again: the call may have half worked
		a.log.Warn("autoscale: scaling failed: "+d.Reason, append(attrs, "error", err)...)
		return fmt.Errorf("autoscale: scale to %d: %w", d.Desired, err)
	}
	a.log.Info("autoscale: "+d.Reason, attrs...)
	if d.Desired > a.ordered {
		a.ups = append(a.ups, order{now, d.Desired - a.ordered})
	}
	a.ordered = d.Desired
	a.m.ordered.Set(float64(a.ordered))
	return nil
}

// fleet splits the workers ordered into those up and those starting: the
// ones ordered within Policy.Startup, but no more than RabbitMQ's consumers
// leave unaccounted for when it has them.
func (a *Autoscaler) fleet(now time.Time, consumers int) (current, starting int) {
	keep := a.ups[:0]
	for _, u := range a.ups {
		if now.Sub(u.at) < a.cfg.Policy.Startup {
			keep = append(keep, u)
			starting += u.n
		}
	}
	a.ups = keep
	if consumers >= 0 {
		starting = min(starting, max(0, a.ordered-consumers))
	}
	starting = min(starting, a.ordered)
	a.m.ordered.Set(float64(a.ordered))
	return a.ordered - starting, starting
}

type autoscaleMetrics struct {
	desired, need, ordered prometheus.Gauge
	workers                *prometheus.GaugeVec
	decisions, errors      *prometheus.CounterVec

	queueWaiting, queueRunning, queueOldest         *prometheus.GaugeVec
	queueArrivals, queueCompletions, queueJobSecond *prometheus.GaugeVec
	queueReady, queueConsumers                      *prometheus.GaugeVec
}

func newAutoscaleMetrics() *autoscaleMetrics {
	g := func(name, help string) prometheus.Gauge {
		return prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help})
	}
	q := func(name, help string) *prometheus.GaugeVec {
		return prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, []string{"queue"})
	}
	return &autoscaleMetrics{
		desired: g("warren_autoscale_desired_workers", "Worker processes the last decision asked for."),
		need:    g("warren_autoscale_need_workers", "Worker processes the figures call for, unrounded: arrivals by Little's law plus spare or backlog drain."),
		ordered: g("warren_autoscale_ordered_workers", "Worker processes ordered from the backend."),
		workers: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "warren_autoscale_workers",
			Help: "Worker processes ordered, by state: up, or starting (ordered within the startup time and not yet consuming)."}, []string{"state"}),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "warren_autoscale_decisions_total",
			Help: "Autoscaler decisions, by direction: up, down, hold."}, []string{"direction"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "warren_autoscale_errors_total",
			Help: "Autoscaler ticks without a decision carried out, by stage: figures (Postgres), backend (reading or scaling the fleet)."}, []string{"stage"}),
		queueWaiting:     q("warren_autoscale_queue_waiting_jobs", "Jobs waiting to start (queued in Postgres), per queue, as the autoscaler read them."),
		queueRunning:     q("warren_autoscale_queue_running_jobs", "Jobs running, per queue, as the autoscaler read them."),
		queueOldest:      q("warren_autoscale_queue_oldest_wait_seconds", "How long the oldest waiting job has waited, per queue."),
		queueArrivals:    q("warren_autoscale_queue_arrival_rate", "Jobs created per second over the autoscaler's window, per queue."),
		queueCompletions: q("warren_autoscale_queue_completion_rate", "Jobs finished per second over the autoscaler's window, per queue."),
		queueJobSecond:   q("warren_autoscale_queue_job_seconds", "Mean handler time of the jobs finished within the window, per queue (0: none)."),
		queueReady:       q("warren_autoscale_queue_rabbitmq_ready", "Messages ready in RabbitMQ, per queue (the rest of the waiting jobs are prefetched by workers)."),
		queueConsumers:   q("warren_autoscale_queue_consumers", "RabbitMQ consumers, per queue: the workers up."),
	}
}

func (m *autoscaleMetrics) register(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{m.desired, m.need, m.ordered, m.workers, m.decisions, m.errors,
		m.queueWaiting, m.queueRunning, m.queueOldest, m.queueArrivals, m.queueCompletions, m.queueJobSecond,
		m.queueReady, m.queueConsumers} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

func (m *autoscaleMetrics) observe(q *QueueLoad) {
	m.queueWaiting.WithLabelValues(q.Queue).Set(float64(q.Ready))
	m.queueRunning.WithLabelValues(q.Queue).Set(float64(q.Running))
	m.queueOldest.WithLabelValues(q.Queue).Set(q.OldestAge.Seconds())
	m.queueArrivals.WithLabelValues(q.Queue).Set(q.ArrivalRate)
	m.queueCompletions.WithLabelValues(q.Queue).Set(q.CompletionRate)
	m.queueJobSecond.WithLabelValues(q.Queue).Set(q.MeanJobTime.Seconds())
}
