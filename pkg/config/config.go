package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
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
	// RateLimit and RateWindow: WARREN_RATE_LIMIT, each tenant's submit
	// limit in jobs per window, counted in Redis: "100/s", "6000/m",
	// "50000/h" or "500/10s" (any Go duration from 1s to 24h). Empty or
	// "off" (the default) turns it off: RateLimit is then 0.
	RateLimit  int
	RateWindow time.Duration
	// MaxQueueDepth: WARREN_MAX_QUEUE_DEPTH, backpressure: above this many
	// ready messages in a queue, submits to it answer 503. Default 0, off.
	MaxQueueDepth int
	// MaxSubmitsInFlight: WARREN_MAX_SUBMITS_IN_FLIGHT, the submit requests
	// one api process works on at once; the next answers 503. Default 1000.
	MaxSubmitsInFlight int
	// Failpoint: WARREN_FAILPOINT, a test hook for crash tests, never for
	// production: "kill-after-commit" makes the process SIGKILL itself right
	// after the first submit's INSERT commits, before its publish. Empty
	// (the default) disables it.
	Failpoint string
	// Pprof: WARREN_PPROF=true serves Go's profiles under /debug/pprof/ on
	// the api's own port, unauthenticated like /metrics; default false.
	Pprof bool
}

// Failpoints lists the values WARREN_FAILPOINT accepts.
var Failpoints = []string{"kill-after-commit"}

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
	c.RateLimit, c.RateWindow = r.rate("WARREN_RATE_LIMIT")
	c.MaxQueueDepth = r.int("WARREN_MAX_QUEUE_DEPTH", 0, 0, 1_000_000_000)
	c.MaxSubmitsInFlight = r.int("WARREN_MAX_SUBMITS_IN_FLIGHT", 1000, 1, 1_000_000)
	c.Failpoint = r.str("WARREN_FAILPOINT", "")
	if c.Failpoint != "" && !slices.Contains(Failpoints, c.Failpoint) {
		r.fail("WARREN_FAILPOINT", "%q is not one of %s (a test hook; leave it unset)", c.Failpoint, strings.Join(Failpoints, ", "))
	}
	c.Pprof = r.bool("WARREN_PPROF", false)
	return c, r.err()
}

// rate reads a limit per window, "<n>/<window>", where the window is s, m,
// h or a Go duration; empty or "off" is no limit (0, 0).
func (r *reader) rate(name string) (int, time.Duration) {
	v, _ := r.first(name)
	if v == "" || strings.EqualFold(v, "off") {
		return 0, 0
	}
	num, unit, ok := strings.Cut(v, "/")
	n, err := strconv.Atoi(strings.TrimSpace(num))
	if !ok || err != nil {
		r.fail(name, "%q is not a rate such as 100/s, 6000/m or 500/10s", v)
		return 0, 0
	}
	if n < 1 || n > 1_000_000_000 {
		r.fail(name, "%d jobs per window is out of range [1, 1000000000]", n)
		return 0, 0
	}
	var d time.Duration
	switch unit = strings.TrimSpace(unit); unit {
	case "s":
		d = time.Second
	case "m":
		d = time.Minute
	case "h":
		d = time.Hour
	default:
		if d, err = time.ParseDuration(unit); err != nil {
			r.fail(name, "window %q is not s, m, h or a duration such as 10s", unit)
			return 0, 0
		}
	}
	if d < time.Second || d > 24*time.Hour {
		r.fail(name, "window %v is out of range [1s, 24h]", d)
		return 0, 0
	}
	return n, d
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

// DefaultConcurrency is how many jobs a worker process runs at once unless
// WARREN_CONCURRENCY says otherwise (the worker SDK's default too). Jobs are
// mostly waiting on I/O, and a worker's claims and completions share one
// statement per shard, so more jobs in flight make bigger batches rather
// than more load: with 10, a worker spent its time waiting on round trips.
// CPU- or memory-heavy types set their own limit (worker.Concurrency).
const DefaultConcurrency = 50

// Worker is the worker process's configuration.
type Worker struct {
	Services
	// Queues: WARREN_QUEUES, the queues consumed, default "default".
	Queues []string
	// Concurrency: WARREN_CONCURRENCY, jobs run at once by this process,
	// default DefaultConcurrency.
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
	// Pprof: WARREN_PPROF, serve Go's profiles under /debug/pprof/ next to
	// /metrics; default false.
	Pprof bool
	// Tenants: WARREN_TENANTS, the tenants whose jobs this worker runs,
	// comma-separated; default every tenant.
	Tenants []string
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
	c.Concurrency = r.int("WARREN_CONCURRENCY", DefaultConcurrency, 1, 10_000)
	c.ShutdownGrace = r.duration("WARREN_SHUTDOWN_GRACE", 25*time.Second, 0, time.Hour)
	c.ResultTTL = r.duration("WARREN_RESULT_TTL", 24*time.Hour, time.Minute, 90*24*time.Hour)
	c.MaxResultBytes = r.int("WARREN_MAX_RESULT_BYTES", 1<<20, 1, 64<<20)
	c.Lease = r.duration("WARREN_LEASE", 30*time.Second, 3*time.Second, time.Hour)
	c.HTTPAllow = r.list("WARREN_HTTP_ALLOW", nil)
	c.MetricsAddr = r.metricsAddr()
	c.Pprof = r.bool("WARREN_PPROF", false)
	c.Tenants = r.list("WARREN_TENANTS", nil)
	for _, t := range c.Tenants {
		if !tenantPattern.MatchString(t) {
			r.fail("WARREN_TENANTS", "%q is not a tenant name (lowercase letters, digits, _ or -)", t)
		}
	}
	return c, r.err()
}

// Scheduler is the scheduler process's configuration.
type Scheduler struct {
	Services
	// Tick: WARREN_SCHEDULER_TICK, how often it does its rounds, default
	// 500ms, so that a job due at any moment is published within a second.
	Tick time.Duration
	// HTTPAllow: WARREN_HTTP_ALLOW, internal hosts, host:ports or CIDRs that
	// callback URLs may point at.
	HTTPAllow []string
	// SigningSecrets: WARREN_SIGNING_SECRETS, tenant:secret pairs; callbacks
	// are signed with their tenant's secret.
	SigningSecrets map[string]string
	// MetricsAddr as for the worker.
	MetricsAddr string
	// RelayAfter: WARREN_RELAY_AFTER, how long a queued job may go without
	// a confirmed RabbitMQ message before the leader's outbox relay
	// publishes it; default 3s.
	RelayAfter time.Duration
	// Retention: WARREN_RETENTION, how long succeeded and cancelled jobs are
	// kept after they finished; default 7d. RetentionDead:
	// WARREN_RETENTION_DEAD, the same for dead jobs; default 30d. Both take
	// a number of days ("7d") or a Go duration ("36h").
	Retention     time.Duration
	RetentionDead time.Duration
	// Cron: WARREN_CRON, the periodic jobs, as a JSON array:
	// [{"name":"nightly","schedule":"0 3 * * *","type":"echo","payload":{},"queue":"default"}].
	// Optional fields: queue (default "default"), payload (default {}),
	// priority (0-9), max_attempts (default 5), timeout (default "10m").
	Cron []CronJob
	// CronTenant: WARREN_CRON_TENANT, the tenant that owns the cron jobs;
	// default "default".
	CronTenant string
}

// CronJob is one entry of WARREN_CRON.
type CronJob struct {
	Name string
	// Schedule: standard 5-field cron ("0 3 * * *"), a descriptor
	// (@hourly, @daily, ...) or "@every 1m"; UTC unless prefixed with
	// CRON_TZ=Area/City.
	Schedule    string
	Type        string
	Queue       string
	Payload     json.RawMessage
	Priority    int
	MaxAttempts int
	Timeout     time.Duration
}

// LoadScheduler reads the scheduler process's configuration.
func LoadScheduler(get Getenv) (Scheduler, error) {
	r := &reader{get: get}
	c := Scheduler{Services: r.services()}
	c.Tick = r.duration("WARREN_SCHEDULER_TICK", 500*time.Millisecond, 10*time.Millisecond, time.Minute)
	c.HTTPAllow = r.list("WARREN_HTTP_ALLOW", nil)
	c.SigningSecrets = map[string]string{}
	for _, t := range r.tenants("WARREN_SIGNING_SECRETS") {
		c.SigningSecrets[t.Name] = t.Token
	}
	c.MetricsAddr = r.metricsAddr()
	c.RelayAfter = r.duration("WARREN_RELAY_AFTER", 3*time.Second, 100*time.Millisecond, time.Hour)
	c.Retention = r.days("WARREN_RETENTION", 7*24*time.Hour, time.Minute, 100*365*24*time.Hour)
	c.RetentionDead = r.days("WARREN_RETENTION_DEAD", 30*24*time.Hour, time.Minute, 100*365*24*time.Hour)
	c.Cron = r.cron("WARREN_CRON")
	c.CronTenant = r.str("WARREN_CRON_TENANT", "default")
	if !tenantPattern.MatchString(c.CronTenant) {
		r.fail("WARREN_CRON_TENANT", "%q must be lowercase letters, digits, _ or -", c.CronTenant)
	}
	return c, r.err()
}

// days reads a duration given as a number of days ("7d") or as a Go
// duration ("36h").
func (r *reader) days(name string, def, lo, hi time.Duration) time.Duration {
	v, _ := r.first(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if n, ok := strings.CutSuffix(v, "d"); ok {
		var days int
		days, err = strconv.Atoi(n)
		d = time.Duration(days) * 24 * time.Hour
		if err == nil && days > int(hi/(24*time.Hour)) {
			d = hi + 1
		}
	}
	if err != nil {
		r.fail(name, "%q is not a number of days such as 7d, or a duration such as 36h", v)
		return def
	}
	if d < lo || d > hi {
		r.fail(name, "%s is out of range [%v, %v]", v, lo, hi)
		return def
	}
	return d
}

// cronEntry is the JSON form of a WARREN_CRON entry.
type cronEntry struct {
	Name        string          `json:"name"`
	Schedule    string          `json:"schedule"`
	Type        string          `json:"type"`
	Queue       string          `json:"queue"`
	Payload     json.RawMessage `json:"payload"`
	Priority    int             `json:"priority"`
	MaxAttempts *int            `json:"max_attempts"`
	Timeout     string          `json:"timeout"`
}

// cron reads the periodic jobs: a JSON array of cronEntry.
func (r *reader) cron(name string) []CronJob {
	v, _ := r.first(name)
	if v == "" {
		return nil
	}
	dec := json.NewDecoder(strings.NewReader(v))
	dec.DisallowUnknownFields()
	var entries []cronEntry
	if err := dec.Decode(&entries); err != nil {
		r.fail(name, "not a JSON array of {\"name\", \"schedule\", \"type\", ...} objects: %v", err)
		return nil
	}
	if dec.More() {
		r.fail(name, "unexpected data after the JSON array")
		return nil
	}
	var out []CronJob
	seen := map[string]bool{}
	for i, e := range entries {
		bad := func(format string, args ...any) {
			r.fail(name, "entry %d (%s): %s", i+1, e.Name, fmt.Sprintf(format, args...))
		}
		ok := true
		check := func(cond bool, format string, args ...any) {
			if !cond {
				bad(format, args...)
				ok = false
			}
		}
		check(namePattern.MatchString(e.Name), "name must be 1-100 letters, digits or _.:-")
		check(!seen[e.Name], "name used twice")
		seen[e.Name] = true
		if err := checkCron(e.Schedule); err != nil {
			bad("schedule %q: %v", e.Schedule, err)
			ok = false
		}
		check(namePattern.MatchString(e.Type), "type must be 1-100 letters, digits or _.:-")
		if e.Queue == "" {
			e.Queue = "default"
		}
		check(namePattern.MatchString(e.Queue), "queue must be 1-100 letters, digits or _.:-")
		check(e.Priority >= 0 && e.Priority <= 9, "priority must be between 0 and 9")
		job := CronJob{Name: e.Name, Schedule: e.Schedule, Type: e.Type, Queue: e.Queue,
			Payload: e.Payload, Priority: e.Priority, MaxAttempts: 5, Timeout: 10 * time.Minute}
		if e.MaxAttempts != nil {
			job.MaxAttempts = *e.MaxAttempts
			check(job.MaxAttempts >= 1 && job.MaxAttempts <= 100, "max_attempts must be between 1 and 100")
		}
		if e.Timeout != "" {
			d, err := time.ParseDuration(e.Timeout)
			check(err == nil && d >= time.Second && d <= 24*time.Hour, "timeout %q must be a duration between 1s and 24h", e.Timeout)
			job.Timeout = d
		}
		if len(job.Payload) == 0 || string(job.Payload) == "null" {
			job.Payload = json.RawMessage(`{}`)
		}
		if ok {
			out = append(out, job)
		}
	}
	return out
}

// checkCron reports whether the scheduler can parse a cron schedule.
// robfig/cron's parser panics on some malformed input, hence the recover.
func checkCron(spec string) (err error) {
	defer func() {
		if recover() != nil {
			err = errors.New("not a valid cron expression")
		}
	}()
	if spec == "" {
		return errors.New("required: a cron expression such as \"0 3 * * *\" or \"@every 1m\"")
	}
	_, err = cron.ParseStandard(spec)
	return err
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
