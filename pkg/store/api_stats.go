package store

import (
	"context"
	"slices"
	"strings"
)

// QueueStats counts one queue's jobs of one tenant.
type QueueStats struct {
	Queue     string `db:"queue"`
	Ready     int64  `db:"ready"` // queued
	Running   int64  `db:"running"`
	Scheduled int64  `db:"scheduled"`
	Retrying  int64  `db:"retrying"`
	Dead      int64  `db:"dead"`
	// OldestReadyAge is how long the oldest queued job has been ready, in
	// seconds: since it was created, or since its run time if it was delayed
	// or retried. Zero without queued jobs.
	OldestReadyAge float64 `db:"oldest_ready_age"`
	// FinishedLastMinute counts the jobs that reached a terminal state in the
	// last 60 seconds.
	FinishedLastMinute int64 `db:"finished_last_minute"`
}

// QueueStats returns the tenant's per-queue statistics summed over every
// shard that answers, sorted by queue name, and the shards that did not
// answer as *ShardError values. Ages and the last minute are measured by
// each shard's clock, where the times were written.
func (s *Store) QueueStats(ctx context.Context, tenant string) ([]QueueStats, []error) {
	rows, failed := onShards(ctx, s.allShards(), "queue stats", func(n int) ([]QueueStats, error) {
		var rows []QueueStats
		err := s.shards[n].SelectContext(ctx, &rows, `SELECT queue,
					count(*) FILTER (WHERE state = 'queued') AS ready,
					count(*) FILTER (WHERE state = 'running') AS running,
					count(*) FILTER (WHERE state = 'scheduled') AS scheduled,
					count(*) FILTER (WHERE state = 'retrying') AS retrying,
					count(*) FILTER (WHERE state = 'dead') AS dead,
					coalesce(extract(epoch FROM now() - min(greatest(created_at, scheduled_at))
						FILTER (WHERE state = 'queued')), 0)::float8 AS oldest_ready_age,
					count(*) FILTER (WHERE finished_at >= now() - interval '60 seconds') AS finished_last_minute
				FROM jobs
				WHERE tenant = $1 AND (state IN ('queued', 'running', 'scheduled', 'retrying', 'dead')
					OR finished_at >= now() - interval '60 seconds')
				GROUP BY queue`, tenant)
		return rows, err
	})
	sum := map[string]*QueueStats{}
	for _, r := range rows {
		t := sum[r.Queue]
		if t == nil {
			t = &QueueStats{Queue: r.Queue}
			sum[r.Queue] = t
		}
		t.Ready += r.Ready
		t.Running += r.Running
		t.Scheduled += r.Scheduled
		t.Retrying += r.Retrying
		t.Dead += r.Dead
		t.OldestReadyAge = max(t.OldestReadyAge, max(r.OldestReadyAge, 0))
		t.FinishedLastMinute += r.FinishedLastMinute
	}
	out := make([]QueueStats, 0, len(sum))
	for _, t := range sum {
		out = append(out, *t)
	}
	slices.SortFunc(out, func(a, b QueueStats) int { return strings.Compare(a.Queue, b.Queue) })
	return out, failed
}
