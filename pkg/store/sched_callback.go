package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/warrenhq/warren/pkg/job"
)

// Callback is a finished job whose completion callback is claimed for one
// delivery attempt by ClaimCallbacks.
type Callback struct {
	// Job is the job as it was when claimed; it is terminal.
	Job *job.Job
	// Attempts counts the delivery attempts made before this one.
	Attempts int
	// claim is the callback_next_at the claim wrote. It fences the claim:
	// RecordCallback applies only while the row still carries it, so a
	// scheduler whose claim expired and was taken over, or a job retried
	// and finished again meanwhile, cannot be overwritten by a stale result.
	claim time.Time
}

// CallbackOutcome is what a delivery attempt leads to.
type CallbackOutcome int

// The outcomes of a delivery attempt.
const (
	// CallbackRetry: try again after the given delay.
	CallbackRetry CallbackOutcome = iota
	// CallbackDelivered: the receiver answered 2xx; no more attempts.
	CallbackDelivered
	// CallbackFailed: give up; no more attempts.
	CallbackFailed
)

func (o CallbackOutcome) state() string {
	switch o {
	case CallbackDelivered:
		return "delivered"
	case CallbackFailed:
		return "failed"
	}
	return "pending"
}

// ErrClaimLost reports a delivery result that was not recorded because the
// claim no longer holds (it expired and another scheduler took the callback,
// or the job was retried). It wraps ErrConflict.
var ErrClaimLost = fmt.Errorf("callback claim lost: %w", ErrConflict)

// claimCallbacksQuery claims the oldest due callbacks of a shard by pushing
// their next attempt time past the end of the delivery. Rows another
// scheduler is claiming are skipped; the partial index jobs_callbacks_due
// serves the filter and the order.
const claimCallbacksQuery = `WITH due AS MATERIALIZED (
		SELECT id FROM jobs
		WHERE callback_state = 'pending' AND callback_next_at <= now()
		ORDER BY callback_next_at
		LIMIT $1
		FOR UPDATE SKIP LOCKED)
	UPDATE jobs SET callback_next_at = now() + $2 * interval '1 millisecond'
	WHERE id IN (SELECT id FROM due)
	RETURNING ` + columns + `, callback_next_at, COALESCE(jsonb_array_length(callback_attempts), 0) AS prior_attempts`

// ClaimCallbacks claims up to limit due callbacks of shard for delivery and
// returns them. For the lease they are not due again, so concurrent
// schedulers do not deliver them twice; a scheduler that dies mid-delivery
// leaves them to be claimed again once the lease is over. The lease must
// outlast the delivery of the whole batch.
func (s *Store) ClaimCallbacks(ctx context.Context, shard, limit int, lease time.Duration) ([]*Callback, error) {
	if shard < 0 || shard >= len(s.shards) {
		return nil, fmt.Errorf("claim callbacks: %w %d", ErrBadShard, shard)
	}
	var rows []struct {
		job.Job
		NextAt time.Time `db:"callback_next_at"`
		Prior  int       `db:"prior_attempts"`
	}
	if err := s.shards[shard].SelectContext(ctx, &rows, claimCallbacksQuery, limit, lease.Milliseconds()); err != nil {
		return nil, fmt.Errorf("claim callbacks on shard %d: %w", shard, err)
	}
	out := make([]*Callback, len(rows))
	for i := range rows {
		out[i] = &Callback{Job: &rows[i].Job, Attempts: rows[i].Prior, claim: rows[i].NextAt}
	}
	return out, nil
}

// RecordCallback appends attempt to the job's callback attempts and applies
// the outcome: delivered and failed are final, retry makes the callback due
// again after retryIn. It returns ErrClaimLost, and changes nothing, when c's
// claim no longer holds.
func (s *Store) RecordCallback(ctx context.Context, c *Callback, attempt job.CallbackAttempt, outcome CallbackOutcome, retryIn time.Duration) error {
	db, err := s.shard(c.Job.ID)
	if err != nil {
		return err
	}
	entry, err := json.Marshal(attempt)
	if err != nil {
		return fmt.Errorf("record callback of job %s: %w", c.Job.ID, err)
	}
	res, err := db.ExecContext(ctx, `UPDATE jobs SET
			callback_attempts = COALESCE(callback_attempts, '[]'::jsonb) || jsonb_build_array($2::jsonb),
			callback_state = $3::text,
			callback_next_at = CASE WHEN $3::text = 'pending' THEN now() + $4 * interval '1 millisecond' END
		WHERE id = $1 AND callback_state = 'pending' AND callback_next_at = $5`,
		c.Job.ID, string(entry), outcome.state(), retryIn.Milliseconds(), c.claim)
	if err != nil {
		return fmt.Errorf("record callback of job %s: %w", c.Job.ID, err)
	}
	if n, err := res.RowsAffected(); err != nil || n == 0 {
		return fmt.Errorf("record callback of job %s: %w", c.Job.ID, errors.Join(ErrClaimLost, err))
	}
	return nil
}

// ReleaseCallback hands a claimed callback back without recording an
// attempt, due again at once: for a delivery cut short by the scheduler's
// own shutdown. It returns ErrClaimLost when the claim no longer holds.
func (s *Store) ReleaseCallback(ctx context.Context, c *Callback) error {
	db, err := s.shard(c.Job.ID)
	if err != nil {
		return err
	}
	res, err := db.ExecContext(ctx, `UPDATE jobs SET callback_next_at = now()
		WHERE id = $1 AND callback_state = 'pending' AND callback_next_at = $2`, c.Job.ID, c.claim)
	if err != nil {
		return fmt.Errorf("release callback of job %s: %w", c.Job.ID, err)
	}
	if n, err := res.RowsAffected(); err != nil || n == 0 {
		return fmt.Errorf("release callback of job %s: %w", c.Job.ID, errors.Join(ErrClaimLost, err))
	}
	return nil
}
