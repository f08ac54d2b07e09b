// Package server is Warren's REST API v1: submitting jobs one by one or in
// batches, reading them (optionally waiting for them to finish), cancelling
// and retrying them, listing them, queue and worker statistics, bearer token
// auth, health, readiness, Prometheus metrics and the OpenAPI document. The
// api process wires it to the store, the broker and the cache.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/warrenhq/warren/pkg/broker"
	"github.com/warrenhq/warren/pkg/cache"
	"github.com/warrenhq/warren/pkg/store"
)

// Limits of the API.
const (
	// MaxPriority is the highest job priority; higher runs first.
	MaxPriority = 9
	// MaxBatch is the most jobs one POST /v1/jobs/batch may carry.
	MaxBatch = 1000
	// MaxWait is the longest ?wait a request may ask for.
	MaxWait = 60 * time.Second
	// MaxDelay is how far ahead delay or run_at may put a job.
	MaxDelay = 366 * 24 * time.Hour
	// DefaultListLimit and MaxListLimit bound the page size of GET /v1/jobs.
	DefaultListLimit = 50
	MaxListLimit     = 500
	// MaxCallbackURL is the longest callback_url accepted, in bytes.
	MaxCallbackURL = 2048
	// MaxIdempotencyKey is the longest Idempotency-Key accepted, in bytes.
	MaxIdempotencyKey = 255
)

// Tenant is an API tenant and its bearer token.
type Tenant struct {
	Name  string
	Token string
}

// Config configures a Server.
type Config struct {
	Tenants []Tenant
	// Insecure accepts requests without a token as the "default" tenant.
	Insecure bool
	// MaxBodyBytes bounds the body of POST /v1/jobs and each item of a batch;
	// default 1 MiB.
	MaxBodyBytes int64
	// MaxBatchBodyBytes bounds the body of POST /v1/jobs/batch; default 16 MiB.
	MaxBatchBodyBytes  int64
	DefaultMaxAttempts int
	DefaultTimeout     time.Duration
	// PublishTimeout bounds waiting for RabbitMQ's confirm; default 5s.
	PublishTimeout time.Duration
	// FallbackPoll is how often a ?wait request re-reads its job while Redis
	// (and so the completion events) is unavailable; default 1s.
	FallbackPoll time.Duration
	// RateLimit limits each tenant's submits, one unit per job (a batch
	// takes one per valid job), counted in Redis so that every api shares
	// the count: over it, 429 with Retry-After. A zero Limit turns it off.
	// It needs the cache; while Redis is down, submits are let through.
	RateLimit cache.Rate
	// MaxQueueDepth turns on backpressure: while a queue has more than this
	// many messages ready in RabbitMQ, submits to it answer 503 with
	// Retry-After. 0 turns it off.
	MaxQueueDepth int
	// DepthEvery is how often queue depths are sampled for MaxQueueDepth;
	// default 1s.
	DepthEvery time.Duration
	// MaxSubmitsInFlight bounds the submit requests (POST /v1/jobs and
	// /v1/jobs/batch) this process works on at once; the next one answers
	// 503 with Retry-After at once, so that an overload costs the clients a
	// retry instead of growing the process's memory without bound. Default
	// 1000.
	MaxSubmitsInFlight int
	// Failpoint is a test hook for crash tests, nil in production: it is
	// called at named points of the request path, such as "after-commit"
	// (a submit's INSERT committed, its publish not yet made), and may kill
	// the process there (the api's WARREN_FAILPOINT).
	Failpoint func(name string)
}

// Publisher is what the server needs from the broker.
type Publisher interface {
	Publish(ctx context.Context, msgs ...broker.Message) error
	Ready(ctx context.Context) error
	QueueDepth(ctx context.Context, queue string) (ready, consumers int, err error)
}

// Server serves the REST API. Close it to stop the goroutines that serve
// ?wait requests.
type Server struct {
	cfg     Config
	store   *store.Store
	broker  Publisher
	cache   *cache.Cache
	auth    *auth
	log     *slog.Logger
	now     func() time.Time
	metrics *metrics
	waits   *waitHub
	marks   *publishMarks
	depths  *depthGuard // nil when MaxQueueDepth is 0
	groups  *submitGroups
	submits chan struct{} // one token per submit request in flight
}

// New returns a Server. The cache may be nil: reads then always use Postgres,
// ?wait requests re-read their job every FallbackPoll, and GET /v1/workers
// answers 503.
func New(cfg Config, st *store.Store, br Publisher, ca *cache.Cache, log *slog.Logger) (*Server, error) {
	if len(cfg.Tenants) == 0 && !cfg.Insecure {
		return nil, errors.New("server: no tenants configured and not in insecure mode")
	}
	if st == nil || br == nil {
		return nil, errors.New("server: a store and a broker are required")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = 1 << 20
	}
	if cfg.MaxBatchBodyBytes <= 0 {
		cfg.MaxBatchBodyBytes = 16 << 20
	}
	if cfg.DefaultMaxAttempts <= 0 {
		cfg.DefaultMaxAttempts = 5
	}
	if cfg.DefaultTimeout <= 0 {
		cfg.DefaultTimeout = 10 * time.Minute
	}
	if cfg.PublishTimeout <= 0 {
		cfg.PublishTimeout = 5 * time.Second
	}
	if cfg.FallbackPoll <= 0 {
		cfg.FallbackPoll = time.Second
	}
	if cfg.RateLimit.Limit < 0 || cfg.RateLimit.Limit > 0 && cfg.RateLimit.Window < time.Millisecond {
		return nil, fmt.Errorf("server: rate limit %s is not a positive number per window of at least 1ms", cfg.RateLimit)
	}
	if cfg.RateLimit.Limit > 0 && ca == nil {
		return nil, errors.New("server: a rate limit needs the cache (Redis)")
	}
	if cfg.MaxQueueDepth < 0 {
		return nil, fmt.Errorf("server: MaxQueueDepth %d is negative", cfg.MaxQueueDepth)
	}
	if cfg.DepthEvery <= 0 {
		cfg.DepthEvery = time.Second
	}
	if cfg.MaxSubmitsInFlight < 0 {
		return nil, fmt.Errorf("server: MaxSubmitsInFlight %d is negative", cfg.MaxSubmitsInFlight)
	}
	if cfg.MaxSubmitsInFlight == 0 {
		cfg.MaxSubmitsInFlight = 1000
	}
	s := &Server{
		cfg: cfg, store: st, broker: br, cache: ca, log: log,
		auth:    newAuth(cfg.Tenants, cfg.Insecure),
		now:     time.Now,
		metrics: newMetrics(),
		submits: make(chan struct{}, cfg.MaxSubmitsInFlight),
	}
	s.waits = newWaitHub(ca, cfg.FallbackPoll, log)
	s.marks = newPublishMarks(st, log)
	s.groups = s.newSubmitGroups()
	if cfg.MaxQueueDepth > 0 {
		s.depths = newDepthGuard(br, cfg.MaxQueueDepth, cfg.DepthEvery, log)
	}
	return s, nil
}

// Close stops the Redis subscription and the goroutine that serve ?wait
// requests, if they were started, and the queue depth sampler; requests still waiting answer with the
// job's state at that moment. It writes the pending marks of published jobs
// (later publishes are marked one by one). It is safe to call more than
// once.
func (s *Server) Close() error {
	s.depths.close()
	s.marks.close()
	return s.waits.close()
}

// Registry returns the Prometheus registry that GET /metrics serves, so
// that the process can add its own collectors.
func (s *Server) Registry() *prometheus.Registry { return s.metrics.reg }

// Handler returns the HTTP handler for every route.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	rs := s.routes()
	for _, rt := range rs {
		h := rt.public
		if rt.authed != nil {
			h = s.authed(rt.authed)
		}
		mux.Handle(rt.method+" "+rt.path, s.metrics.instrument(rt.method+" "+rt.path, h))
	}
	mux.Handle("/", s.metrics.instrument("unmatched", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if allow := allowed(rs, r.URL.Path); len(allow) > 0 {
			w.Header().Set("Allow", allow)
			writeProblem(w, http.StatusMethodNotAllowed, fmt.Sprintf("%s is not allowed on %s; use %s", r.Method, r.URL.Path, allow))
			return
		}
		writeProblem(w, http.StatusNotFound, fmt.Sprintf("no route for %s %s", r.Method, r.URL.Path))
	})))
	return mux
}

// authed resolves the bearer token to a tenant before calling h.
func (s *Server) authed(h func(http.ResponseWriter, *http.Request, string)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tenant, why := s.auth.tenant(r)
		if tenant == "" {
			writeProblem(w, http.StatusUnauthorized, why)
			return
		}
		h(w, r, tenant)
	})
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// readyz answers 200 when this api can accept jobs: RabbitMQ is connected and
// at least one shard answers. Redis is optional: without it reads use Postgres.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	// Answer within a second, below a load balancer's check timeout (2s in
	// deploy/run.sh), even when a service hangs: a check that times out
	// takes this api out of rotation, though it may serve well.
	ctx, cancel := context.WithTimeout(r.Context(), time.Second)
	defer cancel()
	status := map[string]string{}
	ready := true
	if err := s.broker.Ready(ctx); err != nil {
		status["rabbitmq"], ready = "down", false
	} else {
		status["rabbitmq"] = "ok"
	}
	up := 0
	for i, err := range s.store.Ping(ctx) {
		key := fmt.Sprintf("postgres_shard_%d", i)
		if err != nil {
			status[key] = "down"
		} else {
			status[key] = "ok"
			up++
		}
	}
	if up == 0 {
		ready = false
	}
	if s.cache != nil {
		if err := s.cache.Ping(ctx); err != nil {
			status["redis"] = "down (degraded: reads use Postgres)"
		} else {
			status["redis"] = "ok"
		}
	}
	code := http.StatusOK
	if !ready {
		code = http.StatusServiceUnavailable
	}
	writeJSON(w, code, status)
}

var namePattern = regexp.MustCompile(`^[A-Za-z0-9_.:-]{1,100}$`)

// detached returns a context for work that must finish even when the client
// hangs up (the job is committed by then), bounded by d.
func detached(r *http.Request, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(r.Context()), d)
}

func unavailable(w http.ResponseWriter, detail string) {
	w.Header().Set("Retry-After", "1")
	writeProblem(w, http.StatusServiceUnavailable, detail)
}
