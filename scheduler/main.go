// Command scheduler is Warren's scheduler process: it publishes due jobs,
// delivers job callbacks and watches queue depth (package scheduler), sizes
// the worker fleet when WARREN_AUTOSCALE is set (package autoscale), and
// serves /metrics and /healthz on PORT when it is set. `scheduler migrate` is
// the Procfile's release command: it applies the migrations to every shard.
// `scheduler simulate` prints the autoscaler's simulation table
// (docs/AUTOSCALING.md).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/warrenhq/warren/pkg/broker"
	"github.com/warrenhq/warren/pkg/config"
	"github.com/warrenhq/warren/pkg/netguard"
	"github.com/warrenhq/warren/pkg/scheduler"
	"github.com/warrenhq/warren/pkg/serve"
	"github.com/warrenhq/warren/pkg/store"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	out := io.Writer(os.Stderr)
	if len(os.Args) > 1 && os.Args[1] == "simulate" {
		out = os.Stdout // the table is the command's output, not a log
	}
	if err := run(ctx, os.Args[1:], os.Getenv, out); err != nil {
		fmt.Fprintln(os.Stderr, "scheduler:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, getenv config.Getenv, out io.Writer) error {
	if len(args) > 0 && args[0] == "simulate" {
		return simulate(args[1:], getenv, out)
	}
	cfg, err := config.LoadScheduler(getenv)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	log := cfg.Logger(out).With("process", "scheduler")
	st, err := store.Open(store.Config{URLs: cfg.DatabaseURLs, MaxConns: 8})
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
		return fmt.Errorf("unknown arguments %q; usage: scheduler [migrate | simulate [-seeds N]]", args)
	}
	autoscaleCfg, err := config.LoadAutoscale(getenv)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}

	// The allow list is checked here so that a bad entry stops the process
	// with the variable named, like every other setting.
	if _, err := netguard.New(cfg.HTTPAllow); err != nil {
		return fmt.Errorf("config: WARREN_HTTP_ALLOW: %w", err)
	}
	br, err := connect(ctx, broker.Config{URL: cfg.RabbitMQURL, Prefix: cfg.Namespace, ConnectionName: "warren-scheduler"}, log)
	if err != nil || br == nil {
		return err // nil: stopped before RabbitMQ was reachable
	}
	defer br.Close()
	cron := make([]scheduler.CronJob, len(cfg.Cron))
	for i, c := range cfg.Cron {
		cron[i] = scheduler.CronJob(c)
	}
	s, err := scheduler.New(scheduler.Config{
		Tick: cfg.Tick,
		Callbacks: scheduler.CallbackConfig{
			HTTPAllow:      cfg.HTTPAllow,
			SigningSecrets: cfg.SigningSecrets,
		},
		Relay:      scheduler.RelayConfig{After: cfg.RelayAfter},
		Retention:  scheduler.RetentionConfig{Finished: cfg.Retention, Dead: cfg.RetentionDead},
		Cron:       cron,
		CronTenant: cfg.CronTenant,
	}, st, br, log)
	if err != nil {
		return err
	}
	// The local workers, if any, run while this scheduler leads; s.Run
	// returns once every one of them has exited.
	if err := setupAutoscaler(autoscaleCfg, s, st, br, out, log); err != nil {
		return err
	}
	if cfg.MetricsAddr != "" {
		// A taken port costs the metrics, not the scheduling.
		if stopServing, err := serve.Background(cfg.MetricsAddr, s.Handler(), log); err != nil {
			log.Error("no /metrics and /healthz", "error", err)
		} else {
			defer stopServing()
		}
	}
	return s.Run(ctx)
}

// connect dials RabbitMQ until it answers or ctx ends (then it returns nil,
// nil): a scheduler started before RabbitMQ waits for it rather than exit,
// which under foreman would stop the whole stack.
func connect(ctx context.Context, cfg broker.Config, log *slog.Logger) (*broker.Broker, error) {
	wait := 500 * time.Millisecond
	for {
		br, err := broker.New(ctx, cfg, log)
		if err == nil {
			return br, nil
		}
		if ctx.Err() != nil {
			return nil, nil
		}
		if errors.Is(err, broker.ErrClosed) || !retryable(err) {
			return nil, err
		}
		log.Warn("RabbitMQ unreachable; retrying", "error", err, "retry_in", wait)
		select {
		case <-ctx.Done():
			return nil, nil
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// retryable tells a connection failure from a bad setting, which no retry
// fixes.
func retryable(err error) bool {
	var nerr net.Error
	var operr *net.OpError
	return errors.As(err, &nerr) || errors.As(err, &operr) || errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNREFUSED)
}
