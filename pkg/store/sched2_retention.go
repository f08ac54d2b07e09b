package store

import (
	"context"
	"fmt"
	"time"

	"github.com/lib/pq"

	"github.com/warrenhq/warren/pkg/job"
)

// expiredFinishedQuery deletes one batch of a shard's jobs in the given
// terminal states that finished before the cutoff, oldest first. The
// partial index jobs_finished_at serves the range and the order; rows locked
// by anyone (a retry by hand, a callback being recorded) are skipped, not
// waited for, and so are jobs whose callback is still to be delivered. One
// statement is its own short transaction: it holds its few hundred row locks
// for milliseconds.
const expiredFinishedQuery = `WITH expired AS MATERIALIZED (
		SELECT id FROM jobs
		WHERE finished_at < now() - $2 * interval '1 millisecond'
			AND state = ANY($1::text[])
			AND callback_state IS DISTINCT FROM 'pending'
		ORDER BY finished_at
		LIMIT $3
		FOR UPDATE SKIP LOCKED)
	DELETE FROM jobs WHERE id = ANY(ARRAY(SELECT id FROM expired))`

// DeleteFinished deletes up to limit jobs of shard that are in one of the
// terminal states and finished more than olderThan ago (by the shard's
// clock), and returns how many it deleted. Call it again until it returns
// fewer than limit. Re-running it, or running it from two schedulers at
// once, deletes nothing twice and nothing that is not expired.
func (s *Store) DeleteFinished(ctx context.Context, shard int, states []job.State, olderThan time.Duration, limit int) (int, error) {
	if shard < 0 || shard >= len(s.shards) {
		return 0, fmt.Errorf("delete finished jobs: %w %d", ErrBadShard, shard)
	}
	names := make([]string, len(states))
	for i, st := range states {
		if !st.Terminal() {
			return 0, fmt.Errorf("delete finished jobs: %s is not a terminal state", st)
		}
		names[i] = string(st)
	}
	res, err := s.shards[shard].ExecContext(ctx, expiredFinishedQuery, pq.Array(names), olderThan.Milliseconds(), limit)
	if err != nil {
		return 0, fmt.Errorf("delete finished jobs on shard %d: %w", shard, err)
	}
	n, _ := res.RowsAffected()
	return int(n), nil
}
