// Package server is Warren's REST API v1: submitting and reading jobs, bearer
// token auth, health and readiness. The api process wires it to the store,
// the broker and the cache.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"time"

	"github.com/warrenhq/warren/pkg/broker"
	"github.com/warrenhq/warren/pkg/cache"
	"github.com/warrenhq/warren/pkg/store"
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
	Insecure           bool
	MaxBodyBytes       int64
	DefaultMaxAttempts int
	DefaultTimeout     time.Duration
	// PublishTimeout bounds waiting for RabbitMQ's confirm; default 5s.
	PublishTimeout time.Duration
}

// Publisher is what the server needs from the broker.
type Publisher interface {
	Publish(ctx context.Context, msgs ...broker.Message) error
	Ready(ctx context.Context) error
}

// Server serves the REST API.
type Server struct {
	cfg    Config
	store  *store.Store
	broker Publisher
	cache  *cache.Cache
	auth   *auth
	log    *slog.Logger
	now    func() time.Time
}

// New returns a Server. The cache may be nil (reads then always use Postgres).
func New(cfg Config, st *store.Store, br Publisher, ca *cache.Cache, log *slog.Logger) (*Server, error) {
	if len(cfg.Tenants) == 0 && !cfg.Insecure {
		return nil, errors.New("server: no tenants configured and not in insecure mode")
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = 1 << 20
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
	return &Server{
		cfg: cfg, store: st, broker: br, cache: ca, log: log,
		auth: newAuth(cfg.Tenants, cfg.Insecure),
		now:  time.Now,
	}, nil
}

// Handler returns the HTTP handler for every route.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.Handle("POST /v1/jobs", s.authed(s.submit))
	mux.Handle("GET /v1/jobs/{id}", s.authed(s.get))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeProblem(w, http.StatusNotFound, fmt.Sprintf("no route for %s %s", r.Method, r.URL.Path))
	})
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
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
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

func contextWithTimeout(r *http.Request, d time.Duration) (context.Context, context.CancelFunc) {
	// A client that hangs up must not cut a publish short: the job is committed.
	return context.WithTimeout(context.WithoutCancel(r.Context()), d)
}
