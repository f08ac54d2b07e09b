package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/warrenhq/warren/pkg/coalesce"
	"github.com/warrenhq/warren/pkg/job"
)

// CommitterConfig configures a Committer.
type CommitterConfig struct {
	// MaxBatch bounds the jobs written by one statement; default 500.
	MaxBatch int
	// Timeout bounds one statement, whichever caller leads it; default 10s.
	Timeout time.Duration
	// Patience is how long a job waits behind its shard's running
	// statement before it goes to the next shard instead; default 2s. A
	// statement takes milliseconds, so one running for longer means the
	// shard has stopped answering (frozen, or a network stall), and new
	// jobs need not wait for it.
	Patience time.Duration
	// Observe, if set, is told of every statement run: its shard, how many
	// jobs it carried, how long it took and its error (nil when they
	// committed).
	Observe func(shard, jobs int, took time.Duration, err error)
	// Rerouted, if set, is told of every job sent on from a shard to the
	// next: the shard it left and why (the dial failed, or ErrBusy).
	Rerouted func(shard int, err error)
}

// Committer group-commits new jobs: concurrent Insert calls for one shard
// are written by one multi-row INSERT, one commit, and each call returns
// once the statement that carried its job has committed (or failed). A call
// that finds its shard idle runs at once, alone; calls arriving meanwhile
// go together in the next statement (see package coalesce). It is safe for
// concurrent use and starts no goroutine.
type Committer struct {
	st       *Store
	patience time.Duration
	rerouted func(shard int, err error)
	groups   []*coalesce.Group[*job.Job, struct{}]
}

// insertNewJobsSQL inserts new jobs passed as one jsonb array.
const insertNewJobsSQL = `INSERT INTO jobs (` + newJobColumns + `)
		SELECT ` + newJobColumns + ` FROM jsonb_to_recordset($1::jsonb) AS r(` + newJobRecord + `)`

// NewCommitter returns a Committer over the store's shards.
func (s *Store) NewCommitter(cfg CommitterConfig) *Committer {
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = 500
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.Patience <= 0 {
		cfg.Patience = 2 * time.Second
	}
	c := &Committer{st: s, patience: cfg.Patience, rerouted: cfg.Rerouted}
	for shard := range s.shards {
		c.groups = append(c.groups, coalesce.New(cfg.MaxBatch, cfg.Timeout,
			func(ctx context.Context, jobs []*job.Job) ([]struct{}, error) {
				start := time.Now()
				err := c.insert(ctx, shard, jobs)
				if cfg.Observe != nil {
					cfg.Observe(shard, len(jobs), time.Since(start), err)
				}
				if err != nil {
					return nil, &ShardError{Shard: shard, Err: fmt.Errorf("insert %d jobs: %w", len(jobs), err)}
				}
				return make([]struct{}, len(jobs)), nil
			}))
	}
	return c
}

// Insert stores a new job (only the columns of a new job, as InsertBatch),
// in a statement shared with the concurrent calls for the same shard. It
// starts with the shard the job's id names; when that shard cannot even be
// dialled, or its running statement has kept the job waiting for longer
// than the Patience (nothing was sent, so nothing can have committed), the
// job gets a fresh id on the next shard and joins that shard's next
// statement, so submits route around a shard that is down or frozen. The
// last shard tried is waited for as long as it takes. Any other error is
// returned as is, for every job of the failed statement: a statement that
// may have committed is never repeated elsewhere.
//
// The statement runs detached from ctx's cancellation, since it carries
// other callers' jobs too; ctx ending stops only the re-routing.
func (c *Committer) Insert(ctx context.Context, j *job.Job) error {
	n := len(c.groups)
	first := j.ID.Shard()
	if first >= n {
		return fmt.Errorf("insert job %s: %w %d", j.ID, ErrBadShard, first)
	}
	var errs []error
	for i := range n {
		shard := (first + i) % n
		if i > 0 {
			j.ID = job.NewID(j.CreatedAt, shard)
		}
		var err error
		if i < n-1 {
			_, err = c.groups[shard].DoWithin(ctx, j, c.patience)
		} else {
			_, err = c.groups[shard].Do(ctx, j) // the last shard to try: no patience
		}
		if err == nil {
			return nil
		}
		if errors.Is(err, coalesce.ErrBusy) {
			err = &ShardError{Shard: shard, Err: fmt.Errorf("insert: %w", err)}
		}
		errs = append(errs, err)
		if !(unreachable(err) || errors.Is(err, coalesce.ErrBusy)) || ctx.Err() != nil {
			break
		}
		if c.rerouted != nil && i < n-1 {
			c.rerouted(shard, err)
		}
	}
	return fmt.Errorf("no shard took the job: %w", errors.Join(errs...))
}

// insert runs one statement for jobs on shard, prepared (see prepared).
func (c *Committer) insert(ctx context.Context, shard int, jobs []*job.Job) error {
	rows, err := newJobRowsJSON(jobs)
	if err != nil {
		return err
	}
	return c.st.execPrepared(awaitAnswer(ctx), shard, insertNewJobsSQL, rows)
}
