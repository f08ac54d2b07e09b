package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/warrenhq/warren/pkg/job"
	"github.com/warrenhq/warren/pkg/store"
)

func TestQueueLoadAcrossShards(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, raw := schedSetup(t, 2)
	var jobs []*job.Job
	add := func(shard int, queue string, st job.State) *job.Job {
		j := newJob(shard, "acme")
		j.Queue, j.State = queue, st
		jobs = append(jobs, j)
		return j
	}
	// q: 3 waiting (on both shards), 2 running, 2 finished after
	// 2s and 4s of work; other: 1 waiting; a delayed job is no arrival.
	add(0, "q", job.Queued)
	add(1, "q", job.Queued)
	add(1, "q", job.Queued)
	run1, run2 := add(0, "q", job.Queued), add(1, "q", job.Queued)
	done1, done2 := add(0, "q", job.Queued), add(1, "q", job.Queued)
	add(0, "other", job.Queued)
	later := time.Now().Add(time.Hour).UTC().Truncate(time.Microsecond)
	delayed := add(1, "q", job.Scheduled)
	delayed.ScheduledAt = &later
	// A job created before the window: waiting, but no arrival.
	old := newJob(0, "acme")
	old.ID = job.NewID(time.Now().Add(-10*time.Minute), 0)
	old.Queue = "q"
	jobs = append(jobs, old)
	if err := s.Insert(ctx, jobs...); err != nil {
		t.Fatal(err)
	}
	for _, j := range []*job.Job{run1, run2, done1, done2} {
		if _, err := s.Claim(ctx, j.ID, "w1", time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []struct {
		j    *job.Job
		secs int
	}{{done1, 2}, {done2, 4}} {
		if _, err := s.Complete(ctx, d.j.ID, 1, job.JSON(`{}`)); err != nil {
			t.Fatal(err)
		}
		// Work of a known length: started that many seconds before it finished.
		if _, err := raw[d.j.ID.Shard()].Exec(`UPDATE jobs SET started_at = finished_at - make_interval(secs => $2) WHERE id = $1`, d.j.ID, d.secs); err != nil {
			t.Fatal(err)
		}
	}
	// The oldest waiting job has waited 90s.
	if _, err := raw[1].Exec(`UPDATE jobs SET queued_at = now() - interval '90 seconds' WHERE state = 'queued' AND queue = 'q'`); err != nil {
		t.Fatal(err)
	}

	got, err := s.QueueLoad(ctx, []string{"q", "other", "empty"}, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[0].Queue != "q" || got[1].Queue != "other" || got[2].Queue != "empty" {
		t.Fatalf("queues: %+v", got)
	}
	q := got[0]
	if q.Queued != 4 || q.Running != 2 || q.Arrived != 7 || q.Finished != 2 {
		t.Errorf("q counts: %+v", q)
	}
	if q.MeanJobTime < 2900*time.Millisecond || q.MeanJobTime > 3100*time.Millisecond {
		t.Errorf("q mean job time %v, want 3s", q.MeanJobTime)
	}
	if q.OldestQueued < 89*time.Second || q.OldestQueued > 120*time.Second {
		t.Errorf("q oldest %v, want about 90s", q.OldestQueued)
	}
	if o := got[1]; o.Queued != 1 || o.Arrived != 1 || o.Running != 0 || o.OldestQueued > 30*time.Second {
		t.Errorf("other: %+v", o)
	}
	if e := got[2]; e != (store.QueueLoad{Queue: "empty"}) {
		t.Errorf("empty: %+v", e)
	}
}

func TestQueueLoadShardDown(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, raw := schedSetup(t, 2)
	inserted(t, s, 0, "acme")
	// Shard 1 loses its table: its part is missing, reported, and shard 0's
	// figures still come back.
	if _, err := raw[1].Exec(`ALTER TABLE jobs RENAME TO jobs_gone`); err != nil {
		t.Fatal(err)
	}
	got, err := s.QueueLoad(ctx, []string{"default"}, time.Minute)
	var se *store.ShardError
	if !errors.As(err, &se) || se.Shard != 1 {
		t.Fatalf("error %v, want shard 1's", err)
	}
	if len(got) != 1 || got[0].Queued != 1 || got[0].Arrived != 1 {
		t.Fatalf("got %+v", got)
	}
}
