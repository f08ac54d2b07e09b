package worker_test

import (
	"context"
	"encoding/json"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/warrenhq/warren/pkg/broker"
	"github.com/warrenhq/warren/pkg/job"
	"github.com/warrenhq/warren/pkg/stacktest"
	"github.com/warrenhq/warren/pkg/worker"
)

// Many jobs at once, each with a duplicate message, on two shards: claims,
// completions and announcements go in shared batches, and still every job
// runs once, succeeds once with its own result, and is cached.
func TestConcurrentJobsShareBatchesAndRunOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := stacktest.New(t, stacktest.Options{Shards: 2})
	w, runs := tallyWorker(t, s, 40)

	const n = 200
	jobs := make([]*job.Job, n)
	var msgs []broker.Message
	for i := range jobs {
		var m broker.Message
		jobs[i], m = tallyJob(t, i%2, i)
		msgs = append(msgs, m, m) // the second copy, as a redelivery or the relay would send
	}
	must(t, s.Store.Insert(ctx, jobs...))
	must(t, s.Broker.Publish(ctx, msgs...))
	stacktest.StartWorker(t, w)

	for _, j := range jobs {
		got := waitState(t, s, j, job.Succeeded)
		var res args
		if err := json.Unmarshal(got.Result, &res); err != nil || got.Attempt != 1 {
			t.Fatalf("job %s: attempt %d, result %s", j.ID, got.Attempt, got.Result)
		}
		var in args
		_ = json.Unmarshal(j.Payload, &in)
		if res.N != 2*in.N {
			t.Fatalf("job %s: result %d for n=%d: another job's result", j.ID, res.N, in.N)
		}
		stacktest.Eventually(t, 10*time.Second, "job "+j.ID.String()+" cached", func() bool {
			c, err := s.Cache.GetJob(ctx, "default", j.ID)
			return err == nil && c.State == job.Succeeded
		})
	}
	for _, j := range jobs {
		if r := runs(j.ID); r != 1 {
			t.Errorf("job %s ran %d times, want once", j.ID, r)
		}
	}
}

// tallyJob returns a queued "tally" job with {"n": n} on shard, to be
// stored by the test, and its message, to be published by the test.
// tallyWorker is a worker of the given concurrency that handles "tally"
// jobs, answering {"n": 2n}, and counts the runs of each job: runs(id).
func tallyWorker(t *testing.T, s *stacktest.Stack, concurrency int) (*worker.Worker, func(id job.ID) int) {
	t.Helper()
	w := newWorker(t, s, func(c *worker.Config) { c.Concurrency = concurrency })
	var mu sync.Mutex
	runs := map[string]int{}
	must(t, worker.Handle(w, "tally", func(ctx context.Context, j *worker.Job[args]) (args, error) {
		mu.Lock()
		runs[j.ID]++
		mu.Unlock()
		return args{N: j.Args.N * 2}, nil
	}))
	return w, func(id job.ID) int {
		mu.Lock()
		defer mu.Unlock()
		return runs[id.String()]
	}
}

func tallyJob(t *testing.T, shard, n int) (*job.Job, broker.Message) {
	t.Helper()
	now := time.Now().UTC()
	j := &job.Job{
		ID: job.NewID(now, shard), Tenant: "default", Type: "tally", Queue: "default",
		State: job.Queued, MaxAttempts: 3, TimeoutMS: 30_000,
		Payload: job.JSON(`{"n":` + strconv.Itoa(n) + `}`), CreatedAt: now,
	}
	body, err := json.Marshal(job.Message{ID: j.ID, Type: "tally"})
	must(t, err)
	return j, broker.Message{Queue: "default", MessageID: j.ID.String(), Body: body}
}
