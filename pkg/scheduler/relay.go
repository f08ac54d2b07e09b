package scheduler

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/warrenhq/warren/pkg/store"
)

// relayer is the outbox relay of one shard (leader only): queued jobs that
// have had no confirmed message for RelayConfig.After are published and
// marked, in confirmed batches. They are the jobs of an api that died
// between its commit and its publish, or that could not reach RabbitMQ, and
// jobs a worker handed back without getting its message out.
//
// Fencing: rows are taken FOR UPDATE SKIP LOCKED and the mark re-checks
// state = 'queued', so a deposed leader still relaying at worst publishes a
// job twice, and a worker's claim succeeds once.
type relayer struct {
	st interface {
		RelayUnpublished(ctx context.Context, shard, limit int, after time.Duration, publish func(context.Context, []store.DueJob) error) (int, error)
	}
	br             publisher
	shard          int
	batch          int
	after          time.Duration
	publishTimeout time.Duration
	m              *metrics
	log            *slog.Logger
}

func (r *relayer) run(ctx context.Context) error {
	// Within one tick of RabbitMQ being back (the broker reconnects within
	// its backoff of at most 5s), the jobs go out.
	if err := r.br.Ready(ctx); err != nil {
		return fmt.Errorf("relay shard %d: %w", r.shard, err)
	}
	for ctx.Err() == nil {
		bctx, cancel := context.WithTimeout(ctx, batchTimeout)
		n, err := r.st.RelayUnpublished(bctx, r.shard, r.batch, r.after, r.publish)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if n > 0 {
			r.m.relayed.Add(float64(n))
			r.log.Info("relayed jobs that had no confirmed message", "jobs", n)
		}
		if n < r.batch {
			return nil
		}
	}
	return nil
}

func (r *relayer) publish(ctx context.Context, jobs []store.DueJob) error {
	if err := publishJobs(ctx, r.br, r.publishTimeout, jobs); err != nil {
		return fmt.Errorf("relay %d jobs of shard %d: %w", len(jobs), r.shard, err)
	}
	return nil
}
