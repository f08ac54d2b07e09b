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

// The outbox. A queued job needs a message in RabbitMQ; Postgres records
// whether it has one. queued_at is when the job last became queued (a
// trigger stamps every transition into queued); published_at is when
// RabbitMQ last confirmed a message for it. A queued job whose published_at
// is missing or older than its queued_at is unpublished: the api died
// between its commit and its publish, RabbitMQ was down, or a worker's
// hand-back lost its message. The scheduler's relay publishes those.
//
// Who marks what:
//   - PublishDue and ReapExpired commit the move to queued first, then
//     publish, then mark;
//   - the api publishes after its commit and marks its jobs with
//     MarkPublished, in batches, after the confirms;
//   - RelayUnpublished publishes and marks in one transaction, on jobs that
//     are queued already.
//
// The order matters: a message must never reach a worker before the
// transaction that made its job queued has committed. A worker's claim is
// an UPDATE … WHERE state = 'queued'; under READ COMMITTED a row that its
// snapshot sees in another state does not match, so the claim does not
// wait for the row lock: it is refused, and the worker drops the message
// as stale. The relay may hold its rows while publishing because they are
// queued already: a claim matches them and waits for the relay's commit.
//
// A mark that is lost (a crash between publish and mark, a shard down)
// costs one duplicate message from the relay; a worker's claim succeeds
// once, so duplicates are harmless.

// unpublished is the condition, matching the partial index jobs_unpublished
// word for word so that the planner uses it.
const unpublished = `state = 'queued' AND (published_at IS NULL OR published_at < queued_at)`

// PublishDue moves up to limit due scheduled and retrying jobs of shard to
// queued, oldest due first, skipping rows another scheduler holds; then,
// after that commit, calls publish with them and marks them published if
// it returns nil. It returns how many jobs it moved. When publish fails
// (RabbitMQ went away), the jobs stay queued without a mark and the relay
// publishes them once RabbitMQ is back: late, never lost, and never a
// message that a worker could receive before its job is queued (which a
// publish inside the transaction would allow).
func (s *Store) PublishDue(ctx context.Context, shard, limit int, publish func(context.Context, []DueJob) error) (int, error) {
	if shard < 0 || shard >= len(s.shards) {
		return 0, fmt.Errorf("publish due jobs: %w %d", ErrBadShard, shard)
	}
	var jobs []DueJob
	err := s.shards[shard].SelectContext(ctx, &jobs, queueDueQuery, limit)
	if err != nil {
		return 0, fmt.Errorf("queue due jobs on shard %d: %w", shard, err)
	}
	if len(jobs) == 0 {
		return 0, nil
	}
	return len(jobs), s.publishAndMark(ctx, shard, jobs, publish)
}

// publishAndMark publishes jobs that are queued (committed) and marks them
// published. A failure leaves them to the relay.
func (s *Store) publishAndMark(ctx context.Context, shard int, jobs []DueJob, publish func(context.Context, []DueJob) error) error {
	if err := publish(ctx, jobs); err != nil {
		return fmt.Errorf("%d queued jobs of shard %d left to the relay: %w", len(jobs), shard, err)
	}
	err := s.execPrepared(ctx, shard, markPublishedQuery, pq.Array(dueIDs(jobs)))
	if err != nil {
		return fmt.Errorf("mark %d published jobs on shard %d (the relay publishes them again): %w", len(jobs), shard, err)
	}
	return nil
}

// queueDueQuery moves a batch of due jobs to queued: dueQuery picks them
// (jobs_due serves it), and the UPDATE finds them by primary key.
const queueDueQuery = `WITH due AS MATERIALIZED (` + dueQuery + `)
	UPDATE jobs SET state = 'queued'
	WHERE id = ANY(ARRAY(SELECT id FROM due)) AND state IN ('scheduled', 'retrying')
	RETURNING id, type, queue, priority`

// relayQuery takes the oldest unpublished queued jobs that have been so for
// at least $2 milliseconds (so as not to race the api's own publish), under
// row locks, skipping rows held by a concurrent relay or claim.
const relayQuery = `SELECT id, type, queue, priority FROM jobs
	WHERE ` + unpublished + ` AND queued_at <= now() - $2 * interval '1 millisecond'
	ORDER BY queued_at
	LIMIT $1
	FOR UPDATE SKIP LOCKED`

// RelayUnpublished publishes up to limit queued jobs of shard that have had
// no confirmed message for at least after, and marks them published, in one
// transaction: publish is called with the locked jobs, and the mark is
// committed only if it returns nil. It returns how many jobs it marked. A
// worker that receives a message before the commit finds the job queued:
// its claim matches the row and waits for the lock. A job being claimed
// meanwhile is skipped.
func (s *Store) RelayUnpublished(ctx context.Context, shard, limit int, after time.Duration, publish func(context.Context, []DueJob) error) (int, error) {
	if shard < 0 || shard >= len(s.shards) {
		return 0, fmt.Errorf("relay jobs: %w %d", ErrBadShard, shard)
	}
	tx, err := s.shards[shard].BeginTxx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("relay jobs on shard %d: %w", shard, err)
	}
	defer func() { _ = tx.Rollback() }() // a no-op after Commit

	var jobs []DueJob
	if err := tx.SelectContext(ctx, &jobs, relayQuery, limit, after.Milliseconds()); err != nil {
		return 0, fmt.Errorf("select unpublished jobs on shard %d: %w", shard, err)
	}
	if len(jobs) == 0 {
		return 0, nil
	}
	if err := publish(ctx, jobs); err != nil {
		return 0, err
	}
	res, err := tx.ExecContext(ctx, `UPDATE jobs SET published_at = now()
		WHERE id = ANY($1::uuid[]) AND state = 'queued'`, pq.Array(dueIDs(jobs)))
	if err != nil {
		return 0, fmt.Errorf("mark %d relayed jobs on shard %d: %w", len(jobs), shard, err)
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("commit %d relayed jobs on shard %d: %w", len(jobs), shard, err)
	}
	n, _ := res.RowsAffected()
	return int(n), nil
}

// MarkPublished records that RabbitMQ confirmed a message for each of the
// queued jobs, one statement per shard, so that the relay leaves them
// alone. Jobs no longer queued (claimed already) are left as they are.
// Shards that fail are reported as *ShardError values joined into the error;
// their jobs are published again by the relay, harmlessly.
func (s *Store) MarkPublished(ctx context.Context, ids []job.ID) error {
	byShard := make(map[int][]string)
	for _, id := range ids {
		if id.Shard() < len(s.shards) {
			byShard[id.Shard()] = append(byShard[id.Shard()], uuidText(id))
		}
	}
	// The shards at once, and an answer by ctx's end: the marks of the other
	// shards must not wait for a shard that is frozen.
	_, errs := onShards(ctx, slices.Collect(maps.Keys(byShard)), "mark published", func(n int) ([]struct{}, error) {
		if err := s.execPrepared(ctx, n, markPublishedQuery, pq.Array(byShard[n])); err != nil {
			return nil, fmt.Errorf("%d jobs: %w", len(byShard[n]), err)
		}
		return nil, nil
	})
	return errors.Join(errs...)
}

// markPublishedQuery marks jobs published. It locks them in id order, as
// the worker's batched claims do, and skips rows someone holds: such a row is
// being claimed (and then needs no mark) or relayed (which marks it itself),
// or, for a moment, held by another scheduler's due query, which locks the
// row it rechecks and finds queued already; at worst a mark is missed and
// the relay sends one harmless duplicate.
// Waiting instead could deadlock with a batch claim locking the same rows.
//
// Unlike the worker's batch statements (see claimBatchQuery), most of its
// rows are no longer queued when it runs (claimed meanwhile), so it must not
// lock them just to find that out: it tests the state in the scan. The test
// compares with the "C" collation, which for equality is the same test, so
// that it does not match the predicates of the partial indexes on state and
// the planner looks the ids up by primary key whatever its statistics say.
const markPublishedQuery = `WITH locked AS (
		SELECT id FROM jobs WHERE id = ANY($1::uuid[])
			AND state = 'queued' COLLATE "C" AND (published_at IS NULL OR published_at < queued_at)
		ORDER BY id FOR UPDATE SKIP LOCKED)
	UPDATE jobs SET published_at = now() FROM locked WHERE jobs.id = locked.id`

func dueIDs(jobs []DueJob) []string {
	ids := make([]string, len(jobs))
	for i, j := range jobs {
		ids[i] = uuidText(j.ID)
	}
	return ids
}
