package store

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/lib/pq"

	"github.com/warrenhq/warren/pkg/job"
)

// Held is a running attempt that a worker still holds.
type Held struct {
	ID      job.ID `db:"id"`
	Attempt int    `db:"attempt"`
}

// ExtendLeases renews the leases of the worker's running jobs, one statement
// per shard, and returns the attempts it still holds. A job in ids that is not
// returned, and whose shard answered, is no longer the worker's: it was
// cancelled, reaped or finished. Shards that did not answer are reported as
// *ShardError values joined into err, alongside the jobs the other shards
// confirmed.
func (s *Store) ExtendLeases(ctx context.Context, workerID string, lease time.Duration, ids []job.ID) ([]Held, error) {
	byShard := make(map[int][]string)
	for _, id := range ids {
		if id.Shard() >= len(s.shards) {
			continue // not a job of ours to hold: it cannot be running
		}
		v, _ := id.Value()
		byShard[id.Shard()] = append(byShard[id.Shard()], v.(string))
	}
	// The shards at once, and an answer by ctx's end: the other shards'
	// leases must not run out waiting for a shard that is frozen.
	held, errs := onShards(ctx, slices.Collect(maps.Keys(byShard)), "extend leases", func(n int) ([]Held, error) {
		var got []Held
		// Rows by primary key, state tested on the locked row, in id order,
		// as the batch claims and completions do (see claimBatchQuery).
		err := s.selectPrepared(ctx, n, &got, extendLeasesQuery, pq.Array(byShard[n]), workerID, lease.Milliseconds())
		if err != nil {
			return nil, fmt.Errorf("%d jobs: %w", len(byShard[n]), err)
		}
		return got, nil
	})
	return held, errors.Join(errs...)
}

// SetProgress stores a running attempt's progress report, any JSON value,
// shown as the job's progress. Like the outcome writes it is fenced: an
// attempt that is no longer the job's running one gets a *StateError (or
// ErrNotFound) and changes nothing.
func (s *Store) SetProgress(ctx context.Context, id job.ID, attempt int, progress job.JSON) error {
	db, err := s.shard(id)
	if err != nil {
		return err
	}
	res, err := db.ExecContext(ctx, `UPDATE jobs SET progress = $3 `+runningAttempt, id, attempt, nullJSON(progress))
	if err != nil {
		return fmt.Errorf("set progress of job %s: %w", id, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("set progress of job %s: %w", id, err)
	} else if n == 0 {
		return s.refusal(ctx, db, id)
	}
	return nil
}

// extendLeasesQuery renews the leases of worker $2's running jobs among the
// ids $1 by $3 ms.
const extendLeasesQuery = `WITH locked AS (
		SELECT id, state, worker_id FROM jobs WHERE id = ANY($1::uuid[])
		ORDER BY id FOR UPDATE)
	UPDATE jobs SET lease_until = now() + $3 * interval '1 millisecond', heartbeat_at = now()
	FROM locked
	WHERE jobs.id = locked.id AND locked.state = 'running' AND locked.worker_id = $2
	RETURNING jobs.id, jobs.attempt`
