package config

import (
	"fmt"
	"log/slog"
	"net/url"
	"regexp"
	"strings"
	"time"
)

// Services are the backing services every process connects to.
type Services struct {
	// DatabaseURLs: DATABASE_URLS (comma-separated shards, in order) or DATABASE_URL.
	DatabaseURLs []string
	// RabbitMQURL: RABBITMQ_URL or CLOUDAMQP_URL.
	RabbitMQURL string
	// RedisURL: REDIS_URL or REDIS_TLS_URL.
	RedisURL string
	// Namespace prefixes RabbitMQ exchange and queue names and Redis keys, so
	// stacks can share services: WARREN_NAMESPACE, default "warren".
	Namespace string
	// LogLevel: WARREN_LOG_LEVEL (debug, info, warn, error), default info.
	LogLevel slog.Level
	// LogJSON: WARREN_LOG_FORMAT=json for JSON lines, default text.
	LogJSON bool
}

// The defaults match the local stack's ports; `make run` writes the real URLs,
// with generated passwords, to .env.
const (
	defaultDatabaseURL = "postgres://warren@127.0.0.1:5432/warren_0?sslmode=disable"
	defaultRabbitMQURL = "amqp://guest:guest@127.0.0.1:5672/"
	defaultRedisURL    = "redis://127.0.0.1:6379/0"
)

var namePattern = regexp.MustCompile(`^[A-Za-z0-9_.:-]{1,100}$`)

func (r *reader) services() Services {
	var s Services
	if v, _ := r.first("DATABASE_URLS"); v != "" {
		s.DatabaseURLs = r.list("DATABASE_URLS", nil)
	} else {
		s.DatabaseURLs = []string{r.str("DATABASE_URL", defaultDatabaseURL)}
	}
	for _, u := range s.DatabaseURLs {
		r.url("DATABASE_URLS", u, "postgres", "postgresql")
	}
	var name string
	s.RabbitMQURL, name = r.first("RABBITMQ_URL", "CLOUDAMQP_URL")
	if s.RabbitMQURL == "" {
		s.RabbitMQURL = defaultRabbitMQURL
	}
	r.url(name, s.RabbitMQURL, "amqp", "amqps")
	s.RedisURL, name = r.first("REDIS_URL", "REDIS_TLS_URL")
	if s.RedisURL == "" {
		s.RedisURL = defaultRedisURL
	}
	r.url(name, s.RedisURL, "redis", "rediss")
	s.Namespace = r.str("WARREN_NAMESPACE", "warren")
	if !namePattern.MatchString(s.Namespace) {
		r.fail("WARREN_NAMESPACE", "%q must be 1-100 letters, digits or _.:-", s.Namespace)
	}
	switch lvl := strings.ToLower(r.str("WARREN_LOG_LEVEL", "info")); lvl {
	case "debug":
		s.LogLevel = slog.LevelDebug
	case "info":
		s.LogLevel = slog.LevelInfo
	case "warn":
		s.LogLevel = slog.LevelWarn
	case "error":
		s.LogLevel = slog.LevelError
	default:
		r.fail("WARREN_LOG_LEVEL", "%q is not one of debug, info, warn, error", lvl)
	}
	switch f := strings.ToLower(r.str("WARREN_LOG_FORMAT", "text")); f {
	case "text":
	case "json":
		s.LogJSON = true
	default:
		r.fail("WARREN_LOG_FORMAT", "%q is not text or json", f)
	}
	return s
}

// url checks that raw parses with one of the schemes, without echoing secrets.
func (r *reader) url(name, raw string, schemes ...string) {
	u, err := url.Parse(raw)
	if err != nil {
		r.fail(name, "not a URL")
		return
	}
	for _, s := range schemes {
		if u.Scheme == s {
			if u.Hostname() == "" {
				r.fail(name, "URL has no host")
			}
			return
		}
	}
	r.fail(name, "URL scheme %q, want %s://", u.Scheme, strings.Join(schemes, ":// or "))
}

// Tenant is one API tenant and its bearer token.
type Tenant struct {
	Name  string
	Token string
}

// API is the web process's configuration.
type API struct {
	Services
	// Addr is WARREN_BIND (default 127.0.0.1) and PORT (default 8080).
	Addr string
	// Tenants: WARREN_API_TOKENS, comma-separated tenant:token pairs.
	Tenants []Tenant
	// Insecure: WARREN_INSECURE=true runs without tokens; every request is the
	// "default" tenant. For local experiments only.
	Insecure bool
	// MaxBodyBytes: WARREN_MAX_BODY_BYTES, default 1 MiB.
	MaxBodyBytes int
	// DefaultMaxAttempts: WARREN_DEFAULT_MAX_ATTEMPTS, default 5.
	DefaultMaxAttempts int
	// DefaultTimeout: WARREN_DEFAULT_TIMEOUT, a job's handler deadline when the
	// request names none; default 10m.
	DefaultTimeout time.Duration
	// ResultTTL: WARREN_RESULT_TTL, how long finished jobs stay in Redis; default 24h.
	ResultTTL time.Duration
}

// LoadAPI reads the web process's configuration.
func LoadAPI(get Getenv) (API, error) {
	r := &reader{get: get}
	c := API{Services: r.services()}
	c.Addr = fmt.Sprintf("%s:%d", r.str("WARREN_BIND", "127.0.0.1"), r.int("PORT", 8080, 1, 65535))
	c.Insecure = r.bool("WARREN_INSECURE", false)
	c.Tenants = r.tenants("WARREN_API_TOKENS")
	if len(c.Tenants) == 0 && !c.Insecure && len(r.errs) == 0 {
		r.fail("WARREN_API_TOKENS", "no tokens; set tenant:token pairs, or WARREN_INSECURE=true for a local experiment")
	}
	c.MaxBodyBytes = r.int("WARREN_MAX_BODY_BYTES", 1<<20, 1<<10, 64<<20)
	c.DefaultMaxAttempts = r.int("WARREN_DEFAULT_MAX_ATTEMPTS", 5, 1, 100)
	c.DefaultTimeout = r.duration("WARREN_DEFAULT_TIMEOUT", 10*time.Minute, time.Second, 24*time.Hour)
	c.ResultTTL = r.duration("WARREN_RESULT_TTL", 24*time.Hour, time.Minute, 90*24*time.Hour)
	return c, r.err()
}

var tenantPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

func (r *reader) tenants(name string) []Tenant {
	var out []Tenant
	seen := map[string]bool{}
	for i, pair := range r.list(name, nil) {
		tenant, token, ok := strings.Cut(pair, ":")
		switch {
		case !ok:
			r.fail(name, "entry %d is not tenant:token", i+1)
		case !tenantPattern.MatchString(tenant):
			r.fail(name, "entry %d: tenant must be lowercase letters, digits, _ or -", i+1)
		case len(token) < 16:
			r.fail(name, "entry %d (tenant %s): token shorter than 16 characters", i+1, tenant)
		case seen[token]:
			r.fail(name, "entry %d (tenant %s): token used twice", i+1, tenant)
		default:
			seen[token] = true
			out = append(out, Tenant{Name: tenant, Token: token})
		}
	}
	return out
}

// Worker is the worker process's configuration.
type Worker struct {
	Services
	// Queues: WARREN_QUEUES, the queues consumed, default "default".
	Queues []string
	// Concurrency: WARREN_CONCURRENCY, jobs run at once by this process, default 10.
	Concurrency int
	// ShutdownGrace: WARREN_SHUTDOWN_GRACE, how long running jobs may finish after
	// SIGTERM before they are handed back, default 25s (Heroku allows 30s).
	ShutdownGrace time.Duration
	// ResultTTL: WARREN_RESULT_TTL, as for the api.
	ResultTTL time.Duration
	// MaxResultBytes: WARREN_MAX_RESULT_BYTES, default 1 MiB.
	MaxResultBytes int
	// Lease: WARREN_LEASE, how long a running job is held without a heartbeat
	// before the scheduler gives it to another worker; default 30s.
	Lease time.Duration
	// HTTPAllow: WARREN_HTTP_ALLOW, internal hosts, host:ports or CIDRs the
	// http built-in may call.
	HTTPAllow []string
	// MetricsAddr serves /metrics when PORT is set (foreman and Heroku set it
	// for every process): WARREN_BIND:PORT. Empty when PORT is unset.
	MetricsAddr string
}

// LoadWorker reads the worker process's configuration.
func LoadWorker(get Getenv) (Worker, error) {
	r := &reader{get: get}
	c := Worker{Services: r.services()}
	c.Queues = r.list("WARREN_QUEUES", []string{"default"})
	for _, q := range c.Queues {
		if !namePattern.MatchString(q) {
			r.fail("WARREN_QUEUES", "%q must be 1-100 letters, digits or _.:-", q)
		}
	}
	c.Concurrency = r.int("WARREN_CONCURRENCY", 10, 1, 10_000)
	c.ShutdownGrace = r.duration("WARREN_SHUTDOWN_GRACE", 25*time.Second, 0, time.Hour)
	c.ResultTTL = r.duration("WARREN_RESULT_TTL", 24*time.Hour, time.Minute, 90*24*time.Hour)
	c.MaxResultBytes = r.int("WARREN_MAX_RESULT_BYTES", 1<<20, 1, 64<<20)
	c.Lease = r.duration("WARREN_LEASE", 30*time.Second, 3*time.Second, time.Hour)
	c.HTTPAllow = r.list("WARREN_HTTP_ALLOW", nil)
	c.MetricsAddr = r.metricsAddr()
	return c, r.err()
}

// Scheduler is the scheduler process's configuration.
type Scheduler struct {
	Services
	// Tick: WARREN_SCHEDULER_TICK, how often it does its rounds, default 1s.
	Tick time.Duration
	// HTTPAllow: WARREN_HTTP_ALLOW, internal hosts, host:ports or CIDRs that
	// callback URLs may point at.
	HTTPAllow []string
	// SigningSecrets: WARREN_SIGNING_SECRETS, tenant:secret pairs; callbacks
	// are signed with their tenant's secret.
	SigningSecrets map[string]string
	// MetricsAddr as for the worker.
	MetricsAddr string
}

// LoadScheduler reads the scheduler process's configuration.
func LoadScheduler(get Getenv) (Scheduler, error) {
	r := &reader{get: get}
	c := Scheduler{Services: r.services()}
	c.Tick = r.duration("WARREN_SCHEDULER_TICK", time.Second, 10*time.Millisecond, time.Minute)
	c.HTTPAllow = r.list("WARREN_HTTP_ALLOW", nil)
	c.SigningSecrets = map[string]string{}
	for _, t := range r.tenants("WARREN_SIGNING_SECRETS") {
		c.SigningSecrets[t.Name] = t.Token
	}
	c.MetricsAddr = r.metricsAddr()
	return c, r.err()
}

func (r *reader) metricsAddr() string {
	if v, _ := r.first("PORT"); v == "" {
		return ""
	}
	return fmt.Sprintf("%s:%d", r.str("WARREN_BIND", "127.0.0.1"), r.int("PORT", 0, 1, 65535))
}

// Logger returns the process logger the settings ask for.
func (s Services) Logger(w interface{ Write([]byte) (int, error) }) *slog.Logger {
	opts := &slog.HandlerOptions{Level: s.LogLevel}
	if s.LogJSON {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
