package store

import (
	"context"
	"fmt"

	"github.com/lib/pq"
)

// Reaped is what one ReapExpired call did.
type Reaped struct {
	// Requeued jobs are queued again for another attempt.
	Requeued int
	// Dead jobs had no attempt left.
	Dead int
	// Unpublished counts the requeued jobs whose message was not confirmed
	// (RabbitMQ down, or publish was nil): they are left to the relay.
	Unpublished int
}

// expiredQuery takes the running jobs of a shard whose lease has run out,
// oldest lease first, under row locks, skipping rows another reaper (or a
// worker renewing its lease) holds. The partial index jobs_lease
// (lease_until, over running rows only) serves the filter and the order.
const expiredQuery = `SELECT id, type, queue, priority, attempt, max_attempts FROM jobs
	WHERE state = 'running' AND lease_until < now()
	ORDER BY lease_until
	LIMIT $1
	FOR UPDATE SKIP LOCKED`

// lostError is the error recorded on a reaped job, per row.
const lostError = `format('worker lost: lease expired (attempt %s of %s, worker %s)',
	attempt, max_attempts, coalesce(worker_id, 'unknown'))`

// ReapExpired makes runnable again up to limit running jobs of shard whose
// worker stopped renewing its lease (it died, or lost Postgres for longer
// than the lease). The attempt counts: it was counted when claimed. A job
// with attempts left goes back to queued, with its error saying the worker
// was lost; the others become dead. Once that is committed, the requeued
// jobs are published with publish (when it is not nil) and marked
// published; those whose publish fails, or that were not published, are
// left to the relay. The transitions never wait for RabbitMQ. The error
// reports a failed publish; the counts hold either way.
//
// Each UPDATE re-checks state = 'running' and the expired lease on rows
// locked FOR UPDATE SKIP LOCKED, so a concurrent or deposed reaper changes
// nothing twice. A worker that comes back late is fenced off by its
// attempt: its Complete or Fail finds the job no longer running with its
// attempt, and is refused; its lease renewal finds the job no longer its.
func (s *Store) ReapExpired(ctx context.Context, shard, limit int, publish func(context.Context, []DueJob) error) (Reaped, error) {
	var r Reaped
	if shard < 0 || shard >= len(s.shards) {
		return r, fmt.Errorf("reap expired leases: %w %d", ErrBadShard, shard)
	}
	again, err := s.reap(ctx, shard, limit, &r)
	if err != nil || len(again) == 0 {
		return r, err
	}
	r.Unpublished = len(again)
	if publish == nil {
		return r, nil
	}
	if err := s.publishAndMark(ctx, shard, again, publish); err != nil {
		return r, fmt.Errorf("reaped jobs: %w", err)
	}
	r.Unpublished = 0
	return r, nil
}

// reap applies the transitions in one transaction and returns the
// requeued jobs.
func (s *Store) reap(ctx context.Context, shard, limit int, r *Reaped) ([]DueJob, error) {
	tx, err := s.shards[shard].BeginTxx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("reap expired leases on shard %d: %w", shard, err)
	}
	defer func() { _ = tx.Rollback() }()

	var rows []struct {
		DueJob
		Attempt     int `db:"attempt"`
		MaxAttempts int `db:"max_attempts"`
	}
	if err := tx.SelectContext(ctx, &rows, expiredQuery, limit); err != nil {
		return nil, fmt.Errorf("select expired leases on shard %d: %w", shard, err)
	}
	if len(rows) == 0 {
		return nil, nil
	}
	var again []DueJob
	var dead []string
	for _, row := range rows {
		if row.Attempt < row.MaxAttempts {
			again = append(again, row.DueJob)
		} else {
			dead = append(dead, uuidText(row.ID))
		}
	}
	var nDead, nAgain int64
	if len(dead) > 0 {
		res, err := tx.ExecContext(ctx, `UPDATE jobs SET state = 'dead', finished_at = now(),
				error = `+lostError+` || '; no attempts left',
				worker_id = NULL, lease_until = NULL
			WHERE id = ANY($1::uuid[]) AND state = 'running' AND lease_until < now()`, pq.Array(dead))
		if err != nil {
			return nil, fmt.Errorf("mark %d lost jobs dead on shard %d: %w", len(dead), shard, err)
		}
		nDead, _ = res.RowsAffected()
	}
	if len(again) > 0 {
		// The trigger stamps queued_at: without a newer published_at the
		// jobs are unpublished until publishAndMark (or the relay) is done.
		res, err := tx.ExecContext(ctx, `UPDATE jobs SET state = 'queued', error = `+lostError+`,
				worker_id = NULL, lease_until = NULL
			WHERE id = ANY($1::uuid[]) AND state = 'running' AND lease_until < now()`, pq.Array(dueIDs(again)))
		if err != nil {
			return nil, fmt.Errorf("requeue %d lost jobs on shard %d: %w", len(again), shard, err)
		}
		nAgain, _ = res.RowsAffected()
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("commit reaped jobs on shard %d: %w", shard, err)
	}
	r.Dead, r.Requeued = int(nDead), int(nAgain)
	return again, nil
}
