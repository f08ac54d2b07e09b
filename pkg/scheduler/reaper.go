package scheduler

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/warrenhq/warren/pkg/store"
)

// reaper gives the jobs of lost workers another attempt, on one shard
// (leader only). A running job whose lease ran out (its worker stopped
// renewing it: the process died, or lost Postgres for longer than the lease)
// goes back to queued, published in the same transaction, or to dead when
// its attempts are used up. The transitions do not wait for RabbitMQ: while
// it is down, requeued jobs are left to the relay.
//
// Fencing: rows are taken FOR UPDATE SKIP LOCKED and every UPDATE re-checks
// state = 'running' and the expired lease, so a deposed leader reaps nothing
// twice; the late worker's own writes are fenced by its attempt number.
type reaper struct {
	st interface {
		ReapExpired(ctx context.Context, shard, limit int, publish func(context.Context, []store.DueJob) error) (store.Reaped, error)
	}
	br             publisher
	shard          int
	batch          int
	publishTimeout time.Duration
	m              *metrics
	log            *slog.Logger
}

func (r *reaper) run(ctx context.Context) error {
	publish := r.publish
	if r.br.Ready(ctx) != nil {
		publish = nil // the relay publishes them once RabbitMQ is back
	}
	for ctx.Err() == nil {
		bctx, cancel := context.WithTimeout(ctx, batchTimeout)
		res, err := r.st.ReapExpired(bctx, r.shard, r.batch, publish)
		cancel()
		if res.Requeued > 0 || res.Dead > 0 {
			r.m.reaped.WithLabelValues("requeued").Add(float64(res.Requeued))
			r.m.reaped.WithLabelValues("dead").Add(float64(res.Dead))
			r.log.Warn("jobs of lost workers reaped: their lease expired", "requeued", res.Requeued, "dead", res.Dead, "left_to_relay", res.Unpublished)
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if res.Requeued+res.Dead < r.batch {
			return nil
		}
	}
	return nil
}

func (r *reaper) publish(ctx context.Context, jobs []store.DueJob) error {
	if err := publishJobs(ctx, r.br, r.publishTimeout, jobs); err != nil {
		return fmt.Errorf("publish %d reaped jobs of shard %d: %w", len(jobs), r.shard, err)
	}
	return nil
}
