// Package scheduler is the work of Warren's scheduler process: a set of
// duties, each run on its own ticker, that keep the promises Postgres and
// RabbitMQ cannot keep alone.
//
//   - dispatch (one per shard): scheduled and retrying jobs whose time has come
//     are marked queued in batches (taking their rows FOR UPDATE SKIP LOCKED,
//     so any number of schedulers can run at once), then published to
//     RabbitMQ and marked published; a crash or a failed publish after the
//     commit leaves them to the relay, so it delays a job but never loses it;
//   - callbacks (one per shard): finished jobs with a callback_url are POSTed
//     to it, signed (see package webhook), and retried with backoff;
//   - queue depth: RabbitMQ's ready and consumer counts of every queue in use,
//     as Prometheus gauges;
//   - alive: a periodic "scheduler alive" log line with the services' health.
//
// Any number of schedulers may run. Those duties run on each of them; the
// following run only on the leader, elected with a Postgres advisory lock on
// shard 0 (see store.Elector and leader.go):
//
//   - relay (one per shard): queued jobs that never got a confirmed message
//     (the api died between its commit and its publish, RabbitMQ was down)
//     are published and marked;
//   - reaper (one per shard): running jobs whose worker was lost (lease
//     expired) are queued again, counting the attempt, or dead;
//   - retention (one per shard): old finished jobs are deleted in small
//     batches;
//   - cron: periodic jobs from the configuration, once per tick
//     cluster-wide;
//   - the duties added with AddDuty (the autoscaler);
//   - the tasks added with AddLeaderTask, which last as long as the
//     leadership (the local autoscaler backend's worker fleet): a deposed
//     leader stops them, and the new leader starts its own.
//
// Every leader-only duty is safe to run from a deposed leader that has not
// noticed yet: each takes its rows FOR UPDATE SKIP LOCKED and re-checks its
// condition in a conditional UPDATE or DELETE, and cron's inserts are
// idempotent by key. The leadership only keeps the work from being done many
// times over.
//
// Each duty runs in its own goroutine, so a slow one (a callback receiver
// timing out, a shard that does not answer) never holds up the others. A
// duty's round that fails is logged and counted, and the next tick tries
// again.
package scheduler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/warrenhq/warren/pkg/broker"
	"github.com/warrenhq/warren/pkg/netguard"
	"github.com/warrenhq/warren/pkg/store"
)

// Broker is what the scheduler needs from RabbitMQ; *broker.Broker has it.
type Broker interface {
	// Publish sends messages and returns once RabbitMQ confirmed them all.
	Publish(ctx context.Context, msgs ...broker.Message) error
	// QueueDepth returns a queue's ready messages and consumers.
	QueueDepth(ctx context.Context, queue string) (ready, consumers int, err error)
	// Ready reports, without blocking, whether RabbitMQ is reachable now.
	Ready(ctx context.Context) error
}

// Config configures a Scheduler. Zero values take the defaults documented on
// each field.
type Config struct {
	// Tick is how often dispatch, callback delivery, and on the leader the
	// relay, the reaper and cron run; default 500ms. A due job is published
	// at most about one tick after its time, so within a second by default.
	Tick time.Duration
	// DispatchBatch is the most due jobs published in one confirmed batch;
	// default 1000. A shard with a backlog gets batch after batch in the same
	// tick until a batch comes back short.
	DispatchBatch int
	// PublishTimeout bounds waiting for RabbitMQ to confirm a batch; default
	// 5s. The batch's rows stay locked meanwhile.
	PublishTimeout time.Duration
	// Callbacks configures the delivery of callbacks.
	Callbacks CallbackConfig
	// DepthEvery is how often the queue depth gauges are refreshed; default 10s.
	DepthEvery time.Duration
	// AliveEvery is how often the scheduler logs that it is alive; default 1m.
	AliveEvery time.Duration
	// StallAfter is how long a duty's round may run, or a duty go without
	// finishing a round, before /healthz reports the scheduler unhealthy;
	// default 5m.
	StallAfter time.Duration
	// Now is the clock for callback signatures and attempt times; default
	// time.Now.
	Now func() time.Time
	// Jitter returns a random duration in [0, max]; default uniform.
	Jitter func(max time.Duration) time.Duration

	// Leader configures the election of the leader.
	Leader LeaderConfig
	// Relay configures the outbox relay.
	Relay RelayConfig
	// ReapBatch is the most jobs of lost workers handled in one
	// transaction; default 500. The reaper runs every Tick.
	ReapBatch int
	// Retention configures the deletion of old finished jobs.
	Retention RetentionConfig
	// Cron lists the periodic jobs, enqueued for tenant CronTenant
	// (default "default"). Checked every Tick.
	Cron       []CronJob
	CronTenant string
}

// LeaderConfig configures the election of the leader.
type LeaderConfig struct {
	// Retry is how often a standby tries to take the leadership; default
	// 2s. A leader that is killed is replaced within about this long.
	Retry time.Duration
	// Check is how often the leader confirms that its lock's session is
	// alive; default 1s. CheckTimeout bounds one check; default 2s.
	Check        time.Duration
	CheckTimeout time.Duration
	// SessionTimeout is how long Postgres keeps the lock's session without
	// a statement (idle_session_timeout): a leader that froze, or lost the
	// network, loses the lock after that long; default 6s. It must exceed
	// Check + CheckTimeout and Retry.
	SessionTimeout time.Duration
}

// RelayConfig configures the outbox relay.
type RelayConfig struct {
	// After is how long a queued job may go without a confirmed message
	// before the relay publishes it; default 3s. It leaves the api the time
	// to publish and mark its own jobs.
	After time.Duration
	// Batch is the most jobs published in one confirmed batch; default
	// 1000.
	Batch int
}

// RetentionConfig configures the deletion of old finished jobs.
type RetentionConfig struct {
	// Finished is how long succeeded and cancelled jobs are kept after they
	// finished; default 7 days.
	Finished time.Duration
	// Dead is how long dead jobs are kept; default 30 days.
	Dead time.Duration
	// Every is how often retention runs; default 1m.
	Every time.Duration
	// Batch is the most rows one DELETE statement removes; default 500.
	Batch int
}

// CallbackConfig configures the delivery of job callbacks.
type CallbackConfig struct {
	// HTTPAllow lists internal hosts, host:ports and CIDRs callback URLs may
	// reach (WARREN_HTTP_ALLOW); other internal addresses are refused.
	HTTPAllow []string
	// SigningSecrets maps a tenant to its signing secret
	// (WARREN_SIGNING_SECRETS). A tenant without one gets no callbacks: the
	// attempt is recorded as failed, saying so.
	SigningSecrets map[string]string
	// Batch is the most callbacks a shard claims per tick; default 100.
	Batch int
	// Concurrency is the most callbacks of one shard in flight at once;
	// default 16.
	Concurrency int
	// Timeout bounds one delivery attempt; default 10s.
	Timeout time.Duration
	// MaxAttempts is the number of attempts before giving up; default 10.
	MaxAttempts int
	// BackoffBase and BackoffMax shape the wait after failed attempt n
	// (from 1): BackoffBase·2^(n-1), at most BackoffMax, of which a random
	// part up to a half is taken off. Defaults 5s and 1h.
	BackoffBase time.Duration
	BackoffMax  time.Duration
	// Lease is how long a claimed callback is kept from other schedulers;
	// it must outlast the delivery of a whole batch. Default: enough for a
	// batch whose every attempt times out, and at least 2m.
	Lease time.Duration
}

// withDefaults returns cfg with its zero fields set.
func (cfg Config) withDefaults() Config {
	setDuration(&cfg.Tick, 500*time.Millisecond)
	setInt(&cfg.DispatchBatch, 1000)
	setDuration(&cfg.PublishTimeout, 5*time.Second)
	setDuration(&cfg.DepthEvery, 10*time.Second)
	setDuration(&cfg.AliveEvery, time.Minute)
	setDuration(&cfg.StallAfter, 5*time.Minute)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Jitter == nil {
		cfg.Jitter = func(max time.Duration) time.Duration { return rand.N(max + 1) }
	}
	c := &cfg.Callbacks
	setInt(&c.Batch, 100)
	setInt(&c.Concurrency, 16)
	setDuration(&c.Timeout, 10*time.Second)
	setInt(&c.MaxAttempts, 10)
	setDuration(&c.BackoffBase, 5*time.Second)
	setDuration(&c.BackoffMax, time.Hour)
	if c.Lease <= 0 {
		rounds := (c.Batch + c.Concurrency - 1) / c.Concurrency
		c.Lease = max(2*time.Minute, time.Duration(rounds+1)*c.Timeout+30*time.Second)
	}
	l := &cfg.Leader
	setDuration(&l.Retry, 2*time.Second)
	setDuration(&l.Check, time.Second)
	setDuration(&l.CheckTimeout, 2*time.Second)
	setDuration(&l.SessionTimeout, 6*time.Second)
	setDuration(&cfg.Relay.After, 3*time.Second)
	setInt(&cfg.Relay.Batch, 1000)
	setInt(&cfg.ReapBatch, 500)
	r := &cfg.Retention
	setDuration(&r.Finished, 7*24*time.Hour)
	setDuration(&r.Dead, 30*24*time.Hour)
	setDuration(&r.Every, time.Minute)
	setInt(&r.Batch, 500)
	if cfg.CronTenant == "" {
		cfg.CronTenant = "default"
	}
	return cfg
}

func setDuration(d *time.Duration, def time.Duration) {
	if *d <= 0 {
		*d = def
	}
}

func setInt(n *int, def int) {
	if *n <= 0 {
		*n = def
	}
}

// Scheduler runs the duties. Create it with New, then call Run.
type Scheduler struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics
	client  *http.Client
	elector elector
	leader  atomic.Bool
	tasks   sync.WaitGroup // the runs of the leader tasks, which may outlast their term

	mu     sync.Mutex
	duties []*dutyState
}

// duty is one periodic job of the scheduler. Each keeps its own small view
// of the store and the broker, so that the next duties (leader election,
// relay, reaper, retention, cron, autoscaler) add a type here without
// widening anything shared.
type duty interface {
	// run does one round; an error is logged and the next tick tries again.
	run(ctx context.Context) error
}

// dutyState is a duty with its schedule and what /healthz reports of it.
type dutyState struct {
	name       string // a metric label, e.g. "dispatch"
	shard      int    // -1 for duties that are not per shard
	every      time.Duration
	duty       duty
	leaderOnly bool // runs only while this scheduler is the leader
	// task: a leader task (AddLeaderTask), run once per term for the whole
	// term rather than every every; one run at a time holds turn.
	task bool
	turn chan struct{}

	mu        sync.Mutex
	active    bool      // a leader-only duty: this scheduler leads now
	since     time.Time // a leader-only duty: when the current term began
	started   time.Time // of the round in progress; zero between rounds
	finished  time.Time // of the last round
	lastErr   error
	failures  int // consecutive failed rounds
	loggedErr time.Time
}

// dutyFunc is a duty given as a function (AddDuty).
type dutyFunc func(ctx context.Context) error

func (f dutyFunc) run(ctx context.Context) error { return f(ctx) }

// New returns a Scheduler over the store and broker. A nil log discards log
// output.
func New(cfg Config, st *store.Store, br Broker, log *slog.Logger) (*Scheduler, error) {
	cfg = cfg.withDefaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	guard, err := netguard.New(cfg.Callbacks.HTTPAllow)
	if err != nil {
		return nil, fmt.Errorf("scheduler: %w", err)
	}
	client := guard.Client(cfg.Callbacks.Timeout)
	// A callback is delivered to the URL given, or not at all: following a
	// redirect would turn the POST into a GET, and a receiver that moved
	// should be updated at its source.
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	entries, err := newCronEntries(cfg.Cron)
	if err != nil {
		return nil, fmt.Errorf("scheduler: %w", err)
	}
	s := &Scheduler{cfg: cfg, log: log, metrics: newMetrics(), client: client,
		elector: st.NewElector(cfg.Leader.SessionTimeout)}
	for shard := range st.Shards() {
		s.add("dispatch", shard, cfg.Tick, &dispatcher{
			st: st, br: br, shard: shard, batch: cfg.DispatchBatch, publishTimeout: cfg.PublishTimeout,
			m: s.metrics, log: log.With("duty", "dispatch", "shard", shard),
		})
		s.add("callbacks", shard, cfg.Tick, &deliverer{
			st: st, shard: shard, cfg: cfg.Callbacks, client: client, now: cfg.Now, jitter: cfg.Jitter,
			m: s.metrics, log: log.With("duty", "callbacks", "shard", shard),
		})
	}
	s.add("queue_depth", -1, cfg.DepthEvery, &depthGauge{st: st, br: br, m: s.metrics, log: log.With("duty", "queue_depth")})
	s.add("alive", -1, cfg.AliveEvery, &aliveReport{st: st, br: br, leader: s.leader.Load, log: log})
	for shard := range st.Shards() {
		s.addLeader("relay", shard, cfg.Tick, &relayer{
			st: st, br: br, shard: shard, batch: cfg.Relay.Batch, after: cfg.Relay.After, publishTimeout: cfg.PublishTimeout,
			m: s.metrics, log: log.With("duty", "relay", "shard", shard),
		})
		s.addLeader("reaper", shard, cfg.Tick, &reaper{
			st: st, br: br, shard: shard, batch: cfg.ReapBatch, publishTimeout: cfg.PublishTimeout,
			m: s.metrics, log: log.With("duty", "reaper", "shard", shard),
		})
		s.addLeader("retention", shard, cfg.Retention.Every, &retention{
			st: st, shard: shard, finished: cfg.Retention.Finished, dead: cfg.Retention.Dead, batch: cfg.Retention.Batch,
			m: s.metrics, log: log.With("duty", "retention", "shard", shard),
		})
	}
	if len(entries) > 0 {
		s.addLeader("cron", -1, cfg.Tick, &cronDuty{
			st: st, entries: entries, tenant: cfg.CronTenant, lateLog: max(5*time.Second, 3*cfg.Tick), now: cfg.Now,
			m: s.metrics, log: log.With("duty", "cron"),
		})
	}
	return s, nil
}

func (s *Scheduler) add(name string, shard int, every time.Duration, d duty) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.duties = append(s.duties, &dutyState{name: name, shard: shard, every: every, duty: d})
}

func (s *Scheduler) addLeader(name string, shard int, every time.Duration, d duty) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.duties = append(s.duties, &dutyState{name: name, shard: shard, every: every, duty: d, leaderOnly: true})
}

// AddDuty adds a duty that runs only while this scheduler is the leader,
// like the relay and the reaper: run is called at once when it becomes the
// leader and then every every (Config.Tick when every is not positive), never
// twice at once; its context is cancelled the moment the leadership is lost
// or Run's context ends, and run should then return promptly. A round's
// error is logged (at its start and every 30s while it lasts) and counted
// in warren_scheduler_tick_errors_total{duty=name}; /healthz reports the
// duty under name. Call AddDuty before Run; a duty added later starts with
// the next leadership term.
//
// Whatever run does must be harmless when done by a leader that was
// deposed a moment before (a statement in flight when the lock's session
// failed): make its writes idempotent or fenced.
func (s *Scheduler) AddDuty(name string, every time.Duration, run func(ctx context.Context) error) {
	if every <= 0 {
		every = s.cfg.Tick
	}
	s.addLeader(name, -1, every, dutyFunc(run))
}

// AddLeaderTask adds work that lasts as long as this scheduler's
// leadership, such as the local autoscaler backend's worker fleet
// (autoscale.Local.Run): run is called when this scheduler becomes the
// leader, and its context is cancelled when the leadership ends — lost,
// given up, or Run's context ended — so that a deposed leader stops what
// the new leader starts for itself.
//
// run may take its time to wind down once its context ends (workers
// finishing their jobs): the leadership is released without waiting for
// it, Run returns only after it has returned, and the next term calls it
// again only then, never twice at once. A run that returns while the
// leadership lasts is called again after Leader.Retry, and its error, or
// its early return, is logged and counted in
// warren_scheduler_tick_errors_total{duty=name}. /healthz lists the task
// under name; a task is never stalled. Call AddLeaderTask before Run.
func (s *Scheduler) AddLeaderTask(name string, run func(ctx context.Context) error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.duties = append(s.duties, &dutyState{name: name, shard: -1, duty: dutyFunc(run), leaderOnly: true,
		task: true, turn: make(chan struct{}, 1)})
}

// IsLeader reports whether this scheduler is the leader now.
func (s *Scheduler) IsLeader() bool { return s.leader.Load() }

// snapshot returns the duties, leader-only or not.
func (s *Scheduler) snapshot(leaderOnly bool) []*dutyState {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*dutyState
	for _, d := range s.duties {
		if d.leaderOnly == leaderOnly {
			out = append(out, d)
		}
	}
	return out
}

// Run runs every duty, each on its own ticker and starting at once, until
// ctx is cancelled, and competes for the leadership, running the
// leader-only duties and tasks while it holds it. It returns nil after
// every goroutine it started has exited, having released the leadership.
func (s *Scheduler) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, d := range s.snapshot(false) {
		wg.Go(func() { s.loop(ctx, d) })
	}
	wg.Go(func() { s.campaign(ctx) })
	wg.Wait()
	s.tasks.Wait()
	s.client.CloseIdleConnections()
	s.log.Info("scheduler stopped")
	return nil
}

// loop runs d every d.every until ctx ends.
func (s *Scheduler) loop(ctx context.Context, d *dutyState) {
	t := time.NewTicker(d.every)
	defer t.Stop()
	for {
		d.begin()
		start := time.Now()
		err := d.duty.run(ctx)
		s.metrics.tickSeconds.WithLabelValues(d.name).Observe(time.Since(start).Seconds())
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			s.metrics.dutyErrors.WithLabelValues(d.name).Inc()
		}
		failures, err, logIt := d.end(err)
		s.report(d, failures, err, logIt)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// runTask runs the leader task d for the term whose context is ctx: once
// the previous term's run has returned, and again after Leader.Retry
// whenever it returns before the term ends.
func (s *Scheduler) runTask(ctx context.Context, d *dutyState) {
	select {
	case d.turn <- struct{}{}:
	case <-ctx.Done():
		return
	}
	defer func() { <-d.turn }()
	for ctx.Err() == nil {
		err := d.duty.run(ctx)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			err = errors.New("returned while this scheduler leads")
		}
		s.metrics.dutyErrors.WithLabelValues(d.name).Inc()
		failures, err, logIt := d.end(err)
		s.report(d, failures, err, logIt)
		select {
		case <-ctx.Done():
		case <-time.After(s.cfg.Leader.Retry):
		}
	}
}

// report logs a duty's failure when it starts and every 30s while it lasts,
// and its recovery, rather than once per tick.
func (s *Scheduler) report(d *dutyState, failures int, err error, logIt bool) {
	attrs := []any{"duty", d.name}
	if d.shard >= 0 {
		attrs = append(attrs, "shard", d.shard)
	}
	switch {
	case err != nil && logIt:
		s.log.Warn("scheduler duty failed", append(attrs, "error", err, "failures", failures)...)
	case err == nil && failures > 0:
		s.log.Info("scheduler duty recovered", append(attrs, "after_failures", failures)...)
	}
}

// activate marks a leader-only duty as running for a new term.
func (d *dutyState) activate() {
	d.mu.Lock()
	d.active, d.since = true, time.Now()
	d.mu.Unlock()
}

// deactivate marks a leader-only duty as stopped; a round cut short by the
// end of the term is forgotten.
func (d *dutyState) deactivate() {
	d.mu.Lock()
	d.active, d.started = false, time.Time{}
	d.mu.Unlock()
}

func (d *dutyState) begin() {
	d.mu.Lock()
	d.started = time.Now()
	d.mu.Unlock()
}

// end records the outcome of a round. It returns the number of failures in
// a row (before a success: the run that just ended), the error, and whether
// to log it now.
func (d *dutyState) end(err error) (failures int, _ error, logIt bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := time.Now()
	d.started, d.finished, d.lastErr = time.Time{}, now, err
	if err == nil {
		failures, d.failures = d.failures, 0
		return failures, nil, false
	}
	d.failures++
	if d.failures == 1 || now.Sub(d.loggedErr) >= 30*time.Second {
		d.loggedErr = now
		logIt = true
	}
	return d.failures, err, logIt
}

// Registry returns the scheduler's Prometheus registry.
func (s *Scheduler) Registry() *prometheus.Registry { return s.metrics.reg }

// Handler serves GET /metrics (Prometheus) and GET /healthz, for the
// process's metrics port.
func (s *Scheduler) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{Registry: s.metrics.reg}))
	mux.HandleFunc("GET /healthz", s.serveHealth)
	return mux
}

// Health is the /healthz report.
type Health struct {
	// OK is false when a duty is stalled: a round has run longer than
	// Config.StallAfter, or none has finished for that long. A duty whose
	// rounds fail (RabbitMQ or a shard down) is not stalled: the scheduler
	// is alive and will catch up, so a restart would not help.
	OK bool `json:"ok"`
	// Leader is true while this scheduler is the leader.
	Leader bool         `json:"leader"`
	Duties []DutyHealth `json:"duties"`
}

// DutyHealth is one duty's part of Health.
type DutyHealth struct {
	Duty         string     `json:"duty"`
	Shard        *int       `json:"shard,omitempty"`
	LastFinished *time.Time `json:"last_finished,omitempty"`
	Running      string     `json:"running_for,omitempty"`
	Failures     int        `json:"consecutive_failures"`
	LastError    string     `json:"last_error,omitempty"`
	Stalled      bool       `json:"stalled,omitempty"`
	// LeaderOnly duties run only on the leader; Standby is set on such a
	// duty while this scheduler is not the leader (it is not stalled then).
	LeaderOnly bool `json:"leader_only,omitempty"`
	Standby    bool `json:"standby,omitempty"`
}

// Health reports the state of every duty.
func (s *Scheduler) Health() Health {
	now := time.Now()
	h := Health{OK: true, Leader: s.leader.Load()}
	s.mu.Lock()
	duties := s.duties
	s.mu.Unlock()
	for _, d := range duties {
		d.mu.Lock()
		dh := DutyHealth{Duty: d.name, Failures: d.failures, LeaderOnly: d.leaderOnly}
		if d.shard >= 0 {
			dh.Shard = &d.shard
		}
		if !d.finished.IsZero() {
			f := d.finished.UTC()
			dh.LastFinished = &f
		}
		switch {
		case d.leaderOnly && !d.active:
			dh.Standby = true
		case d.task:
			// It runs for the whole term: no round to finish.
		case !d.started.IsZero():
			dh.Running = now.Sub(d.started).Round(time.Millisecond).String()
			dh.Stalled = now.Sub(d.started) > s.cfg.StallAfter
		case !d.finished.IsZero() || d.leaderOnly:
			last := d.finished
			if d.leaderOnly && d.since.After(last) {
				last = d.since
			}
			dh.Stalled = now.Sub(last) > s.cfg.StallAfter+d.every
		}
		if d.lastErr != nil {
			dh.LastError = d.lastErr.Error()
		}
		d.mu.Unlock()
		h.OK = h.OK && !dh.Stalled
		h.Duties = append(h.Duties, dh)
	}
	return h
}

func (s *Scheduler) serveHealth(w http.ResponseWriter, _ *http.Request) {
	h := s.Health()
	w.Header().Set("Content-Type", "application/json")
	if !h.OK {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_ = json.NewEncoder(w).Encode(h)
}

// aliveReport logs that the scheduler is alive, with the state of the
// services it depends on.
type aliveReport struct {
	st     interface{ Ping(context.Context) []error }
	br     interface{ Ready(context.Context) error }
	leader func() bool
	log    *slog.Logger
}

func (a *aliveReport) run(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	errs := a.st.Ping(ctx)
	up := 0
	for _, err := range errs {
		if err == nil {
			up++
		}
	}
	rabbit := "ok"
	if err := a.br.Ready(ctx); err != nil {
		rabbit = "down"
	}
	a.log.Info("scheduler alive", "shards", len(errs), "shards_up", up, "rabbitmq", rabbit, "leader", a.leader())
	return errors.Join(errs...)
}
