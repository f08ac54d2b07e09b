package worker

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/warrenhq/warren/pkg/broker"
	"github.com/warrenhq/warren/pkg/cache"
	"github.com/warrenhq/warren/pkg/store"
)

// Config configures a Worker. The URLs are required; the rest have defaults.
type Config struct {
	DatabaseURLs []string // Postgres shards, in order
	RabbitMQURL  string
	RedisURL     string
	// Namespace prefixes RabbitMQ names and Redis keys; default "warren".
	Namespace string
	// Queues consumed by every type; default ["default"]. Types registered
	// with the Queues option add theirs.
	Queues []string
	// Tenants limits the jobs this process runs to those tenants' (a fleet
	// dedicated to some tenants on queues that others use too); a job of
	// another tenant waits for a worker that serves it. GET /v1/workers
	// shows a worker only to the tenants it serves. Default: every tenant.
	Tenants []string
	// Concurrency is how many jobs run at once in this process; default 50.
	// Claims and completions of concurrent jobs share database statements,
	// so for jobs that mostly wait on I/O more is cheaper per job; limit
	// CPU- or memory-heavy types with the Concurrency option.
	Concurrency int
	// Prefetch is how many messages per queue this process takes from
	// RabbitMQ beyond the jobs it runs, so that a free slot is filled without
	// a round trip. They wait here, highest priority first, unseen by other
	// workers, for at most a minute before going back to the queue. Lower
	// it (to 1) when jobs are long and workers many. Default Concurrency.
	Prefetch int
	// ShutdownGrace is how long running jobs may finish once Run's context is
	// cancelled; then their contexts are cancelled and they are handed back.
	// Default 25s.
	ShutdownGrace time.Duration
	// Lease is how long a running job stays this worker's without a
	// heartbeat; the worker renews the leases of its running jobs every
	// Lease/3. When a worker dies, the scheduler gives its jobs to another
	// worker once their leases run out. Default 30s.
	Lease time.Duration
	// ResultTTL is how long finished jobs stay cached in Redis; default 24h.
	ResultTTL time.Duration
	// MaxResultBytes refuses larger results and progress reports (the attempt
	// fails for good); default 1 MiB.
	MaxResultBytes int
	// ID names this worker in job records and in GET /v1/workers; default
	// host-pid-random, unique per Worker.
	ID string
	// Logger receives the worker's logs; default discards them.
	Logger *slog.Logger
	// Registry receives the worker's Prometheus collectors, so that a
	// program can serve them with its own. Default: a registry of the
	// worker's own, with the Go runtime and process collectors. Either way
	// Worker.Metrics serves it. One Worker per registry: the metric names
	// would collide.
	Registry *prometheus.Registry
}

// defaultTimeout bounds an attempt when neither the job nor its type says.
const defaultTimeout = 10 * time.Minute

func (c Config) withDefaults() Config {
	if c.Namespace == "" {
		c.Namespace = "warren"
	}
	if len(c.Queues) == 0 {
		c.Queues = []string{"default"}
	}
	if c.Concurrency <= 0 {
		c.Concurrency = 50
	}
	if c.Prefetch <= 0 {
		c.Prefetch = min(c.Concurrency, math.MaxUint16)
	}
	if c.ShutdownGrace <= 0 {
		c.ShutdownGrace = 25 * time.Second
	}
	if c.Lease <= 0 {
		c.Lease = 30 * time.Second
	}
	if c.ResultTTL <= 0 {
		c.ResultTTL = 24 * time.Hour
	}
	if c.MaxResultBytes <= 0 {
		c.MaxResultBytes = 1 << 20
	}
	if c.ID == "" {
		host, _ := os.Hostname()
		var b [3]byte
		_, _ = crand.Read(b[:])
		c.ID = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b[:]))
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if c.Registry == nil {
		c.Registry = defaultRegistry()
	}
	return c
}

// Worker runs registered handlers for jobs taken from Warren's queues.
type Worker struct {
	cfg        Config
	log        *slog.Logger
	metrics    *metrics
	mu         sync.Mutex
	regs       map[string]*registration
	middleware []Middleware
	started    bool
}

// New returns a Worker for cfg. It checks the configuration but connects only
// when Run starts, so handlers can be registered first.
func New(cfg Config) (*Worker, error) {
	switch {
	case len(cfg.DatabaseURLs) == 0:
		return nil, errors.New("worker: Config.DatabaseURLs is empty")
	case cfg.RabbitMQURL == "":
		return nil, errors.New("worker: Config.RabbitMQURL is empty")
	case cfg.RedisURL == "":
		return nil, errors.New("worker: Config.RedisURL is empty")
	case cfg.Lease > 0 && cfg.Lease < 30*time.Millisecond:
		return nil, fmt.Errorf("worker: Config.Lease %v is too short to renew", cfg.Lease)
	}
	cfg = cfg.withDefaults()
	m := newMetrics(cfg.Registry)
	return &Worker{cfg: cfg, log: cfg.Logger, metrics: m, regs: map[string]*registration{}}, nil
}

// ID returns the name this worker goes by in job records and heartbeats.
func (w *Worker) ID() string { return w.cfg.ID }

// Use adds middleware that wraps every job's handler. The first added is the
// outermost: Use(a, b) runs a, then b, then the handler, and returns through
// b and a. Call it before Run.
func (w *Worker) Use(mw ...Middleware) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, m := range mw {
		if m != nil {
			w.middleware = append(w.middleware, m)
		}
	}
}

// Run connects, consumes the configured queues and runs handlers until ctx is
// cancelled. Then it stops taking jobs, lets running ones finish within the
// shutdown grace, hands back the rest, and returns once every goroutine it
// started has exited. It returns nil after a clean shutdown.
func (w *Worker) Run(ctx context.Context) error {
	w.mu.Lock()
	if w.started {
		w.mu.Unlock()
		return errors.New("worker: Run called twice")
	}
	w.started = true
	regs := make(map[string]*registration, len(w.regs))
	queues := slices.Clone(w.cfg.Queues)
	for _, typ := range slices.Sorted(maps.Keys(w.regs)) {
		reg := w.regs[typ]
		r := *reg
		for i := len(w.middleware) - 1; i >= 0; i-- {
			r.handler = w.middleware[i](r.handler)
		}
		if r.handler == nil {
			w.mu.Unlock()
			return fmt.Errorf("worker: middleware returned a nil handler for %q", typ)
		}
		regs[typ] = &r
		for _, q := range reg.queues {
			if !slices.Contains(queues, q) {
				queues = append(queues, q)
			}
		}
	}
	w.mu.Unlock()

	// Claims and completions share a statement per shard (batches.go), so
	// connections need not grow with Concurrency: a few carry the batches,
	// the rest the single-row writes (failures, progress, leases).
	st, err := store.Open(store.Config{URLs: w.cfg.DatabaseURLs, MaxConns: min(w.cfg.Concurrency, 16) + 4})
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
	r := newRunner(w, regs, queues, st, ca, br)
	return r.run(ctx)
}
