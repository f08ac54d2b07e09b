package store

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/lib/pq"

	"github.com/warrenhq/warren/pkg/job"
)

// DueJob is a scheduled or retrying job whose time has come: what the
// scheduler needs to publish it.
type DueJob struct {
	ID       job.ID `db:"id"`
	Type     string `db:"type"`
	Queue    string `db:"queue"`
	Priority int    `db:"priority"`
}

// dueQuery takes the oldest due jobs of a shard under row locks, skipping rows
// another scheduler holds. The partial index jobs_due (scheduled_at, over
// scheduled and retrying rows only) serves both the filter and the order, so
// the cost follows the number of waiting jobs, not the size of the table.
const dueQuery = `SELECT id, type, queue, priority FROM jobs
	WHERE state IN ('scheduled', 'retrying') AND scheduled_at <= now()
	ORDER BY scheduled_at
	LIMIT $1
	FOR UPDATE SKIP LOCKED`

// DispatchDue moves up to limit due jobs of shard to queued, provided that
// publish succeeds for them. In one transaction it locks the due jobs
// (skipping those locked by a concurrent call, so any number of schedulers
// can run), calls publish with them, and marks them queued only if publish
// returns nil; otherwise it rolls back and the jobs stay due for the next
// call. It returns how many jobs it moved.
//
// Deprecated: it publishes inside the transaction, and a worker that gets a
// message before the commit sees the job still due (its claim's UPDATE does
// not wait for a row that does not match yet) and drops the message, leaving
// the job queued with no message. The scheduler uses PublishDue, which
// commits first and publishes after; this remains only for its tests.
func (s *Store) DispatchDue(ctx context.Context, shard, limit int, publish func(context.Context, []DueJob) error) (int, error) {
	if shard < 0 || shard >= len(s.shards) {
		return 0, fmt.Errorf("dispatch due jobs: %w %d", ErrBadShard, shard)
	}
	tx, err := s.shards[shard].BeginTxx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("dispatch due jobs on shard %d: %w", shard, err)
	}
	defer func() { _ = tx.Rollback() }() // a no-op after Commit

	var due []DueJob
	if err := tx.SelectContext(ctx, &due, dueQuery, limit); err != nil {
		return 0, fmt.Errorf("select due jobs on shard %d: %w", shard, err)
	}
	if len(due) == 0 {
		return 0, nil
	}
	if err := publish(ctx, due); err != nil {
		return 0, err
	}
	ids := make([]string, len(due))
	for i, d := range due {
		ids[i] = uuidText(d.ID)
	}
	// The rows are locked, so the state test only documents the transition.
	res, err := tx.ExecContext(ctx, `UPDATE jobs SET state = 'queued'
		WHERE id = ANY($1::uuid[]) AND state IN ('scheduled', 'retrying')`, pq.Array(ids))
	if err != nil {
		return 0, fmt.Errorf("mark %d due jobs queued on shard %d: %w", len(due), shard, err)
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("commit %d due jobs on shard %d: %w", len(due), shard, err)
	}
	n, _ := res.RowsAffected()
	return int(n), nil
}

// QueueNames returns the names of the queues that have jobs on any shard, sorted
// and without duplicates. A shard that cannot answer is reported in the error
// beside the queues of the others.
func (s *Store) QueueNames(ctx context.Context) ([]string, error) {
	seen := map[string]bool{}
	var errs []error
	for i, db := range s.shards {
		var qs []string
		// A loose index scan over jobs_queue_state: one index probe per
		// distinct queue instead of reading every row.
		err := db.SelectContext(ctx, &qs, `WITH RECURSIVE q(queue) AS (
				(SELECT queue FROM jobs ORDER BY queue LIMIT 1)
				UNION ALL
				SELECT (SELECT j.queue FROM jobs j WHERE j.queue > q.queue ORDER BY j.queue LIMIT 1)
				FROM q WHERE q.queue IS NOT NULL)
			SELECT queue FROM q WHERE queue IS NOT NULL`)
		if err != nil {
			errs = append(errs, fmt.Errorf("list queues on shard %d: %w", i, err))
			continue
		}
		for _, q := range qs {
			seen[q] = true
		}
	}
	out := make([]string, 0, len(seen))
	for q := range seen {
		out = append(out, q)
	}
	slices.Sort(out)
	return out, errors.Join(errs...)
}

// uuidText returns the Postgres text form of id.
func uuidText(id job.ID) string {
	v, _ := id.Value() // never fails
	return v.(string)
}
