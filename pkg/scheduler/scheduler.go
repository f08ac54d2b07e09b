// Package scheduler is the work of Warren's scheduler process. For now it
// connects to the services and reports its health; due-job dispatch, the
// outbox relay, the reaper and the autoscaler build on it.
package scheduler

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/warrenhq/warren/pkg/broker"
	"github.com/warrenhq/warren/pkg/store"
)

// Config configures the scheduler.
type Config struct {
	RabbitMQURL string
	Namespace   string
	// Tick is how often the scheduler does its rounds.
	Tick time.Duration
	// AliveEvery is how often it logs that it is alive; default 1m.
	AliveEvery time.Duration
}

// Run connects and runs the scheduler until ctx is cancelled.
func Run(ctx context.Context, cfg Config, st *store.Store, log *slog.Logger) error {
	if cfg.AliveEvery <= 0 {
		cfg.AliveEvery = time.Minute
	}
	br, err := broker.New(ctx, broker.Config{URL: cfg.RabbitMQURL, Prefix: cfg.Namespace, ConnectionName: "warren-scheduler"}, log)
	if err != nil {
		return fmt.Errorf("scheduler: %w", err)
	}
	defer br.Close()
	report := func() {
		up := 0
		for _, err := range st.Ping(ctx) {
			if err == nil {
				up++
			}
		}
		rabbit := "ok"
		if err := br.Ready(ctx); err != nil {
			rabbit = "down"
		}
		log.Info("scheduler alive", "shards", st.Shards(), "shards_up", up, "rabbitmq", rabbit)
	}
	report()
	t := time.NewTicker(cfg.AliveEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			log.Info("scheduler stopped")
			return nil
		case <-t.C:
			report()
		}
	}
}
