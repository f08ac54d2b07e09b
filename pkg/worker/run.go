package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/warrenhq/warren/pkg/broker"
	"github.com/warrenhq/warren/pkg/cache"
	"github.com/warrenhq/warren/pkg/coalesce"
	"github.com/warrenhq/warren/pkg/job"
	"github.com/warrenhq/warren/pkg/store"
)

// Intervals of the runner's background work.
const (
	// maxHold is how long a received message may wait for a slot before it
	// goes back to its queue, far below RabbitMQ's consumer timeout (30m by
	// default), which would otherwise close the channel.
	maxHold = time.Minute
	// beatEvery is the period of the process heartbeat in Redis; the record
	// lives for three periods.
	beatEvery = 5 * time.Second
	// writeTimeout bounds the writes that record an outcome.
	writeTimeout = 30 * time.Second
)

// runner is one Run's connections and state.
type runner struct {
	*Worker
	regs    map[string]*registration // with the middleware applied
	queues  []string
	types   []string
	store   *store.Store
	cache   *cache.Cache
	broker  *broker.Broker
	room    *room
	batches *batches
	cancels *cache.Listener
	started time.Time

	mu       sync.Mutex
	active   map[*active]struct{}
	busyWarn map[int]time.Time // by shard: when a shard not answering was last logged
}

// warnBusy reports whether a shard not answering is to be logged as a
// warning now: once a minute per shard, not once per message.
func (r *runner) warnBusy(shard int) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if time.Since(r.busyWarn[shard]) < time.Minute {
		return false
	}
	r.busyWarn[shard] = time.Now()
	return true
}

// active is one running attempt.
type active struct {
	r       *runner
	id      job.ID
	attempt int
	cancel  context.CancelCauseFunc
}

func newRunner(w *Worker, regs map[string]*registration, queues []string, st *store.Store, ca *cache.Cache, br *broker.Broker) *runner {
	types := make([]string, 0, len(regs))
	for t := range regs {
		types = append(types, t)
	}
	slices.Sort(types)
	return &runner{
		Worker: w, regs: regs, queues: queues, types: types,
		store: st, cache: ca, broker: br, room: newRoom(),
		batches: newBatches(st, ca, w.cfg.ID, w.cfg.Lease, w.cfg.Tenants),
		started: time.Now(), active: map[*active]struct{}{}, busyWarn: map[int]time.Time{},
	}
}

func (r *runner) run(ctx context.Context) error {
	// Three lifetimes: consumers stop as soon as ctx ends; handlers run on
	// until the shutdown grace is over; heartbeats and the cancel listener
	// last until the last handler has returned.
	consumeCtx, stopConsuming := context.WithCancel(ctx)
	defer stopConsuming()
	workCtx, stopWork := context.WithCancelCause(context.WithoutCancel(ctx))
	defer stopWork(nil)
	bgCtx, stopBackground := context.WithCancel(context.WithoutCancel(ctx))
	defer stopBackground()

	r.cancels = r.cache.Listen(bgCtx, cache.Cancel, r.log)
	defer r.cancels.Close()
	var background sync.WaitGroup
	background.Go(func() { r.renewLeases(bgCtx) })
	background.Go(func() { r.beat(bgCtx) })
	background.Go(func() { r.sweep(bgCtx) })

	var consumers sync.WaitGroup
	errs := make(chan error, len(r.queues))
	for _, q := range r.queues {
		consumers.Go(func() {
			if err := r.broker.Consume(consumeCtx, q, r.cfg.Prefetch, r.receive); err != nil {
				errs <- fmt.Errorf("consume %s: %w", q, err)
			}
		})
	}
	var pool sync.WaitGroup
	for range r.cfg.Concurrency {
		pool.Go(func() {
			for {
				p, ok := r.room.next()
				if !ok {
					return
				}
				r.process(workCtx, p)
				r.room.done(p)
			}
		})
	}
	r.log.Info("worker running", "worker_id", r.cfg.ID, "queues", r.queues, "concurrency", r.cfg.Concurrency, "types", r.types)

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errs:
	}
	r.log.Info("worker stopping: no new jobs; waiting for running ones", "grace", r.cfg.ShutdownGrace, "running", r.room.busy())
	stopConsuming()
	consumers.Wait()
	for _, p := range r.room.close() {
		_ = p.d.Nack(true) // never claimed: straight back to its queue
	}
	drained := make(chan struct{})
	go func() { pool.Wait(); close(drained) }()
	grace := time.NewTimer(r.cfg.ShutdownGrace)
	defer grace.Stop()
	select {
	case <-drained:
	case <-grace.C:
		r.log.Warn("shutdown grace over: cancelling running jobs and handing them back", "running", r.room.busy())
		stopWork(ErrShutdown)
		<-drained
	}
	stopBackground()
	background.Wait()
	rctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := r.cache.RemoveWorker(rctx, r.cfg.ID); err != nil {
		r.log.Debug("remove worker heartbeat (it expires by itself)", "error", err)
	}
	r.log.Info("worker stopped")
	return runErr
}

// receive takes a message from a consumer. It must not block: the consumer
// waits for it.
func (r *runner) receive(ctx context.Context, d *broker.Delivery) {
	m, err := job.DecodeMessage(d.Body)
	if err != nil {
		r.deadLetter(ctx, d, err.Error())
		return
	}
	reg, ok := r.regs[m.Type]
	if !ok {
		// Another worker may handle this type; it waits in its queue meanwhile.
		r.log.Debug("no handler for this type here: parking the message", "job_id", m.ID.String(), "type", m.Type)
		r.park(ctx, d)
		return
	}
	p := &pending{d: d, msg: m, reg: reg, prio: d.Priority, since: time.Now()}
	if !r.room.push(p) {
		_ = d.Nack(true)
	}
}

func (r *runner) park(ctx context.Context, d *broker.Delivery) {
	r.metrics.parked.Inc()
	if err := d.Park(ctx); err != nil {
		r.log.Warn("park message", "message_id", d.MessageID, "error", err)
		_ = d.Nack(true)
	}
}

// deadLetter sets a poison message aside in its queue's dead queue, with
// the reason, so that it is neither lost silently nor redelivered forever.
// Should that fail (RabbitMQ trouble), the message goes back to its queue
// and is dead-lettered on a later delivery.
func (r *runner) deadLetter(ctx context.Context, d *broker.Delivery, reason string) {
	if err := d.DeadLetter(ctx, reason); err != nil {
		r.log.Warn("dead-letter poison message (it goes back to its queue)", "message_id", d.MessageID, "reason", reason, "error", err)
		_ = d.Nack(true)
		return
	}
	r.log.Error("poison message moved to the dead queue", "message_id", d.MessageID, "reason", reason)
}

// sweep returns messages that waited too long for a slot to their queues,
// where other workers can take them.
func (r *runner) sweep(ctx context.Context) {
	t := time.NewTicker(maxHold / 4)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			for _, p := range r.room.expired(time.Now().Add(-maxHold)) {
				_ = p.d.Nack(true)
			}
		}
	}
}

// process claims and runs one job. workCtx is cancelled, with ErrShutdown,
// only when the shutdown grace is over.
func (r *runner) process(workCtx context.Context, p *pending) {
	log := r.log.With("job_id", p.msg.ID.String(), "type", p.msg.Type)
	// Listen for a cancel before claiming, so none slips between the two.
	cancelled, stopListening := r.cancels.Wait(p.msg.ID)
	defer stopListening()

	// The claim shares one statement with the other claims on its shard,
	// bounded by writeTimeout. It is not cancelled with workCtx: a caller
	// that gave up could not know whether its claim committed, and a job
	// claimed but not run would wait for its lease to run out.
	j, err := r.batches.claim(context.WithoutCancel(workCtx), p.msg.ID)
	switch {
	case errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrNotFound):
		// Finished, cancelled, or held by another worker: the message is stale.
		log.Debug("message for a job that is not queued: dropped", "reason", err)
		r.metrics.stale.Inc()
		_ = p.d.Ack()
		return
	case errors.Is(err, store.ErrNotServed):
		// Another tenant's job, for a worker that serves others: it waits
		// in its queue for one that serves its tenant.
		log.Debug("job of a tenant this worker does not serve: parking the message")
		r.park(workCtx, p.d)
		return
	case errors.Is(err, coalesce.ErrBusy):
		// Its shard has not answered for a while. Holding the slot would
		// starve the other shards' jobs; the message waits aside and comes
		// back after the broker's park delay.
		shard := p.msg.ID.Shard()
		if r.warnBusy(shard) {
			log.Warn("a shard is not answering: its jobs' messages are parked until it does (said once a minute)", "shard", shard, "patience", claimPatience)
		} else {
			log.Debug("the job's shard is not answering: parking the message", "shard", shard)
		}
		r.park(workCtx, p.d)
		return
	case errors.Is(err, store.ErrBadShard):
		// A worker configured with every shard can run it.
		log.Error("job on a shard this worker does not know: check DATABASE_URLS", "shard", p.msg.ID.Shard())
		r.park(workCtx, p.d)
		return
	case err != nil:
		log.Error("claim job", "error", err)
		pause(workCtx, time.Second) // the store is struggling; don't spin
		_ = p.d.Nack(true)
		return
	}
	// Postgres holds the job now (running, leased to us): the message has
	// done its work. Without this ack a long job would run into RabbitMQ's
	// consumer timeout. Should the ack be lost, the redelivery finds the job
	// running and is dropped as stale.
	if err := p.d.Ack(); err != nil {
		log.Warn("ack claimed job's message", "error", err)
	}
	r.runClaimed(workCtx, p.reg, j, cancelled, log.With("queue", j.Queue, "attempt", j.Attempt))
}

// runClaimed runs the handler for a claimed attempt and records its outcome.
func (r *runner) runClaimed(workCtx context.Context, reg *registration, j *job.Job, cancelled <-chan struct{}, log *slog.Logger) {
	maxAttempts := j.MaxAttempts
	if reg.maxAttempts > 0 && reg.maxAttempts < maxAttempts {
		maxAttempts = reg.maxAttempts
	}
	timeout := reg.timeout
	if jt := j.Timeout(); jt > 0 && (timeout == 0 || jt < timeout) {
		timeout = jt
	}
	if timeout == 0 {
		timeout = defaultTimeout
	}

	jobCtx, cancelJob := context.WithCancelCause(workCtx)
	jobCtx, cancelDeadline := context.WithTimeout(jobCtx, timeout)
	a := &active{r: r, id: j.ID, attempt: j.Attempt, cancel: cancelJob}
	r.track(a)
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		select {
		case <-cancelled:
			cancelJob(ErrJobCancelled)
		case <-jobCtx.Done():
		}
	}()
	info := &JobInfo{
		ID: j.ID.String(), Type: j.Type, Queue: j.Queue, Priority: j.Priority,
		Attempt: j.Attempt, MaxAttempts: maxAttempts, Payload: json.RawMessage(j.Payload),
		CreatedAt: j.CreatedAt, run: a,
	}

	log.Debug("job started")
	r.metrics.started.WithLabelValues(j.Queue, j.Type).Inc()
	running := r.metrics.running.WithLabelValues(j.Type)
	running.Inc()
	start := time.Now()
	result, herr := call(jobCtx, reg.handler, info)
	elapsed := time.Since(start)
	cause := context.Cause(jobCtx)
	running.Dec()
	r.untrack(a)
	cancelDeadline()
	cancelJob(nil)
	<-watched

	if herr == nil && len(result) > r.cfg.MaxResultBytes {
		herr = NoRetry(fmt.Errorf("result of %d bytes exceeds the limit of %d (WARREN_MAX_RESULT_BYTES)", len(result), r.cfg.MaxResultBytes))
	}
	// Outcome writes must outlive a shutdown: they get a context of their own.
	fctx, fcancel := context.WithTimeout(context.WithoutCancel(workCtx), writeTimeout)
	defer fcancel()
	var (
		done    *job.Job
		err     error
		outcome string
		snooze  *SnoozeError
	)
	switch {
	case herr != nil && errors.Is(cause, ErrShutdown):
		outcome = outcomeHandedBack
		err = r.handBack(fctx, j, log)
	case herr == nil:
		outcome = outcomeSucceeded
		done, err = r.batches.complete(fctx, store.Completion{ID: j.ID, Attempt: j.Attempt, Result: result})
	case errors.As(herr, &snooze):
		outcome = outcomeSnoozed
		_, err = r.store.Snooze(fctx, j.ID, j.Attempt, time.Now().Add(snooze.Delay))
	default:
		reason := herr.Error()
		if errors.Is(cause, context.DeadlineExceeded) && errors.Is(herr, context.DeadlineExceeded) {
			reason = fmt.Sprintf("timed out after %v: %v", timeout, herr)
		}
		backoff := DefaultBackoff
		if reg.backoff != nil {
			backoff = reg.backoff
		}
		final := isNoRetry(herr) || j.Attempt >= maxAttempts
		done, err = r.store.Fail(fctx, j.ID, j.Attempt, reason, time.Now().Add(backoff(j.Attempt)), final)
		outcome = outcomeRetrying
		if done != nil && done.State == job.Dead {
			outcome = outcomeDead
		}
	}
	switch {
	case errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrNotFound):
		// Cancelled or reaped while it ran: the job is no longer this
		// attempt's, and fencing keeps its state as it is.
		outcome = outcomeCancelled
		log.Info("job ended but was no longer ours: outcome not recorded", "reason", err, "cause", cause)
	case err != nil:
		// Not recorded: the job stays running until its lease runs out and
		// the scheduler gives it to another worker.
		outcome = outcomeError
		log.Error("record job outcome", "error", err)
	case outcome == outcomeSucceeded:
		// Debug: at thousands of jobs a second a line per success costs more
		// than the job. Failures stay at Warn; the metrics count successes.
		log.Debug("job succeeded", "duration", elapsed)
	case outcome == outcomeSnoozed:
		log.Info("job snoozed", "delay", snooze.Delay)
	case outcome == outcomeHandedBack:
		log.Info("job handed back by shutdown")
	default:
		log.Warn("job attempt failed", "error", herr, "state", done.State, "duration", elapsed)
	}
	r.metrics.finished.WithLabelValues(j.Queue, j.Type, outcome).Inc()
	r.metrics.duration.WithLabelValues(j.Type, outcome).Observe(elapsed.Seconds())
	if done != nil && done.State.Terminal() {
		r.announce(fctx, done, log)
	}
}

// announce caches a finished job and wakes those waiting for it, in one
// pipelined round trip shared with the other jobs finishing meanwhile.
func (r *runner) announce(ctx context.Context, j *job.Job, log *slog.Logger) {
	if err := r.batches.announce(ctx, j); err != nil {
		log.Warn("announce finished job (reads fall back to Postgres, waiters to polling)", "error", err)
	}
}

// handBack returns a job cut short by shutdown to its queue without using
// an attempt: queued again in Postgres, then its message republished for
// another worker.
func (r *runner) handBack(ctx context.Context, j *job.Job, log *slog.Logger) error {
	if _, err := r.store.Release(ctx, j.ID, j.Attempt); err != nil {
		return err
	}
	body, err := json.Marshal(job.Message{ID: j.ID, Type: j.Type})
	if err == nil {
		err = r.broker.Publish(ctx, broker.Message{Queue: j.Queue, Priority: uint8(j.Priority), MessageID: j.ID.String(), Body: body})
	}
	if err != nil {
		// The job is safe in Postgres as queued; the scheduler's relay
		// publishes queued jobs whose message went missing.
		log.Error("handed-back job is queued but its message was not published", "error", err)
	}
	return nil
}

func (r *runner) track(a *active) {
	r.mu.Lock()
	r.active[a] = struct{}{}
	r.mu.Unlock()
}

func (r *runner) untrack(a *active) {
	r.mu.Lock()
	delete(r.active, a)
	r.mu.Unlock()
}

func (r *runner) running() []*active {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*active, 0, len(r.active))
	for a := range r.active {
		out = append(out, a)
	}
	return out
}

// renewLeases extends the leases of the running jobs every Lease/3, and
// cancels the handlers of jobs that are no longer ours: cancelled (should
// the cancel event have been missed) or given to another worker.
func (r *runner) renewLeases(ctx context.Context) {
	every := r.cfg.Lease / 3
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			rctx, cancel := context.WithTimeout(ctx, every)
			r.renew(rctx)
			cancel()
		}
	}
}

func (r *runner) renew(ctx context.Context) {
	jobs := r.running()
	if len(jobs) == 0 {
		return
	}
	ids := make([]job.ID, len(jobs))
	for i, a := range jobs {
		ids[i] = a.id
	}
	held, err := r.store.ExtendLeases(ctx, r.cfg.ID, r.cfg.Lease, ids)
	down := map[int]bool{}
	if err != nil {
		r.metrics.leases.WithLabelValues("error").Inc()
		if ctx.Err() != nil {
			return
		}
		var se *store.ShardError
		for _, e := range unjoin(err) {
			if errors.As(e, &se) {
				down[se.Shard] = true
			}
		}
		r.log.Warn("renew leases", "error", err)
	} else {
		r.metrics.leases.WithLabelValues("ok").Inc()
	}
	ours := make(map[store.Held]bool, len(held))
	for _, h := range held {
		ours[h] = true
	}
	for _, a := range jobs {
		if down[a.id.Shard()] || ours[store.Held{ID: a.id, Attempt: a.attempt}] {
			continue
		}
		r.log.Warn("running job is no longer ours: cancelling its handler", "job_id", a.id.String(), "attempt", a.attempt)
		a.cancel(ErrLeaseLost)
	}
}

// unjoin returns the errors inside an errors.Join, or err itself.
func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// beat keeps this process's record in Redis for GET /v1/workers.
func (r *runner) beat(ctx context.Context) {
	host, _ := os.Hostname()
	failing := false
	put := func() {
		info := cache.WorkerInfo{
			ID: r.cfg.ID, Host: host, PID: os.Getpid(), Queues: r.queues, Types: r.types, Tenants: r.cfg.Tenants,
			Concurrency: r.cfg.Concurrency, Busy: r.room.busy(),
			StartedAt: r.started, LastHeartbeat: time.Now(),
		}
		err := r.cache.PutWorker(ctx, info, 3*beatEvery)
		switch {
		case err != nil && !failing && ctx.Err() == nil:
			r.log.Warn("worker heartbeat in Redis (jobs still run)", "error", err)
		case err == nil && failing:
			r.log.Info("worker heartbeat in Redis back")
		}
		failing = err != nil
	}
	put()
	t := time.NewTicker(beatEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			put()
		}
	}
}

// progress stores v as the attempt's progress.
func (a *active) progress(ctx context.Context, v any) error {
	if a == nil {
		return nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("progress of job %s: %w", a.id, err)
	}
	if len(b) > a.r.cfg.MaxResultBytes {
		return fmt.Errorf("progress of job %s: %d bytes exceeds the limit of %d", a.id, len(b), a.r.cfg.MaxResultBytes)
	}
	err = a.r.store.SetProgress(ctx, a.id, a.attempt, b)
	var se *store.StateError
	switch {
	case errors.As(err, &se) && se.State == job.Cancelled:
		return fmt.Errorf("progress of job %s: %w", a.id, ErrJobCancelled)
	case errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrNotFound):
		return fmt.Errorf("progress of job %s: %w", a.id, ErrLeaseLost)
	case err != nil:
		return fmt.Errorf("progress of job %s: %w", a.id, err)
	}
	return nil
}

func pause(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
