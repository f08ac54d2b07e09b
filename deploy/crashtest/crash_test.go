package crashtest

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/warrenhq/warren/pkg/job"
)

// The api is killed between its commit and its publish (the failpoint
// WARREN_FAILPOINT=kill-after-commit): the job is committed and no message
// exists. The leading scheduler's relay publishes it and a worker runs it.
func TestAPIKilledBetweenCommitAndPublish(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 2)
	sched := c.start("scheduler")
	c.start("workers")
	api := c.start("api", "WARREN_FAILPOINT=kill-after-commit")
	api.waitReady(t)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, api.url("/v1/jobs"), strings.NewReader(`{"type":"echo","payload":{"crash":"after commit"}}`))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err == nil {
		resp.Body.Close()
		t.Fatalf("the api answered %d; the failpoint should have killed it", resp.StatusCode)
	}
	api.wait(t, 10*time.Second)
	killed := time.Now()
	if !api.killedBySIGKILL() {
		t.Fatalf("the api ended with %v, want SIGKILL", api.err)
	}

	// Committed, never published: queued, no message, no attempt yet.
	rows := c.rows()
	if len(rows) != 1 {
		t.Fatalf("%d jobs stored, want 1", len(rows))
	}
	id := rows[0].ID
	if r := rows[0]; r.State != job.Queued || r.PublishedAt != nil || r.Attempt != 0 {
		t.Fatalf("after the kill the job is %s, attempt %d, published at %v; want queued, never published", r.State, r.Attempt, r.PublishedAt)
	}
	eventually(t, 20*time.Second, "the job to succeed", func() bool { return c.row(id).State == job.Succeeded })
	took := time.Since(killed)
	t.Logf("job committed by the killed api succeeded %s after the kill (relay grace 3s, tick 1s)", took.Round(time.Millisecond))
	if took > 12*time.Second {
		t.Errorf("it took %s; want about 10s at most", took)
	}
	r := c.row(id)
	if r.Attempt != 1 || r.PublishedAt == nil || r.Result == nil || !strings.Contains(*r.Result, "after commit") {
		t.Errorf("job: attempt %d, published at %v, result %v", r.Attempt, r.PublishedAt, r.Result)
	}
	if v, err := sched.metric("warren_scheduler_jobs_relayed_total"); err != nil || v != 1 {
		t.Errorf("relayed metric = %v, %v; want 1", v, err)
	}
}

// A worker is killed mid-job: the reaper requeues the job once its lease
// has run out, counting the attempt, and another worker finishes it.
func TestWorkerKilledMidJob(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 2)
	sched := c.start("scheduler")
	api := c.start("api")
	first := c.start("workers", "WARREN_LEASE=3s")
	api.waitReady(t)
	cl := api.client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	j, err := cl.Submit(ctx, job.Request{Type: "sleep", Payload: json.RawMessage(`{"ms":4000}`)})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "the first worker to run the job", func() bool {
		r := c.row(j.ID)
		return r.State == job.Running && r.WorkerID != nil
	})
	victim := *c.row(j.ID).WorkerID
	// The second worker starts only now, so the first one has the job.
	second := c.start("workers", "WARREN_LEASE=3s")
	killed := first.kill(t)

	eventually(t, 20*time.Second, "the job to be requeued or taken by the second worker", func() bool {
		r := c.row(j.ID)
		return r.Attempt == 2 || r.State == job.Queued
	})
	t.Logf("reaped %s after the worker was killed (lease 3s)", time.Since(killed).Round(time.Millisecond))
	eventually(t, 30*time.Second, "the job to succeed", func() bool { return c.row(j.ID).State == job.Succeeded })
	r := c.row(j.ID)
	if r.Attempt != 2 || r.Error != nil || r.Result == nil || !strings.Contains(*r.Result, "4000") {
		t.Errorf("job: attempt %d, error %v, result %v; want attempt 2 with a result", r.Attempt, r.Error, r.Result)
	}
	if r.WorkerID != nil {
		t.Errorf("finished job still names worker %s", *r.WorkerID)
	}
	// Succeeded once: by the second worker; the first never got that far.
	if n := count(second.out.String(), "job succeeded", j.ID.String()); n != 1 {
		t.Errorf("the second worker logged %d successes of the job, want 1", n)
	}
	if n := count(first.out.String(), "job succeeded", j.ID.String()); n != 0 {
		t.Errorf("the killed worker logged %d successes of the job", n)
	}
	if !strings.Contains(sched.out.String(), "jobs of lost workers reaped") {
		t.Error("the scheduler did not log the reaping")
	}
	got, err := cl.Get(ctx, j.ID.String())
	if err != nil || got.State != job.Succeeded || got.Attempt != 2 {
		t.Errorf("over the API: %+v, %v", got, err)
	}
	t.Logf("the job of worker %s succeeded on attempt %d", victim, got.Attempt)
}

// The leading scheduler is killed with a standby running: the standby
// becomes the leader within 15s, and delayed jobs submitted before the kill
// still run.
func TestLeaderKilledStandbyTakesOver(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 2)
	scheds := []*proc{c.start("scheduler"), c.start("scheduler")}
	api := c.start("api")
	c.start("workers")
	api.waitReady(t)
	leader := -1
	eventually(t, 30*time.Second, "one leader", func() bool {
		n := 0
		for i, s := range scheds {
			if v, err := s.metric("warren_scheduler_leader"); err == nil && v == 1 {
				n, leader = n+1, i
			}
		}
		return n == 1
	})
	standby := scheds[1-leader]
	if v, err := standby.metric("warren_scheduler_leader"); err != nil || v != 0 {
		t.Fatalf("standby: warren_scheduler_leader = %v, %v", v, err)
	}
	cl := api.client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var delayed []*job.Job
	for range 5 {
		j, err := cl.Submit(ctx, job.Request{Type: "echo", Delay: "4s"})
		if err != nil {
			t.Fatal(err)
		}
		delayed = append(delayed, j)
	}

	killed := scheds[leader].kill(t)
	eventually(t, 15*time.Second, "the standby to lead", func() bool {
		v, err := standby.metric("warren_scheduler_leader")
		return err == nil && v == 1
	})
	takeover := time.Since(killed)
	t.Logf("takeover after SIGKILL of the leader: %s (standby retry 2s)", takeover.Round(time.Millisecond))
	if takeover > 15*time.Second {
		t.Errorf("takeover took %s", takeover)
	}
	if !strings.Contains(standby.out.String(), "became the leader") {
		t.Error("the standby did not log its leadership")
	}
	for _, d := range delayed {
		j, err := cl.Wait(ctx, d.ID.String())
		if err != nil {
			t.Fatal(err)
		}
		if j.State != job.Succeeded || j.StartedAt == nil || j.StartedAt.Sub(j.CreatedAt) < 4*time.Second {
			t.Errorf("delayed job %s: %s, started %v after creation", j.ID, j.State, j.StartedAt)
		}
	}
}
