package crashtest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/warrenhq/warren/pkg/job"
	"github.com/warrenhq/warren/pkg/proctest"
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

// The leading scheduler runs the worker fleet (WARREN_AUTOSCALE=local) and
// is killed with SIGKILL while its workers run jobs: the kernel sends them
// SIGTERM (their parent-death signal) and they exit; the standby leads
// within 15s and starts a fleet of its own, the only one; every job,
// submitted before the kill or after, succeeds.
func TestLeaderWithLocalFleetKilled(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 2)
	workers := proctest.Bin(t, "workers")
	fleet := func() []string {
		return []string{
			"WARREN_AUTOSCALE=local",
			"WARREN_AUTOSCALE_COMMAND=" + workers,
			fmt.Sprintf("WARREN_AUTOSCALE_PORT=%d", proctest.FreePort(t)),
			"WARREN_AUTOSCALE_MIN=2", "WARREN_AUTOSCALE_MAX=2",
			"WARREN_AUTOSCALE_INTERVAL=1s",
			// The workers inherit it: a job of a worker lost with the
			// scheduler is reaped soon.
			"WARREN_LEASE=3s",
		}
	}
	scheds := []*proc{c.start("scheduler", fleet()...), c.start("scheduler", fleet()...)}
	api := c.start("api")
	api.waitReady(t)
	leader := -1
	eventually(t, 30*time.Second, "one leader running two workers", func() bool {
		n := 0
		for i, s := range scheds {
			if v, err := s.metric("warren_scheduler_leader"); err == nil && v == 1 {
				n, leader = n+1, i
			}
		}
		return n == 1 && len(running(workerPIDs(scheds[leader]))) == 2
	})
	standby := scheds[1-leader]
	if pids := workerPIDs(standby); len(pids) != 0 {
		t.Fatalf("the standby started workers %v", pids)
	}
	cl := api.client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	submit := func(n int, req job.Request) {
		t.Helper()
		for range n {
			if _, err := cl.Submit(ctx, req); err != nil {
				t.Fatal(err)
			}
		}
	}
	submit(10, job.Request{Type: "sleep", Payload: json.RawMessage(`{"ms":1500}`)})
	submit(5, job.Request{Type: "echo", Delay: "3s"})
	eventually(t, 20*time.Second, "jobs running on the leader's workers", func() bool {
		for _, r := range c.rows() {
			if r.State == job.Running {
				return true
			}
		}
		return false
	})

	orphans := workerPIDs(scheds[leader])
	killed := scheds[leader].kill(t)
	eventually(t, 30*time.Second, "the killed leader's workers to exit", func() bool { return len(running(orphans)) == 0 })
	t.Logf("the killed leader's %d workers exited %s after the kill", len(orphans), time.Since(killed).Round(time.Millisecond))
	eventually(t, 15*time.Second, "the standby to lead", func() bool {
		v, err := standby.metric("warren_scheduler_leader")
		return err == nil && v == 1
	})
	t.Logf("takeover after SIGKILL of the leader: %s", time.Since(killed).Round(time.Millisecond))
	eventually(t, 30*time.Second, "the new leader's two workers", func() bool { return len(running(workerPIDs(standby))) == 2 })
	t.Logf("the new leader's fleet up %s after the kill", time.Since(killed).Round(time.Millisecond))
	submit(10, job.Request{Type: "sleep", Payload: json.RawMessage(`{"ms":100}`)})

	const total = 25
	eventually(t, 60*time.Second, "every job to succeed", func() bool {
		rows := c.rows()
		for _, r := range rows {
			if r.State != job.Succeeded {
				return false
			}
		}
		return len(rows) == total
	})
	attempts := map[int]int{}
	for _, r := range c.rows() {
		attempts[r.Attempt]++
	}
	t.Logf("%d jobs succeeded, by attempt: %v", total, attempts)
	// One fleet: the new leader's two workers; none of the old one left.
	if pids := running(orphans); len(pids) != 0 {
		t.Errorf("workers of the killed leader still run: %v", pids)
	}
	if pids := running(workerPIDs(standby)); len(pids) != 2 {
		t.Errorf("the new leader runs workers %v, want two", pids)
	}
	if n := count(standby.out.String(), "job succeeded"); n == 0 {
		t.Error("the new leader's workers ran no job")
	}
}

var workerStarted = regexp.MustCompile(`msg="worker process started".* pid=(\d+)`)

// workerPIDs returns the worker processes a scheduler logged it started.
func workerPIDs(p *proc) []int {
	var pids []int
	for _, m := range workerStarted.FindAllStringSubmatch(p.out.String(), -1) {
		pid, _ := strconv.Atoi(m[1])
		pids = append(pids, pid)
	}
	return pids
}

// running returns the processes of pids that still run: neither gone nor a
// zombie (a dead scheduler's children are reaped by whoever inherits them,
// if at all).
func running(pids []int) []int {
	var out []int
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// pid (comm) state …: the state follows the last ')'.
		if i := bytes.LastIndexByte(b, ')'); i >= 0 && i+2 < len(b) && b[i+2] != 'Z' && b[i+2] != 'X' {
			out = append(out, pid)
		}
	}
	return out
}
