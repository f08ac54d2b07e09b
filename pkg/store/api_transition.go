package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/jmoiron/sqlx"

	"github.com/warrenhq/warren/pkg/job"
)

// Cancel moves the tenant's job from any non-terminal state to cancelled and
// returns it. A terminal job is refused with a *StateError naming its state;
// a job of another tenant, or none, is ErrNotFound. A worker still running
// the job finds its attempt fenced off: its Complete or Fail is refused.
func (s *Store) Cancel(ctx context.Context, tenant string, id job.ID) (*job.Job, error) {
	return s.updateTenantJob(ctx, tenant, id, `state = 'cancelled', finished_at = now(),
		worker_id = NULL, lease_until = NULL`,
		`state NOT IN ('succeeded', 'dead', 'cancelled')`)
}

// Retry moves the tenant's dead or cancelled job back to queued with its
// attempts reset, clearing its error, result, progress, and start and finish
// times, and returns it; the caller publishes it. Any other state is refused
// with a *StateError. The job keeps its id, payload and options.
func (s *Store) Retry(ctx context.Context, tenant string, id job.ID) (*job.Job, error) {
	return s.updateTenantJob(ctx, tenant, id, `state = 'queued', attempt = 0, error = NULL,
		result = NULL, progress = NULL, started_at = NULL, finished_at = NULL,
		worker_id = NULL, lease_until = NULL, heartbeat_at = NULL`,
		`state IN ('dead', 'cancelled')`)
}

// updateTenantJob applies one conditional UPDATE to the tenant's job.
func (s *Store) updateTenantJob(ctx context.Context, tenant string, id job.ID, set, when string) (*job.Job, error) {
	db, err := s.shard(id)
	if err != nil {
		return nil, ErrNotFound
	}
	var j job.Job
	err = db.GetContext(ctx, &j, `UPDATE jobs SET `+set+`
		WHERE id = $1 AND tenant = $2 AND `+when+`
		RETURNING `+columns, id, tenant)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, tenantRefusal(ctx, db, tenant, id)
	}
	if err != nil {
		return nil, fmt.Errorf("update job %s: %w", id, err)
	}
	return &j, nil
}

// tenantRefusal explains why a conditional UPDATE of the tenant's job
// matched no row, without telling another tenant that the job exists.
func tenantRefusal(ctx context.Context, db *sqlx.DB, tenant string, id job.ID) error {
	var st job.State
	err := db.GetContext(ctx, &st, `SELECT state FROM jobs WHERE id = $1 AND tenant = $2`, id, tenant)
	if errors.Is(err, sql.ErrNoRows) {
		return ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("read state of job %s: %w", id, err)
	}
	return &StateError{ID: id, State: st}
}
