// Command scheduler is Warren's scheduler process. `scheduler migrate` is the
// Procfile's release command: it applies the migrations to every shard.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/warrenhq/warren/pkg/config"
	"github.com/warrenhq/warren/pkg/scheduler"
	"github.com/warrenhq/warren/pkg/store"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "scheduler:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, getenv config.Getenv, out io.Writer) error {
	cfg, err := config.LoadScheduler(getenv)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	log := cfg.Logger(out).With("process", "scheduler")
	st, err := store.Open(store.Config{URLs: cfg.DatabaseURLs, MaxConns: 4})
	if err != nil {
		return err
	}
	defer st.Close()
	switch {
	case len(args) == 1 && args[0] == "migrate":
		if err := st.Migrate(ctx); err != nil {
			return err
		}
		log.Info("migrations applied", "shards", st.Shards())
		return nil
	case len(args) > 0:
		return fmt.Errorf("unknown arguments %q; usage: scheduler [migrate]", args)
	}
	return scheduler.Run(ctx, scheduler.Config{Tick: cfg.Tick, RabbitMQURL: cfg.RabbitMQURL, Namespace: cfg.Namespace}, st, log)
}
