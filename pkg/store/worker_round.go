package store

import (
	"context"
	"fmt"
	"time"

	"github.com/lib/pq"

	"github.com/warrenhq/warren/pkg/job"
)

// ClaimComplete is ClaimBatch(ids) and CompleteBatch(items) at once: a
// worker's claims and completions that are waiting at the same moment. On a
// shard that has both, they are one statement and one commit instead of two;
// every item gets the outcome, and the fencing, that ClaimBatch or
// CompleteBatch would give it. Results are in the order of ids and of items.
func (s *Store) ClaimComplete(ctx context.Context, ids []job.ID, items []Completion, workerID string, lease time.Duration, tenants []string) (claimed, completed []Result) {
	claimed = make([]Result, len(ids))
	completed = make([]Result, len(items))
	doneIDs := make([]job.ID, len(items))
	attempts := make([]int, len(items))
	for i, c := range items {
		doneIDs[i], attempts[i] = c.ID, c.Attempt
	}
	done := s.byShard(doneIDs, completed)
	for n, cidx := range s.byShard(ids, claimed) {
		didx, both := done[n]
		if !both || overlap(ids, cidx, doneIDs, didx) {
			s.claimShard(ctx, n, ids, cidx, workerID, lease, tenants, claimed)
			continue
		}
		delete(done, n)
		doc, sent, count := completionDoc(items, didx, completed)
		keys := uniqueKeys(ids, cidx)
		var got []roundRow
		err := selectRetrying(ctx, s, n, &got, claimCompleteQuery,
			doc, pq.Array(keys), workerID, lease.Milliseconds(), pq.Array(tenants))
		if err != nil {
			err = &ShardError{Shard: n, Err: fmt.Errorf("claim %d and complete %d jobs: %w", len(keys), count, err)}
			fail(claimed, cidx, err)
			fail(completed, sent, err)
			continue
		}
		var gotClaimed, gotDone []*job.Job
		for _, r := range got {
			if r.Op == "claimed" {
				gotClaimed = append(gotClaimed, &r.Job)
			} else {
				gotDone = append(gotDone, &r.Job)
			}
		}
		s.answer(ctx, s.shards[n], n, ids, nil, cidx, gotClaimed, tenants, claimed)
		if len(sent) > 0 {
			s.answer(ctx, s.shards[n], n, doneIDs, attempts, sent, gotDone, nil, completed)
		}
	}
	for n, didx := range done {
		s.completeShard(ctx, n, items, doneIDs, attempts, didx, completed)
	}
	return claimed, completed
}

// overlap reports whether a job is both among the claims a[ai...] and the
// completions b[bi...]. One statement must not update a row twice, so such
// a round runs as two statements (one of the two then finds the job in the
// wrong state, as it would have anyway).
func overlap(a []job.ID, ai []int, b []job.ID, bi []int) bool {
	in := make(map[job.ID]bool, len(ai))
	for _, i := range ai {
		in[a[i]] = true
	}
	for _, i := range bi {
		if in[b[i]] {
			return true
		}
	}
	return false
}

// roundRow is a row returned by claimCompleteQuery: the job, and whether
// the statement claimed or completed it.
type roundRow struct {
	Op string `db:"op"`
	job.Job
}

// claimCompleteQuery is completeBatchQuery on $1 and claimBatchQuery on
// $2…$5 in one statement. Each half locks its rows in id order, as the two
// statements do; the rows it completes are the worker's own running jobs
// and the rows it claims are queued ones, so the halves never touch the
// same row (ClaimComplete runs a round that names a job twice as two
// statements).
var claimCompleteQuery = `WITH ` + completeCTEs("$1") + `,
	` + claimCTEs("$2", "$3", "$4", "$5") + `
	SELECT * FROM done UNION ALL SELECT * FROM claimed`
