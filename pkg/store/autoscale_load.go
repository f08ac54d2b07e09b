package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/lib/pq"
)

// QueueLoad is one queue's load, summed over the shards that answered: what
// the autoscaler sizes the worker fleet from.
type QueueLoad struct {
	Queue string
	// Queued counts the jobs waiting to start (state queued), whether their
	// message is still in RabbitMQ or prefetched by a worker.
	Queued int64
	// Running counts the jobs being handled.
	Running int64
	// OldestQueued is how long the oldest queued job has waited since it
	// became queued; zero without queued jobs.
	OldestQueued time.Duration
	// Arrived counts the jobs created within the window to run at once
	// (delayed jobs count when they become queued, as backlog).
	Arrived int64
	// Finished counts the jobs that reached a terminal state within the
	// window.
	Finished int64
	// MeanJobTime is the mean time from start to finish of the jobs that
	// finished within the window after running; zero when none did.
	MeanJobTime time.Duration
}

// The per-shard queries of QueueLoad, each on an index:
//   - waiting and running: jobs_queued_since (queue, queued_at) for the queued
//     count and the oldest (one probe per queue), jobs_queue_state for running;
//   - arrivals: a range of the primary key, whose ids begin with their creation
//     time in milliseconds: the window's lower bound as the smallest id of that
//     millisecond;
//   - finishes: jobs_finished_at.
const (
	loadStateQuery = `SELECT q.queue,
			(SELECT count(*) FROM jobs j WHERE j.queue = q.queue AND j.state = 'queued') AS queued,
			(SELECT count(*) FROM jobs j WHERE j.queue = q.queue AND j.state = 'running') AS running,
			coalesce((SELECT extract(epoch FROM now() - min(j.queued_at)) FROM jobs j
				WHERE j.queue = q.queue AND j.state = 'queued'), 0)::float8 AS oldest
		FROM unnest($1::text[]) AS q(queue)`
	loadArrivalsQuery = `SELECT queue, count(*) AS arrived FROM jobs
		WHERE id >= (lpad(to_hex(floor(extract(epoch FROM now() - make_interval(secs => $2)) * 1000)::bigint), 12, '0')
				|| '00000000000000000000')::uuid
			AND queue = ANY($1) AND (scheduled_at IS NULL OR scheduled_at <= created_at)
		GROUP BY queue`
	loadFinishedQuery = `SELECT queue, count(*) AS finished,
			coalesce(avg(extract(epoch FROM finished_at - started_at)) FILTER (WHERE started_at IS NOT NULL), 0)::float8 AS mean,
			count(started_at) AS timed
		FROM jobs
		WHERE finished_at >= now() - make_interval(secs => $2) AND queue = ANY($1)
		GROUP BY queue`
)

// QueueLoad returns the load of each of queues, in their order, summed over
// the shards (queried in parallel), over the last window of each shard's
// clock. Shards that do not answer are left out of the sums and reported as
// *ShardError values in the error.
func (s *Store) QueueLoad(ctx context.Context, queues []string, window time.Duration) ([]QueueLoad, error) {
	type row struct {
		Queue    string  `db:"queue"`
		Queued   int64   `db:"queued"`
		Running  int64   `db:"running"`
		Oldest   float64 `db:"oldest"`
		Arrived  int64   `db:"arrived"`
		Finished int64   `db:"finished"`
		Mean     float64 `db:"mean"`
		Timed    int64   `db:"timed"`
	}
	per := make([][3][]row, len(s.shards))
	errs := make([]error, len(s.shards))
	secs := window.Seconds()
	var wg sync.WaitGroup
	for i, db := range s.shards {
		wg.Go(func() {
			qs := pq.Array(queues)
			err := db.SelectContext(ctx, &per[i][0], loadStateQuery, qs)
			if err == nil {
				err = db.SelectContext(ctx, &per[i][1], loadArrivalsQuery, qs, secs)
			}
			if err == nil {
				err = db.SelectContext(ctx, &per[i][2], loadFinishedQuery, qs, secs)
			}
			if err != nil {
				errs[i] = &ShardError{Shard: i, Err: fmt.Errorf("queue load: %w", err)}
			}
		})
	}
	wg.Wait()
	out := make([]QueueLoad, len(queues))
	index := make(map[string]int, len(queues))
	for i, q := range queues {
		out[i].Queue = q
		index[q] = i
	}
	jobSeconds := make([]float64, len(queues)) // Σ job time, for the mean
	timed := make([]int64, len(queues))
	var failed []error
	for shard, sets := range per {
		if errs[shard] != nil {
			failed = append(failed, errs[shard])
			continue
		}
		for _, set := range sets {
			for _, r := range set {
				i, ok := index[r.Queue]
				if !ok {
					continue
				}
				l := &out[i]
				l.Queued += r.Queued
				l.Running += r.Running
				l.OldestQueued = max(l.OldestQueued, time.Duration(max(r.Oldest, 0)*float64(time.Second)))
				l.Arrived += r.Arrived
				l.Finished += r.Finished
				jobSeconds[i] += r.Mean * float64(r.Timed)
				timed[i] += r.Timed
			}
		}
	}
	for i := range out {
		if timed[i] > 0 {
			out[i].MeanJobTime = time.Duration(jobSeconds[i] / float64(timed[i]) * float64(time.Second))
		}
	}
	return out, errors.Join(failed...)
}
