// Command workers is Warren's stock worker process: the built-in job types,
// registered with the worker SDK exactly as a user's own program would.
// With PORT set it serves /metrics (Prometheus) and /healthz.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/warrenhq/warren/pkg/builtin"
	"github.com/warrenhq/warren/pkg/config"
	"github.com/warrenhq/warren/pkg/worker"
)

func main() {
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
		Logger: log,
	})
	if err != nil {
		return err
	}
	if err := builtin.Register(w, builtin.Options{HTTPAllow: cfg.HTTPAllow}); err != nil {
		return err
	}
	if cfg.MetricsAddr != "" {
		stopServing := serve(cfg.MetricsAddr, w, log)
		defer stopServing()
	}
	return w.Run(ctx)
}

// serve answers /metrics and /healthz on addr until the returned function is
// called. A port that cannot be bound costs the metrics, not the jobs: the
// worker runs on without them.
func serve(addr string, w *worker.Worker, log *slog.Logger) (stop func()) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		log.Warn("metrics endpoint not served: the worker runs on without it", "addr", addr, "error", err)
		return func() {}
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", w.Metrics())
	mux.HandleFunc("GET /healthz", func(rw http.ResponseWriter, _ *http.Request) {
		rw.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(rw, "ok\n")
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics endpoint", "error", err)
		}
	}()
	log.Info("serving /metrics and /healthz", "addr", ln.Addr().String())
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-done
	}
}
