package server_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/warrenhq/warren/pkg/cache"
	"github.com/warrenhq/warren/pkg/job"
	"github.com/warrenhq/warren/pkg/stacktest"
)

func TestCancel(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{Shards: 2})
	ctx := context.Background()
	// The events a worker and the waiters listen to.
	cancels, err := s.Cache.ListenConfirmed(ctx, cache.Cancel, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cancels.Close()

	for _, body := range []string{`{"type":"slow"}`, `{"type":"slow","delay":"1h"}`} {
		j := submit(t, s, body)
		woke, stop := cancels.Wait(j.ID)
		waiting := async(t, "GET", s.URL+"/v1/jobs/"+j.ID.String()+"?wait=30s", stacktest.Token, "")
		stacktest.Eventually(t, 10*time.Second, "the waiter to register", func() bool { return waiters(t, s) == 1 })
		r := call(t, "POST", s.URL+"/v1/jobs/"+j.ID.String()+"/cancel", stacktest.Token, "")
		got := decodeJob(t, r, http.StatusOK)
		if got.State != job.Cancelled || got.FinishedAt == nil {
			t.Fatalf("cancelled %s job: %+v", j.State, got)
		}
		select {
		case <-woke:
		case <-time.After(5 * time.Second):
			t.Fatal("no Cancel event for the worker")
		}
		stop()
		if w := decodeJob(t, within(t, waiting, 5*time.Second, "a waiter of the cancelled job"), http.StatusOK); w.State != job.Cancelled {
			t.Fatalf("waiter saw %s", w.State)
		}
		if c, err := s.Cache.GetJob(ctx, "default", j.ID); err != nil || c.State != job.Cancelled {
			t.Fatalf("cached: %+v, %v", c, err)
		}
		stacktest.Eventually(t, 5*time.Second, "no waiters left", func() bool { return waiters(t, s) == 0 })
	}

	// A running job: cancelled, and the worker's attempt is fenced off.
	j := submit(t, s, `{"type":"slow"}`)
	claimed, err := s.Store.Claim(ctx, j.ID, "w", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	decodeJob(t, call(t, "POST", s.URL+"/v1/jobs/"+j.ID.String()+"/cancel", stacktest.Token, ""), http.StatusOK)
	if _, err := s.Store.Complete(ctx, j.ID, claimed.Attempt, nil); err == nil {
		t.Fatal("the worker completed a cancelled job")
	}

	// Terminal jobs: 409 naming the state.
	done := submit(t, s, `{"type":"slow"}`)
	finish(t, s, done.ID, `1`)
	for _, tc := range []struct {
		id    job.ID
		state string
	}{{j.ID, "cancelled"}, {done.ID, "succeeded"}} {
		r := call(t, "POST", s.URL+"/v1/jobs/"+tc.id.String()+"/cancel", stacktest.Token, "")
		if r.status != http.StatusConflict || !strings.Contains(problem(t, r).Detail, "is "+tc.state) {
			t.Errorf("cancel %s job: %d %s", tc.state, r.status, r.body)
		}
	}
	assertNotFoundAndBadID(t, s, "cancel")
}

func TestRetry(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{Shards: 2})
	ctx := context.Background()
	dead := submit(t, s, `{"type":"flaky","queue":"retryq"}`)
	kill(t, s, dead.ID)
	// The dead job is in the cache, as a worker would leave it.
	stale, err := s.Store.Get(ctx, "default", dead.ID)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Cache.PutJob(ctx, stale); err != nil {
		t.Fatal(err)
	}
	got := decodeJob(t, call(t, "POST", s.URL+"/v1/jobs/"+dead.ID.String()+"/retry", stacktest.Token, ""), http.StatusOK)
	if got.State != job.Queued || got.Attempt != 0 || got.Error != nil || got.FinishedAt != nil || got.StartedAt != nil {
		t.Fatalf("retried job: %+v", got)
	}
	if _, err := s.Cache.GetJob(ctx, "default", dead.ID); !errors.Is(err, cache.ErrMiss) {
		t.Fatalf("the dead job is still cached: %v", err)
	}
	if read := decodeJob(t, call(t, "GET", s.URL+"/v1/jobs/"+dead.ID.String(), stacktest.Token, ""), http.StatusOK); read.State != job.Queued {
		t.Fatalf("read after retry: %s", read.State)
	}
	// Published again: the original message and the retry's.
	stacktest.Eventually(t, 10*time.Second, "the retried job's message", func() bool {
		ready, _, err := s.Broker.QueueDepth(ctx, "retryq")
		return err == nil && ready == 2
	})
	// It runs again from attempt 1.
	c, err := s.Store.Claim(ctx, dead.ID, "w", time.Minute)
	if err != nil || c.Attempt != 1 {
		t.Fatalf("claim after retry: %+v, %v", c, err)
	}

	// Cancelled jobs can be retried; queued, running and succeeded cannot.
	cancelled := submit(t, s, `{"type":"flaky"}`)
	decodeJob(t, call(t, "POST", s.URL+"/v1/jobs/"+cancelled.ID.String()+"/cancel", stacktest.Token, ""), http.StatusOK)
	decodeJob(t, call(t, "POST", s.URL+"/v1/jobs/"+cancelled.ID.String()+"/retry", stacktest.Token, ""), http.StatusOK)
	succeeded := submit(t, s, `{"type":"flaky"}`)
	finish(t, s, succeeded.ID, `1`)
	for _, tc := range []struct {
		id    job.ID
		state string
	}{{cancelled.ID, "queued"}, {dead.ID, "running"}, {succeeded.ID, "succeeded"}} {
		r := call(t, "POST", s.URL+"/v1/jobs/"+tc.id.String()+"/retry", stacktest.Token, "")
		if r.status != http.StatusConflict || !strings.Contains(problem(t, r).Detail, "is "+tc.state) {
			t.Errorf("retry %s job: %d %s", tc.state, r.status, r.body)
		}
	}
	assertNotFoundAndBadID(t, s, "retry")
}

func assertNotFoundAndBadID(t *testing.T, s *stacktest.Stack, action string) {
	t.Helper()
	other := submit(t, s, `{"type":"x"}`)
	for _, tc := range []struct {
		id, token string
		status    int
	}{
		{other.ID.String(), stacktest.OtherToken, 404},
		{job.NewID(time.Now(), 0).String(), stacktest.Token, 404},
		{job.NewID(time.Now(), 9).String(), stacktest.Token, 404},
		{"not-an-id", stacktest.Token, 400},
		{other.ID.String(), "", 401},
	} {
		r := call(t, "POST", s.URL+"/v1/jobs/"+tc.id+"/"+action, tc.token, "")
		if r.status != tc.status {
			t.Errorf("%s %s: %d, want %d", action, tc.id, r.status, tc.status)
			continue
		}
		problem(t, r)
	}
	if r := call(t, "GET", s.URL+"/v1/jobs/"+other.ID.String()+"/"+action, stacktest.Token, ""); r.status != http.StatusMethodNotAllowed || r.header.Get("Allow") != "POST" {
		t.Errorf("GET %s: %d, Allow %q", action, r.status, r.header.Get("Allow"))
	}
}
