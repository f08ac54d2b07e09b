package store_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/warrenhq/warren/pkg/job"
	"github.com/warrenhq/warren/pkg/store"
	"github.com/warrenhq/warren/pkg/store/storetest"
)

// wantState checks that err is a *StateError naming state.
func wantState(t *testing.T, what string, err error, state job.State) {
	t.Helper()
	var se *store.StateError
	if !errors.As(err, &se) || se.State != state {
		t.Errorf("%s: got %v, want a StateError in state %s", what, err, state)
	}
}

func TestClaimBatchMixed(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := storetest.New(t, 2)
	queued0, queued1, running, done := newJob(0, "acme"), newJob(1, "acme"), newJob(0, "acme"), newJob(1, "acme")
	if err := s.Insert(ctx, queued0, queued1, running, done); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Claim(ctx, running.ID, "other", time.Minute); err != nil {
		t.Fatal(err)
	}
	c, err := s.Claim(ctx, done.ID, "other", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Complete(ctx, done.ID, c.Attempt, nil); err != nil {
		t.Fatal(err)
	}
	missing := job.NewID(time.Now(), 1)
	badShard := job.NewID(time.Now(), 7)

	before := time.Now().Add(-time.Second)
	ids := []job.ID{queued0.ID, running.ID, missing, queued1.ID, done.ID, badShard, queued0.ID}
	got := s.ClaimBatch(ctx, ids, "w1", time.Minute, nil)
	if len(got) != len(ids) {
		t.Fatalf("%d results for %d ids", len(got), len(ids))
	}
	for _, i := range []int{0, 3} {
		r := got[i]
		if r.Err != nil {
			t.Fatalf("item %d (queued): %v", i, r.Err)
		}
		if r.Job.ID != ids[i] || r.Job.State != job.Running || r.Job.Attempt != 1 ||
			r.Job.StartedAt == nil || r.Job.StartedAt.Before(before) || r.Job.Type != "echo" ||
			string(r.Job.Payload) != `{"hello": "world"}` {
			t.Errorf("item %d: claimed job %+v", i, r.Job)
		}
	}
	wantState(t, "claim of a running job", got[1].Err, job.Running)
	if !errors.Is(got[2].Err, store.ErrNotFound) {
		t.Errorf("claim of a missing job: got %v, want ErrNotFound", got[2].Err)
	}
	wantState(t, "claim of a succeeded job", got[4].Err, job.Succeeded)
	if !errors.Is(got[5].Err, store.ErrBadShard) {
		t.Errorf("claim on an unknown shard: got %v, want ErrBadShard", got[5].Err)
	}
	// The same id twice in one batch is claimed once.
	wantState(t, "second copy of an id", got[6].Err, job.Running)
	for i, r := range got {
		if r.Err != nil && r.Job != nil {
			t.Errorf("item %d has both a job and an error", i)
		}
	}

	// The claim is the same as Claim's: the lease and worker are set, so the
	// worker's lease renewal finds the jobs its own.
	held, err := s.ExtendLeases(ctx, "w1", time.Minute, []job.ID{queued0.ID, queued1.ID, running.ID})
	if err != nil {
		t.Fatal(err)
	}
	if len(held) != 2 {
		t.Fatalf("w1 holds %v, want the two jobs it claimed", held)
	}
	// And the running job stayed the other worker's, attempt 1.
	if j, err := s.Get(ctx, "acme", running.ID); err != nil || j.Attempt != 1 || j.State != job.Running {
		t.Fatalf("running job after a refused claim: %+v, %v", j, err)
	}
}

func TestClaimBatchRacersClaimEachJobOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := storetest.New(t, 1)
	const jobs, racers = 20, 8
	var ids []job.ID
	for range jobs {
		j := inserted(t, s, 0, "acme")
		ids = append(ids, j.ID)
	}
	var mu sync.Mutex
	wins := map[job.ID]int{}
	var wg sync.WaitGroup
	for r := range racers {
		wg.Go(func() {
			// Each racer asks in its own order, so row locks are requested
			// in different orders: the batch must not deadlock.
			order := make([]job.ID, jobs)
			for i := range jobs {
				order[i] = ids[(i*(r+1)+r)%jobs]
			}
			for i, res := range s.ClaimBatch(ctx, order, "w", time.Minute, nil) {
				switch {
				case res.Err == nil:
					mu.Lock()
					wins[order[i]]++
					mu.Unlock()
				case !errors.Is(res.Err, store.ErrConflict):
					t.Errorf("racer %d, item %d: %v", r, i, res.Err)
				}
			}
		})
	}
	wg.Wait()
	for _, id := range ids {
		if wins[id] != 1 {
			t.Errorf("job %s claimed %d times, want once", id, wins[id])
		}
	}
}

func TestCompleteBatchMixed(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := storetest.New(t, 2)
	var running []*job.Job
	for i := range 4 {
		j := inserted(t, s, i%2, "acme")
		c, err := s.Claim(ctx, j.ID, "w1", time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		running = append(running, c)
	}
	// running[2] is on its second attempt, so its first attempt is stale.
	retryAgain(t, s, running[2].ID, 1)
	queued := inserted(t, s, 1, "acme")
	url := "https://hooks.example/warren"
	withCallback := newJob(0, "acme")
	withCallback.CallbackURL = &url
	if err := s.Insert(ctx, withCallback); err != nil {
		t.Fatal(err)
	}
	cb, err := s.Claim(ctx, withCallback.ID, "w1", time.Minute)
	if err != nil {
		t.Fatal(err)
	}

	items := []store.Completion{
		{ID: running[0].ID, Attempt: 1, Result: job.JSON(`{"n":0}`)},
		{ID: running[1].ID, Attempt: 1},                        // no result: NULL
		{ID: running[2].ID, Attempt: 1, Result: job.JSON(`2`)}, // stale attempt
		{ID: job.NewID(time.Now(), 0), Attempt: 1},             // missing
		{ID: queued.ID, Attempt: 1},                            // not running
		{ID: running[3].ID, Attempt: 1, Result: job.JSON(`{"broken"`)},
		{ID: cb.ID, Attempt: cb.Attempt, Result: job.JSON(`[1,2]`)},
		{ID: running[0].ID, Attempt: 1, Result: job.JSON(`"again"`)}, // second copy
		{ID: job.NewID(time.Now(), 5), Attempt: 1},                   // unknown shard
	}
	got := s.CompleteBatch(ctx, items)
	if len(got) != len(items) {
		t.Fatalf("%d results for %d items", len(got), len(items))
	}
	if r := got[0]; r.Err != nil || r.Job.State != job.Succeeded || string(r.Job.Result) != `{"n": 0}` ||
		r.Job.FinishedAt == nil || r.Job.Error != nil {
		t.Errorf("item 0: %+v, %v", r.Job, r.Err)
	}
	if r := got[1]; r.Err != nil || r.Job.State != job.Succeeded || r.Job.Result != nil {
		t.Errorf("item 1 (no result): %+v, %v", r.Job, r.Err)
	}
	wantState(t, "stale attempt", got[2].Err, job.Running)
	if !errors.Is(got[3].Err, store.ErrNotFound) {
		t.Errorf("missing job: got %v, want ErrNotFound", got[3].Err)
	}
	wantState(t, "queued job", got[4].Err, job.Queued)
	if got[5].Err == nil || errors.Is(got[5].Err, store.ErrConflict) {
		t.Errorf("invalid JSON result: got %v, want an error of its own", got[5].Err)
	}
	if r := got[6]; r.Err != nil || r.Job.CallbackState == nil || *r.Job.CallbackState != "pending" {
		t.Errorf("job with a callback: %+v, %v", r.Job, r.Err)
	}
	wantState(t, "second copy", got[7].Err, job.Succeeded)
	if !errors.Is(got[8].Err, store.ErrBadShard) {
		t.Errorf("unknown shard: got %v, want ErrBadShard", got[8].Err)
	}

	// The stale attempt changed nothing: the job runs on for w2's attempt 2.
	if j, err := s.Get(ctx, "acme", running[2].ID); err != nil || j.State != job.Running || j.Attempt != 2 || j.Result != nil {
		t.Errorf("job behind the stale attempt: %+v, %v", j, err)
	}
	// The item with the bad result is still running, untouched by the batch.
	if j, err := s.Get(ctx, "acme", running[3].ID); err != nil || j.State != job.Running {
		t.Errorf("job with the bad result: %+v, %v", j, err)
	}
	// What the batch returned is what is stored.
	if j, err := s.Get(ctx, "acme", running[0].ID); err != nil || string(j.Result) != `{"n": 0}` || j.State != job.Succeeded {
		t.Errorf("stored job: %+v, %v", j, err)
	}
	// Lease and worker are cleared, as by Complete: no renewal finds them.
	held, err := s.ExtendLeases(ctx, "w1", time.Minute, []job.ID{running[0].ID, running[1].ID, cb.ID})
	if err != nil || len(held) != 0 {
		t.Errorf("finished jobs still held: %v, %v", held, err)
	}
}

func TestCompleteBatchTwoAttemptsOfOneJob(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := storetest.New(t, 1)
	j := inserted(t, s, 0, "acme")
	if _, err := s.Claim(ctx, j.ID, "w1", time.Minute); err != nil {
		t.Fatal(err)
	}
	retryAgain(t, s, j.ID, 1)
	// The stale attempt comes first in the batch: it must neither take the
	// current attempt's row nor keep the current attempt from completing.
	got := s.CompleteBatch(ctx, []store.Completion{
		{ID: j.ID, Attempt: 1, Result: job.JSON(`"stale"`)},
		{ID: j.ID, Attempt: 2, Result: job.JSON(`"current"`)},
	})
	wantState(t, "stale attempt first in the batch", got[0].Err, job.Succeeded)
	if got[1].Err != nil || string(got[1].Job.Result) != `"current"` {
		t.Fatalf("current attempt: %+v, %v", got[1].Job, got[1].Err)
	}
}

// retryAgain fails the running attempt of job id, makes it due and queued
// again as the scheduler does, and claims it for the next attempt (as "w2").
func retryAgain(t *testing.T, s *store.Store, id job.ID, attempt int) {
	t.Helper()
	ctx := context.Background()
	if _, err := s.Fail(ctx, id, attempt, "boom", time.Now().Add(-time.Second), false); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PublishDue(ctx, id.Shard(), 100, func(context.Context, []store.DueJob) error { return nil }); err != nil {
		t.Fatal(err)
	}
	c, err := s.Claim(ctx, id, "w2", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if c.Attempt != attempt+1 {
		t.Fatalf("claimed attempt %d, want %d", c.Attempt, attempt+1)
	}
}

func TestBatchOnADownShard(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := downShardStore(t)
	up := inserted(t, s, 0, "acme")
	down := job.NewID(time.Now(), 1)
	got := s.ClaimBatch(ctx, []job.ID{down, up.ID}, "w1", time.Minute, nil)
	var se *store.ShardError
	if !errors.As(got[0].Err, &se) || se.Shard != 1 {
		t.Errorf("claim on the down shard: got %v, want a ShardError for shard 1", got[0].Err)
	}
	if got[1].Err != nil {
		t.Fatalf("claim on the shard that is up: %v", got[1].Err)
	}
	done := s.CompleteBatch(ctx, []store.Completion{{ID: down, Attempt: 1}, {ID: up.ID, Attempt: 1}})
	if !errors.As(done[0].Err, &se) || se.Shard != 1 {
		t.Errorf("complete on the down shard: got %v, want a ShardError for shard 1", done[0].Err)
	}
	if done[1].Err != nil || done[1].Job.State != job.Succeeded {
		t.Errorf("complete on the shard that is up: %+v, %v", done[1].Job, done[1].Err)
	}
}
