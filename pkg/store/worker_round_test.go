package store_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/warrenhq/warren/pkg/job"
	"github.com/warrenhq/warren/pkg/store"
	"github.com/warrenhq/warren/pkg/store/storetest"
)

// running inserts a job on shard for tenant and claims it for worker.
func running(t *testing.T, s *store.Store, shard int, tenant, worker string) *job.Job {
	t.Helper()
	j := inserted(t, s, shard, tenant)
	c, err := s.Claim(context.Background(), j.ID, worker, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// A round of claims and completions gives each item what ClaimBatch or
// CompleteBatch would: both halves in one statement on shard 1, and as two
// statements on shard 0, where one job is named by both.
func TestClaimCompleteMixed(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := storetest.New(t, 2)
	run0, run1, stale := running(t, s, 0, "acme", "w1"), running(t, s, 1, "acme", "w1"), running(t, s, 1, "acme", "w1")
	retryAgain(t, s, stale.ID, 1) // attempt 1 is stale: w2 runs attempt 2
	both := running(t, s, 0, "acme", "w1")
	others := running(t, s, 1, "acme", "w9")
	q0, q1, theirs := newJob(0, "acme"), newJob(1, "acme"), newJob(1, "globex")
	if err := s.Insert(ctx, q0, q1, theirs); err != nil {
		t.Fatal(err)
	}

	ids := []job.ID{q1.ID, q0.ID, theirs.ID, both.ID, others.ID}
	items := []store.Completion{
		{ID: run1.ID, Attempt: 1, Result: job.JSON(`{"n":1}`)},
		{ID: stale.ID, Attempt: 1},
		{ID: run0.ID, Attempt: 1},
		{ID: both.ID, Attempt: 1, Result: job.JSON(`"both"`)},
	}
	claimed, completed := s.ClaimComplete(ctx, ids, items, "w3", time.Minute, []string{"acme"})
	if len(claimed) != len(ids) || len(completed) != len(items) {
		t.Fatalf("%d and %d results for %d ids and %d items", len(claimed), len(completed), len(ids), len(items))
	}
	for _, i := range []int{0, 1} {
		if r := claimed[i]; r.Err != nil || r.Job.ID != ids[i] || r.Job.State != job.Running || r.Job.Attempt != 1 {
			t.Errorf("claim %d (queued): %+v, %v", i, r.Job, r.Err)
		}
	}
	if !errors.Is(claimed[2].Err, store.ErrNotServed) {
		t.Errorf("claim of another tenant's job: got %v, want ErrNotServed", claimed[2].Err)
	}
	wantState(t, "claim of a running job named by a completion too", claimed[3].Err, job.Running)
	wantState(t, "claim of another worker's running job", claimed[4].Err, job.Running)

	if r := completed[0]; r.Err != nil || r.Job.State != job.Succeeded || string(r.Job.Result) != `{"n": 1}` {
		t.Errorf("completion on shard 1: %+v, %v", r.Job, r.Err)
	}
	wantState(t, "stale attempt", completed[1].Err, job.Running)
	if r := completed[2]; r.Err != nil || r.Job.State != job.Succeeded || r.Job.Result != nil {
		t.Errorf("completion on shard 0: %+v, %v", r.Job, r.Err)
	}
	if r := completed[3]; r.Err != nil || r.Job.State != job.Succeeded || string(r.Job.Result) != `"both"` {
		t.Errorf("completion of the job also claimed: %+v, %v", r.Job, r.Err)
	}

	// What the round returned is what is stored: w3 holds the two jobs it
	// claimed, the stale attempt changed nothing and the other tenant's job
	// is still queued.
	held, err := s.ExtendLeases(ctx, "w3", time.Minute, []job.ID{q0.ID, q1.ID, theirs.ID})
	if err != nil || len(held) != 2 {
		t.Errorf("w3 holds %v (%v), want the two jobs it claimed", held, err)
	}
	if j, err := s.Get(ctx, "acme", stale.ID); err != nil || j.State != job.Running || j.Attempt != 2 {
		t.Errorf("job behind the stale attempt: %+v, %v", j, err)
	}
	if j, err := s.Get(ctx, "acme", others.ID); err != nil || j.State != job.Running || j.Attempt != 1 {
		t.Errorf("another worker's running job: %+v, %v", j, err)
	}
	if j, err := s.Get(ctx, "globex", theirs.ID); err != nil || j.State != job.Queued {
		t.Errorf("another tenant's job: %+v, %v", j, err)
	}
	if j, err := s.Get(ctx, "acme", run1.ID); err != nil || j.State != job.Succeeded || string(j.Result) != `{"n": 1}` {
		t.Errorf("completed job as stored: %+v, %v", j, err)
	}
}

// On a shard that does not answer, both halves of the round fail with the
// shard's error; the other shard's items go through.
func TestClaimCompleteOnADownShard(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := downShardStore(t)
	run := running(t, s, 0, "acme", "w1")
	q := inserted(t, s, 0, "acme")
	down, downRunning := job.NewID(time.Now(), 1), job.NewID(time.Now().Add(time.Millisecond), 1)
	claimed, completed := s.ClaimComplete(ctx, []job.ID{down, q.ID},
		[]store.Completion{{ID: downRunning, Attempt: 1}, {ID: run.ID, Attempt: 1}}, "w1", time.Minute, nil)
	for what, err := range map[string]error{"claim": claimed[0].Err, "completion": completed[0].Err} {
		var se *store.ShardError
		if !errors.As(err, &se) || se.Shard != 1 || !strings.Contains(err.Error(), "claim 1 and complete 1 jobs") {
			t.Errorf("%s on the down shard: got %v, want the ShardError of the one statement for shard 1", what, err)
		}
	}
	if r := claimed[1]; r.Err != nil || r.Job.State != job.Running {
		t.Errorf("claim on the shard that is up: %+v, %v", r.Job, r.Err)
	}
	if r := completed[1]; r.Err != nil || r.Job.State != job.Succeeded {
		t.Errorf("completion on the shard that is up: %+v, %v", r.Job, r.Err)
	}
}
