package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"sync"
	"time"

	"github.com/warrenhq/warren/pkg/broker"
	"github.com/warrenhq/warren/pkg/cache"
	"github.com/warrenhq/warren/pkg/job"
	"github.com/warrenhq/warren/pkg/store"
)

// Config configures a Worker. The URLs are required; the rest have defaults.
type Config struct {
	DatabaseURLs []string // Postgres shards, in order
	RabbitMQURL  string
	RedisURL     string
	// Namespace prefixes RabbitMQ names and Redis keys; default "warren".
	Namespace string
	// Queues consumed; default ["default"].
	Queues []string
	// Concurrency is how many jobs run at once; default 10.
	Concurrency int
	// ShutdownGrace is how long running jobs may finish once Run's context is
	// cancelled; then their contexts are cancelled and they are handed back.
	// Default 25s.
	ShutdownGrace time.Duration
	// Lease is how long a claimed job is held before the scheduler may give it
	// to another worker; default 10m.
	Lease time.Duration
	// ResultTTL is how long results stay cached in Redis; default 24h.
	ResultTTL time.Duration
	// MaxResultBytes refuses larger results (the attempt fails); default 1 MiB.
	MaxResultBytes int
	// ID names this process in job records; default host-pid.
	ID string
	// Logger receives the worker's logs; default discards them.
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.Namespace == "" {
		c.Namespace = "warren"
	}
	if len(c.Queues) == 0 {
		c.Queues = []string{"default"}
	}
	if c.Concurrency <= 0 {
		c.Concurrency = 10
	}
	if c.ShutdownGrace <= 0 {
		c.ShutdownGrace = 25 * time.Second
	}
	if c.Lease <= 0 {
		c.Lease = 10 * time.Minute
	}
	if c.ResultTTL <= 0 {
		c.ResultTTL = 24 * time.Hour
	}
	if c.MaxResultBytes <= 0 {
		c.MaxResultBytes = 1 << 20
	}
	if c.ID == "" {
		host, _ := os.Hostname()
		c.ID = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return c
}

// Worker runs registered handlers for jobs taken from Warren's queues.
type Worker struct {
	cfg      Config
	log      *slog.Logger
	mu       sync.Mutex
	handlers map[string]handler
	started  bool
}

// New returns a Worker for cfg. It checks the configuration but connects only
// when Run starts, so handlers can be registered first.
func New(cfg Config) (*Worker, error) {
	cfg = cfg.withDefaults()
	switch {
	case len(cfg.DatabaseURLs) == 0:
		return nil, errors.New("worker: Config.DatabaseURLs is empty")
	case cfg.RabbitMQURL == "":
		return nil, errors.New("worker: Config.RabbitMQURL is empty")
	case cfg.RedisURL == "":
		return nil, errors.New("worker: Config.RedisURL is empty")
	}
	return &Worker{cfg: cfg, log: cfg.Logger, handlers: map[string]handler{}}, nil
}

// Run connects, consumes the configured queues and runs handlers until ctx is
// cancelled. Then it stops taking jobs, lets running ones finish within the
// shutdown grace, hands back the rest, and returns once every goroutine it
// started has exited.
func (w *Worker) Run(ctx context.Context) error {
	w.mu.Lock()
	if w.started {
		w.mu.Unlock()
		return errors.New("worker: Run called twice")
	}
	w.started = true
	w.mu.Unlock()

	st, err := store.Open(store.Config{URLs: w.cfg.DatabaseURLs, MaxConns: w.cfg.Concurrency + 2})
	if err != nil {
		return fmt.Errorf("worker: %w", err)
	}
	defer st.Close()
	ca, err := cache.New(cache.Config{URL: w.cfg.RedisURL, Prefix: w.cfg.Namespace + ":", TTL: w.cfg.ResultTTL})
	if err != nil {
		return fmt.Errorf("worker: %w", err)
	}
	defer ca.Close()
	br, err := broker.New(ctx, broker.Config{URL: w.cfg.RabbitMQURL, Prefix: w.cfg.Namespace, ConnectionName: "warren-worker " + w.cfg.ID}, w.log)
	if err != nil {
		return fmt.Errorf("worker: %w", err)
	}
	defer br.Close()
	r := &runner{Worker: w, store: st, cache: ca, broker: br}
	return r.run(ctx)
}

// runner is one Run's connections and state.
type runner struct {
	*Worker
	store  *store.Store
	cache  *cache.Cache
	broker *broker.Broker
}

func (r *runner) run(ctx context.Context) error {
	// Consumers stop with ctx; handlers get their own context, cancelled only
	// when the shutdown grace runs out.
	handlerCtx, cancelHandlers := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelHandlers()
	deliveries := make(chan *broker.Delivery)

	var consumers sync.WaitGroup
	errs := make(chan error, len(r.cfg.Queues))
	for _, q := range r.cfg.Queues {
		consumers.Go(func() {
			err := r.broker.Consume(ctx, q, r.cfg.Concurrency, func(cctx context.Context, d *broker.Delivery) {
				select {
				case deliveries <- d:
				case <-cctx.Done():
					_ = d.Nack(true) // not started: straight back to the queue
				}
			})
			if err != nil {
				errs <- fmt.Errorf("consume %s: %w", q, err)
			}
		})
	}
	var pool sync.WaitGroup
	for range r.cfg.Concurrency {
		pool.Go(func() {
			for d := range deliveries {
				r.process(handlerCtx, d)
			}
		})
	}
	r.log.Info("worker running", "worker_id", r.cfg.ID, "queues", r.cfg.Queues, "concurrency", r.cfg.Concurrency, "types", r.types())

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errs:
	}
	r.log.Info("worker stopping: no new jobs; waiting for running ones", "grace", r.cfg.ShutdownGrace)
	consumers.Wait()
	close(deliveries)
	drained := make(chan struct{})
	go func() { pool.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(r.cfg.ShutdownGrace):
		r.log.Warn("shutdown grace over: cancelling running jobs and handing them back")
		cancelHandlers()
		<-drained
	}
	r.log.Info("worker stopped")
	return runErr
}

func (r *runner) types() []string {
	out := make([]string, 0, len(r.handlers))
	for t := range r.handlers {
		out = append(out, t)
	}
	return out
}

// process runs one delivery. handlerCtx is cancelled only when the shutdown
// grace is over.
func (r *runner) process(handlerCtx context.Context, d *broker.Delivery) {
	var m job.Message
	if err := json.Unmarshal(d.Body, &m); err != nil || m.ID.IsZero() {
		r.log.Error("undecodable message dropped to the dead letters", "message_id", d.MessageID, "error", err)
		_ = d.Nack(false)
		return
	}
	log := r.log.With("job_id", m.ID.String(), "type", m.Type)
	h, ok := r.handlers[m.Type]
	if !ok {
		// Another worker may handle this type; it waits in its queue meanwhile.
		log.Debug("no handler for this type here: parking the message")
		if err := d.Park(handlerCtx); err != nil {
			log.Warn("park message", "error", err)
			_ = d.Nack(true)
		}
		return
	}
	j, err := r.store.Claim(handlerCtx, m.ID, r.cfg.ID, r.cfg.Lease)
	if err != nil {
		if errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrNotFound) {
			// Finished, cancelled, or held by another worker: the message is stale.
			log.Debug("message for a job that is not queued: dropped", "reason", err)
			_ = d.Ack()
			return
		}
		log.Error("claim job", "error", err)
		pause(handlerCtx, time.Second) // the store is struggling; don't spin
		_ = d.Nack(true)
		return
	}
	log = log.With("attempt", j.Attempt)
	timeout := j.Timeout()
	if timeout <= 0 {
		timeout = 10 * time.Minute
	}
	jobCtx, cancel := context.WithTimeout(handlerCtx, timeout)
	start := time.Now()
	result, herr := call(jobCtx, h, j)
	cancel()
	if herr == nil && len(result) > r.cfg.MaxResultBytes {
		herr = NoRetry(fmt.Errorf("result of %d bytes exceeds the limit of %d (WARREN_MAX_RESULT_BYTES)", len(result), r.cfg.MaxResultBytes))
	}
	// Finishing writes must outlive a shutdown: use a context of their own.
	fctx, fcancel := context.WithTimeout(context.WithoutCancel(handlerCtx), 30*time.Second)
	defer fcancel()
	var done *job.Job
	var snooze *SnoozeError
	switch {
	case herr != nil && handlerCtx.Err() != nil:
		log.Info("handing back a job cut short by shutdown")
		_, err = r.store.Release(fctx, j.ID, j.Attempt)
		if err == nil {
			_ = d.Nack(true)
			return
		}
	case herr == nil:
		done, err = r.store.Complete(fctx, j.ID, j.Attempt, result)
		log.Info("job succeeded", "duration", time.Since(start))
	case errors.As(herr, &snooze):
		_, err = r.store.Snooze(fctx, j.ID, j.Attempt, time.Now().Add(snooze.Delay))
		log.Info("job snoozed", "delay", snooze.Delay)
	default:
		done, err = r.store.Fail(fctx, j.ID, j.Attempt, herr.Error(), time.Now().Add(Backoff(j.Attempt)), isNoRetry(herr))
		if err == nil {
			log.Warn("job attempt failed", "error", herr, "state", done.State)
		}
	}
	if err != nil {
		// Not recorded: the job stays running until its lease runs out and
		// the scheduler gives it to another worker. Its outcome is fenced by
		// attempt, so a late write cannot overwrite a newer attempt.
		log.Error("record job outcome", "error", err)
	}
	if done != nil && done.State.Terminal() {
		if err := r.cache.PutJob(fctx, done); err != nil {
			log.Warn("cache finished job (reads fall back to Postgres)", "error", err)
		}
	}
	_ = d.Ack()
}

// Backoff is the delay before retrying after the given attempt: exponential
// from 1s, capped at 1h, with full jitter.
func Backoff(attempt int) time.Duration {
	ceiling := time.Second << min(max(attempt-1, 0), 12)
	ceiling = min(ceiling, time.Hour)
	return time.Duration(rand.Int64N(int64(ceiling)) + 1)
}

func pause(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
