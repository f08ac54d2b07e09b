// Package bench is Warren's load generator: it measures, in one run against a
// running stack, RabbitMQ's own ceiling on the same broker, the batch and
// single submit paths end to end, latency at a fixed offered rate, and the
// peak memory of the api and worker processes, and, for the batch, single
// and latency phases, where the time went (CPU by program and Postgres's
// write-ahead log, per job); it reports them with the settings that explain
// them.
package bench

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/warrenhq/warren/pkg/client"
)

// Config says what to run against and how hard. Zero values take defaults.
type Config struct {
	// URL and Token reach the stack's REST API (through the load balancer).
	URL   string
	Token string
	// RabbitMQURL is the broker measured for the ceiling; empty skips it.
	RabbitMQURL string
	// DatabaseURLs are the shards, for reporting their durability settings.
	DatabaseURLs []string
	// N is the number of messages/jobs for the ceiling, batch and single phases.
	N int
	// Clients is how many concurrent submitters the batch and single phases use.
	Clients int
	// BatchSize is the jobs per POST /v1/jobs/batch.
	BatchSize int
	// Rate and Duration are the open-loop latency phase's offered load.
	Rate     int
	Duration time.Duration
	// Timeout bounds each phase.
	Timeout time.Duration
	// Concurrency is the workers' WARREN_CONCURRENCY, reported only.
	Concurrency int
	// Queue is the Warren queue the echo jobs go to.
	Queue string
	// Phases names the phases to run (ceiling, postgres, batch, single,
	// latency, floor); empty runs them all.
	Phases []string
}

// phaseNames are the phases of Config.Phases, in the order they run.
var phaseNames = []string{"ceiling", "postgres", "batch", "single", "latency", "floor"}

// ParsePhases checks a comma-separated list of phase names.
func ParsePhases(list string) ([]string, error) {
	if strings.TrimSpace(list) == "" {
		return nil, nil
	}
	var out []string
	for _, p := range strings.Split(list, ",") {
		p = strings.TrimSpace(p)
		if !slices.Contains(phaseNames, p) {
			return nil, fmt.Errorf("bench: unknown phase %q (phases: %s)", p, strings.Join(phaseNames, ", "))
		}
		out = append(out, p)
	}
	return out, nil
}

func (c Config) runs(phase string) bool {
	return len(c.Phases) == 0 || slices.Contains(c.Phases, phase)
}

func (c Config) withDefaults() Config {
	if c.N <= 0 {
		c.N = 20000
	}
	if c.Clients <= 0 {
		c.Clients = 32
	}
	if c.BatchSize <= 0 {
		c.BatchSize = 500
	}
	if c.Rate <= 0 {
		c.Rate = 200
	}
	if c.Duration <= 0 {
		c.Duration = 10 * time.Second
	}
	if c.Timeout <= 0 {
		c.Timeout = 5 * time.Minute
	}
	if c.Concurrency <= 0 {
		c.Concurrency = 50 // pkg/worker's default
	}
	if c.Queue == "" {
		c.Queue = "default"
	}
	return c
}

// Result holds every figure of one run; it is what the JSON file contains.
type Result struct {
	StartedAt time.Time    `json:"started_at"`
	Settings  Settings     `json:"settings"`
	Ceiling   *Throughput  `json:"ceiling,omitempty"`
	Postgres  *Throughput  `json:"postgres_ceiling,omitempty"`
	Batch     *Throughput  `json:"batch,omitempty"`
	Single    *Throughput  `json:"single,omitempty"`
	Latency   *Latency     `json:"latency,omitempty"`
	Floor     *Floor       `json:"floor,omitempty"`
	Memory    []ProcMemory `json:"memory"`
}

// Throughput is one closed-loop phase: Count items in Seconds.
type Throughput struct {
	Count   int     `json:"count"`
	Seconds float64 `json:"seconds"`
	PerSec  float64 `json:"per_sec"`
	// OfCeiling is PerSec as a fraction of the ceiling's, when measured.
	OfCeiling float64 `json:"of_ceiling,omitempty"`
	// Usage is where the time went.
	Usage *Usage `json:"usage,omitempty"`
}

// Latency is the open-loop phase's figures, in milliseconds.
type Latency struct {
	Rate           int     `json:"rate"`
	Seconds        float64 `json:"seconds"`
	Jobs           int     `json:"jobs"`
	SubmitP50      float64 `json:"submit_p50_ms"`
	SubmitP99      float64 `json:"submit_p99_ms"`
	StartedP50     float64 `json:"submit_to_started_p50_ms"`
	StartedP99     float64 `json:"submit_to_started_p99_ms"`
	SucceededP50   float64 `json:"submit_to_succeeded_p50_ms"`
	SucceededP99   float64 `json:"submit_to_succeeded_p99_ms"`
	AchievedPerSec float64 `json:"achieved_submit_per_sec"`
	SubmitFailures int     `json:"submit_failures"`
	NotSucceeded   int     `json:"not_succeeded"`
	ClockNote      string  `json:"clock_note"`
	// Usage is where the time went, from the first submit until the queue
	// drained (read back afterwards, so the reads are not in it).
	Usage *Usage `json:"usage,omitempty"`
}

// Run runs every phase in order and returns the figures. A phase that fails
// ends the run with its error; the figures so far are returned with it.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	cfg = cfg.withDefaults()
	if cfg.URL == "" || cfg.Token == "" {
		return nil, errors.New("bench: WARREN_URL and WARREN_TOKEN are required")
	}
	hc := &http.Client{Transport: &http.Transport{
		MaxIdleConns:        4 * cfg.Clients,
		MaxIdleConnsPerHost: 4 * cfg.Clients,
		IdleConnTimeout:     30 * time.Second,
	}}
	defer hc.CloseIdleConnections()
	c, err := client.New(cfg.URL, cfg.Token, client.WithHTTPClient(hc))
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	res := &Result{StartedAt: time.Now().UTC()}
	cpu := newCPUWatch()
	mem := newMemWatch(cpu)
	mem.start(ctx, 250*time.Millisecond)
	defer func() { res.Memory = mem.stop() }()

	m := newMeter(cpu, cfg.DatabaseURLs)
	defer m.close()
	res.Settings = settings(ctx, cfg)
	if cfg.RabbitMQURL != "" && cfg.runs("ceiling") {
		res.Ceiling, err = phase(ctx, cfg, "ceiling", func(ctx context.Context) (*Throughput, error) {
			w := m.begin(ctx)
			t, err := ceiling(ctx, cfg.RabbitMQURL, cfg.N)
			if err == nil {
				t.Usage = w.end(ctx, cfg.N)
			}
			return t, err
		})
		if err != nil {
			return res, err
		}
	}
	if len(cfg.DatabaseURLs) > 0 && cfg.runs("postgres") {
		res.Postgres, err = phase(ctx, cfg, "postgres", func(ctx context.Context) (*Throughput, error) {
			w := m.begin(ctx)
			t, err := pgCeiling(ctx, cfg.DatabaseURLs[0], cfg.N, cfg.Clients, cfg.BatchSize)
			if err == nil {
				t.Usage = w.end(ctx, cfg.N)
			}
			return t, err
		})
		if err != nil {
			return res, err
		}
	}
	if cfg.runs("batch") {
		res.Batch, err = phase(ctx, cfg, "batch", func(ctx context.Context) (*Throughput, error) {
			return batchPath(ctx, c, cfg, m)
		})
		if err != nil {
			return res, err
		}
	}
	if cfg.runs("single") {
		res.Single, err = phase(ctx, cfg, "single", func(ctx context.Context) (*Throughput, error) {
			return singlePath(ctx, c, cfg, m)
		})
		if err != nil {
			return res, err
		}
	}
	if res.Ceiling != nil && res.Ceiling.PerSec > 0 {
		for _, t := range []*Throughput{res.Batch, res.Single} {
			if t != nil {
				t.OfCeiling = t.PerSec / res.Ceiling.PerSec
			}
		}
	}
	if cfg.runs("latency") {
		lctx, cancel := context.WithTimeout(ctx, cfg.Timeout+cfg.Duration)
		defer cancel()
		res.Latency, err = latency(lctx, c, cfg, m)
		if err != nil {
			return res, fmt.Errorf("bench: latency: %w", err)
		}
	}
	if cfg.runs("floor") && cfg.RabbitMQURL != "" && len(cfg.DatabaseURLs) > 0 {
		fctx, cancel := context.WithTimeout(ctx, cfg.Timeout+cfg.Duration)
		defer cancel()
		res.Floor, err = floor(fctx, cfg, m)
		if err != nil {
			return res, fmt.Errorf("bench: floor: %w", err)
		}
	}
	return res, nil
}

func phase(ctx context.Context, cfg Config, name string, fn func(context.Context) (*Throughput, error)) (*Throughput, error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	t, err := fn(ctx)
	if err != nil {
		return nil, fmt.Errorf("bench: %s: %w", name, err)
	}
	return t, nil
}

func throughput(n int, d time.Duration) *Throughput {
	return &Throughput{Count: n, Seconds: d.Seconds(), PerSec: float64(n) / d.Seconds()}
}

// Settings are the knobs that explain the figures.
type Settings struct {
	CPUs              int    `json:"cpus"`
	Shards            int    `json:"shards"`
	Fsync             string `json:"postgres_fsync"`
	SynchronousCommit string `json:"postgres_synchronous_commit"`
	QueueType         string `json:"queue_type"`
	WorkerConcurrency int    `json:"worker_concurrency"`
	Prefetch          int    `json:"prefetch"`
	N                 int    `json:"n"`
	Clients           int    `json:"clients"`
	BatchSize         int    `json:"batch_size"`
	Completion        string `json:"completion_detection"`
}

// EnvInt reads an integer setting from getenv, def when unset or malformed.
func EnvInt(getenv func(string) string, key string, def int) int {
	if n, err := strconv.Atoi(getenv(key)); err == nil && n > 0 {
		return n
	}
	return def
}

func settings(ctx context.Context, cfg Config) Settings {
	s := Settings{
		CPUs:              runtime.NumCPU(),
		Shards:            len(cfg.DatabaseURLs),
		Fsync:             "unknown",
		SynchronousCommit: "unknown",
		QueueType:         "classic, x-max-priority 9, durable; persistent messages, publisher confirms",
		WorkerConcurrency: cfg.Concurrency,
		Prefetch:          cfg.Concurrency, // pkg/worker's default: prefetch = concurrency
		N:                 cfg.N,
		Clients:           cfg.Clients,
		BatchSize:         cfg.BatchSize,
		Completion:        "GET /v1/queues polled every 200 ms until the queue has nothing ready, running, scheduled or retrying",
	}
	if len(cfg.DatabaseURLs) > 0 {
		if f, sc, err := pgDurability(ctx, cfg.DatabaseURLs[0]); err == nil {
			s.Fsync, s.SynchronousCommit = f, sc
		} else {
			fmt.Fprintf(os.Stderr, "bench: reading Postgres settings: %v\n", err)
		}
	}
	return s
}
