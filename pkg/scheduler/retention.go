package scheduler

import (
	"context"
	"log/slog"
	"time"

	"github.com/warrenhq/warren/pkg/job"
)

// maxRetentionBatches bounds one round of a shard's retention (the rest
// waits for the next round), so a first run over years of history does not
// hold the duty for long.
const maxRetentionBatches = 200

// retention deletes one shard's old finished jobs (leader only): succeeded
// and cancelled ones after RetentionConfig.Finished, dead ones after
// RetentionConfig.Dead, in batches of RetentionConfig.Batch rows, each its
// own short statement. Jobs whose callback is still being delivered stay.
//
// Fencing: the DELETE re-checks the state and the age on rows it locks
// with SKIP LOCKED, so a deposed leader only ever deletes what has expired.
type retention struct {
	st interface {
		DeleteFinished(ctx context.Context, shard int, states []job.State, olderThan time.Duration, limit int) (int, error)
	}
	shard    int
	finished time.Duration
	dead     time.Duration
	batch    int
	m        *metrics
	log      *slog.Logger
}

func (r *retention) run(ctx context.Context) error {
	for _, rule := range []struct {
		name   string
		states []job.State
		age    time.Duration
	}{
		{"finished", []job.State{job.Succeeded, job.Cancelled}, r.finished},
		{"dead", []job.State{job.Dead}, r.dead},
	} {
		total := 0
		for range maxRetentionBatches {
			bctx, cancel := context.WithTimeout(ctx, batchTimeout)
			n, err := r.st.DeleteFinished(bctx, r.shard, rule.states, rule.age, r.batch)
			cancel()
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
			total += n
			r.m.deleted.WithLabelValues(rule.name).Add(float64(n))
			if n < r.batch {
				break
			}
		}
		if total > 0 {
			r.log.Info("old jobs deleted", "rule", rule.name, "states", rule.states, "older_than", rule.age.String(), "jobs", total)
		}
	}
	return nil
}
