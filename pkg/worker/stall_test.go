package worker_test

import (
	"context"
	"database/sql"
	"testing"

	"github.com/warrenhq/warren/pkg/broker"
	"github.com/warrenhq/warren/pkg/job"
	"github.com/warrenhq/warren/pkg/stacktest"
)

// A shard that stops answering holds up only its own jobs. Shard 0's jobs
// table is locked, so every claim there waits on the lock as on a frozen
// server; the messages of shard 0 come first and would fill every slot. The
// claims queued behind the stuck one give up after the worker's patience,
// their messages wait aside, and shard 1's jobs all run while the lock is
// held. Once it is released, shard 0's jobs run too, each once.
func TestAShardNotAnsweringDoesNotStallTheOthers(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := stacktest.New(t, stacktest.Options{Shards: 2})
	w, runs := tallyWorker(t, s, 4)

	const perShard = 12
	var jobs []*job.Job
	var msgs []broker.Message
	for shard := range 2 {
		for i := range perShard {
			j, m := tallyJob(t, shard, i)
			jobs = append(jobs, j)
			msgs = append(msgs, m)
		}
	}
	must(t, s.Store.Insert(ctx, jobs...))

	db, err := sql.Open("postgres", s.DatabaseURLs[0])
	must(t, err)
	defer db.Close()
	lock, err := db.BeginTx(ctx, nil)
	must(t, err)
	defer func() { _ = lock.Rollback() }()
	if _, err := lock.ExecContext(ctx, `LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}

	must(t, s.Broker.Publish(ctx, msgs...)) // shard 0's messages first
	stacktest.StartWorker(t, w)
	for _, j := range jobs[perShard:] {
		waitState(t, s, j, job.Succeeded)
	}
	// The lock is still held: nothing of shard 0 can have run.
	if err := lock.Rollback(); err != nil {
		t.Fatal(err)
	}
	for _, j := range jobs[:perShard] {
		waitState(t, s, j, job.Succeeded)
	}
	for _, j := range jobs {
		if r := runs(j.ID); r != 1 {
			t.Errorf("job %s (shard %d) ran %d times, want once", j.ID, j.ID.Shard(), r)
		}
	}
}
