// Command workers is Warren's stock worker process: the built-in job types,
// registered with the worker SDK exactly as a user's own program would.
// With PORT set it serves /metrics (Prometheus) and /healthz.
package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"syscall"

	"github.com/warrenhq/warren/pkg/builtin"
	"github.com/warrenhq/warren/pkg/config"
	"github.com/warrenhq/warren/pkg/serve"
	"github.com/warrenhq/warren/pkg/worker"
)

func main() {
	// A worker whose supervisor died (the scheduler running it, or foreman)
	// still gets SIGTERM and drains its jobs; its logs may then go to a
	// pipe nobody reads, and a write there must fail, not kill it mid-job.
	signal.Ignore(syscall.SIGPIPE)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Getenv, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "workers:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, getenv config.Getenv, out io.Writer) error {
	cfg, err := config.LoadWorker(getenv)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	log := cfg.Logger(out).With("process", "worker")
	w, err := worker.New(worker.Config{
		DatabaseURLs: cfg.DatabaseURLs, RabbitMQURL: cfg.RabbitMQURL, RedisURL: cfg.RedisURL,
		Namespace: cfg.Namespace, Queues: cfg.Queues, Concurrency: cfg.Concurrency,
		ShutdownGrace: cfg.ShutdownGrace, Lease: cfg.Lease,
		ResultTTL: cfg.ResultTTL, MaxResultBytes: cfg.MaxResultBytes,
		Tenants: cfg.Tenants, Logger: log,
	})
	if err != nil {
		return err
	}
	if err := builtin.Register(w, builtin.Options{HTTPAllow: cfg.HTTPAllow}); err != nil {
		return err
	}
	if cfg.MetricsAddr != "" {
		// A port that cannot be bound costs the metrics, not the jobs.
		h := metrics(w)
		if cfg.Pprof {
			h = serve.Profiling(h)
		}
		if stopServing, err := serve.Background(cfg.MetricsAddr, h, log); err != nil {
			log.Warn("metrics endpoint not served: the worker runs on without it", "error", err)
		} else {
			defer stopServing()
		}
	}
	return w.Run(ctx)
}

// metrics answers /metrics and /healthz for the worker.
func metrics(w *worker.Worker) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", w.Metrics())
	mux.HandleFunc("GET /healthz", func(rw http.ResponseWriter, _ *http.Request) {
		rw.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(rw, "ok\n")
	})
	return mux
}
