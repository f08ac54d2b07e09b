package server_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warrenhq/warren/pkg/job"
	"github.com/warrenhq/warren/pkg/stacktest"
	"github.com/warrenhq/warren/pkg/worker"
)

// TestCancelRetryingAndDeadJobs runs a real worker whose handler always
// fails: a job with attempts left waits in retrying for its backoff (an
// hour), and cancelling it over REST ends it cancelled; a job with one
// attempt ends dead, and cancelling it is a 409 problem naming its state.
func TestCancelRetryingAndDeadJobs(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{Shards: 2})
	ctx := context.Background()
	w, err := worker.New(s.WorkerConfig())
	if err != nil {
		t.Fatal(err)
	}
	var runs atomic.Int64
	err = worker.Handle(w, "always.fails", func(ctx context.Context, j *worker.Job[struct{}]) (struct{}, error) {
		runs.Add(1)
		return struct{}{}, errors.New("this handler always fails")
	}, worker.Backoff(func(int) time.Duration { return time.Hour }))
	if err != nil {
		t.Fatal(err)
	}
	stacktest.StartWorker(t, w)

	state := func(id job.ID) *job.Job {
		t.Helper()
		j, err := s.Store.Get(ctx, "default", id)
		if err != nil {
			t.Fatalf("get %s: %v", id, err)
		}
		return j
	}
	cancel := func(id job.ID) response {
		t.Helper()
		return call(t, "POST", s.URL+"/v1/jobs/"+id.String()+"/cancel", stacktest.Token, "")
	}

	// Retrying: the first attempt failed, the next is an hour away.
	retrying := submit(t, s, `{"type":"always.fails","max_attempts":3}`)
	stacktest.Eventually(t, 30*time.Second, "the job to fail its first attempt and wait to retry", func() bool {
		return state(retrying.ID).State == job.Retrying
	})
	if got := decodeJob(t, call(t, "GET", s.URL+"/v1/jobs/"+retrying.ID.String(), stacktest.Token, ""), http.StatusOK); got.State != job.Retrying || got.Attempt != 1 {
		t.Fatalf("before the cancel, GET shows %s at attempt %d, want retrying at 1", got.State, got.Attempt)
	}
	got := decodeJob(t, cancel(retrying.ID), http.StatusOK)
	if got.ID != retrying.ID || got.State != job.Cancelled || got.FinishedAt == nil || got.Attempt != 1 {
		t.Fatalf("cancel of the retrying job answered %+v", got)
	}
	if j := state(retrying.ID); j.State != job.Cancelled || j.FinishedAt == nil {
		t.Fatalf("after the cancel the job is %s (finished %v), want cancelled", j.State, j.FinishedAt)
	}
	if got := decodeJob(t, call(t, "GET", s.URL+"/v1/jobs/"+retrying.ID.String(), stacktest.Token, ""), http.StatusOK); got.State != job.Cancelled {
		t.Fatalf("after the cancel, GET shows %s", got.State)
	}
	// Cancelled is terminal: a second cancel is refused, naming the state.
	if r := cancel(retrying.ID); r.status != http.StatusConflict || !strings.Contains(problem(t, r).Detail, "is cancelled") {
		t.Fatalf("second cancel: %d %s", r.status, r.body)
	}

	// Dead: its only attempt failed.
	dead := submit(t, s, `{"type":"always.fails","max_attempts":1}`)
	stacktest.Eventually(t, 30*time.Second, "the job to fail its only attempt and die", func() bool {
		return state(dead.ID).State == job.Dead
	})
	r := cancel(dead.ID)
	if r.status != http.StatusConflict {
		t.Fatalf("cancel of a dead job: %d %s, want 409", r.status, r.body)
	}
	if p := problem(t, r); !strings.Contains(p.Detail, "is dead") || !strings.Contains(p.Detail, dead.ID.String()) {
		t.Fatalf("409 detail %q: want the job and its state", p.Detail)
	}
	if j := state(dead.ID); j.State != job.Dead || j.Attempt != 1 {
		t.Fatalf("after the refused cancel the job is %s at attempt %d, want dead at 1", j.State, j.Attempt)
	}
	if n := runs.Load(); n != 2 {
		t.Fatalf("the handler ran %d times, want 2 (one attempt of each job)", n)
	}
}
