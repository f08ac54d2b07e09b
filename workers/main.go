// Command workers is Warren's stock worker process: the built-in job types,
// registered with the worker SDK exactly as a user's own program would.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

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
		ShutdownGrace: cfg.ShutdownGrace, ResultTTL: cfg.ResultTTL, MaxResultBytes: cfg.MaxResultBytes,
		Logger: log,
	})
	if err != nil {
		return err
	}
	if err := builtin.Register(w); err != nil {
		return err
	}
	return w.Run(ctx)
}
