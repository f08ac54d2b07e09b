package store

import (
	"context"
	"errors"
	"fmt"
	"slices"

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
