package client_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/warrenhq/warren/pkg/cache"
	"github.com/warrenhq/warren/pkg/client"
	"github.com/warrenhq/warren/pkg/job"
	"github.com/warrenhq/warren/pkg/stacktest"
)

// finish completes a queued job as a worker would.
func finish(t *testing.T, s *stacktest.Stack, id job.ID) {
	t.Helper()
	ctx := context.Background()
	c, err := s.Store.Claim(ctx, id, "test-worker", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	done, err := s.Store.Complete(ctx, id, c.Attempt, job.JSON(`"ok"`))
	if err != nil {
		t.Fatal(err)
	}
	_ = s.Cache.PutJob(ctx, done)
	if err := s.Cache.Publish(ctx, cache.Done, id); err != nil {
		t.Fatal(err)
	}
}

func TestSubmitOptions(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{Shards: 2})
	ctx := context.Background()
	req := job.Request{Type: "echo", Payload: json.RawMessage(`{"a":1}`), Delay: "1h", CallbackURL: "https://example.com/cb"}
	a, err := s.Client.Submit(ctx, req, client.WithIdempotencyKey("k-1"))
	if err != nil {
		t.Fatal(err)
	}
	if a.State != job.Scheduled || a.CallbackURL == nil {
		t.Fatalf("submitted: %+v", a)
	}
	b, err := s.Client.Submit(ctx, req, client.WithIdempotencyKey("k-1"))
	if err != nil || b.ID != a.ID {
		t.Fatalf("replay: %v, %v; want job %s", b, err, a.ID)
	}
	req.Payload = json.RawMessage(`{"a":2}`)
	if _, err := s.Client.Submit(ctx, req, client.WithIdempotencyKey("k-1")); !client.IsConflict(err) {
		t.Fatalf("different request under the key: %v, want a conflict", err)
	}
	runAt := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	c, err := s.Client.Submit(ctx, job.Request{Type: "echo", RunAt: &runAt})
	if err != nil || c.State != job.Scheduled || !c.ScheduledAt.Equal(runAt) {
		t.Fatalf("run_at: %+v, %v", c, err)
	}
	// WithWait: nobody runs it, so it comes back queued after the wait.
	start := time.Now()
	d, err := s.Client.Submit(ctx, job.Request{Type: "nobody"}, client.WithWait(time.Second))
	if err != nil || d.State != job.Queued || time.Since(start) < time.Second {
		t.Fatalf("with wait: %+v, %v after %v", d, err, time.Since(start))
	}
}

func TestWait(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{Shards: 1})
	ctx := context.Background()
	j, err := s.Client.Submit(ctx, job.Request{Type: "slow"})
	if err != nil {
		t.Fatal(err)
	}
	// A short deadline: the last state and ctx's error.
	short, cancel := context.WithTimeout(ctx, 1500*time.Millisecond)
	defer cancel()
	got, err := s.Client.Wait(short, j.ID.String())
	if !errors.Is(err, context.DeadlineExceeded) || got == nil || got.State != job.Queued {
		t.Fatalf("short wait: %+v, %v", got, err)
	}
	// The job finishes while Wait holds a long poll.
	type result struct {
		j   *job.Job
		err error
	}
	ch := make(chan result, 1)
	go func() {
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		j, err := s.Client.Wait(ctx, j.ID.String())
		ch <- result{j, err}
	}()
	stacktest.Eventually(t, 10*time.Second, "Wait to be holding a request", func() bool {
		mfs, _ := s.Server.Registry().Gather()
		for _, mf := range mfs {
			if mf.GetName() == "warren_api_waiters_in_progress" {
				return mf.GetMetric()[0].GetGauge().GetValue() == 1
			}
		}
		return false
	})
	finish(t, s, j.ID)
	select {
	case r := <-ch:
		if r.err != nil || r.j.State != job.Succeeded {
			t.Fatalf("wait: %+v, %v", r.j, r.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Wait did not return within 5s of the job finishing")
	}
	// Errors that waiting cannot fix come back at once.
	if _, err := s.Client.Wait(ctx, job.NewID(time.Now(), 0).String()); !client.IsNotFound(err) {
		t.Fatalf("unknown job: %v", err)
	}
	// A client whose HTTP timeout is shorter than a long poll still waits.
	quick, err := client.New(s.URL, stacktest.Token, client.WithHTTPClient(&http.Client{Timeout: 2 * time.Second}))
	if err != nil {
		t.Fatal(err)
	}
	k, _ := s.Client.Submit(ctx, job.Request{Type: "slow"})
	short, cancel = context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if got, err := quick.Wait(short, k.ID.String()); !errors.Is(err, context.DeadlineExceeded) || got.State != job.Queued {
		t.Fatalf("quick client: %+v, %v", got, err)
	}
}

func TestCancelRetryListQueuesWorkers(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{Shards: 2})
	ctx := context.Background()
	items, err := s.Client.SubmitBatch(ctx, []job.Request{
		{Type: "a", Queue: "cq"}, {Type: "a", Queue: "cq"}, {Type: "bad type"}, {Type: "b", Queue: "cq"},
	})
	if err != nil || len(items) != 4 {
		t.Fatalf("batch: %v, %v", items, err)
	}
	if items[2].Err == nil || items[2].Err.Status != 422 || !strings.Contains(items[2].Err.Error(), "type: must be") {
		t.Fatalf("invalid item: %+v", items[2].Err)
	}
	first := items[0].Job
	cancelled, err := s.Client.Cancel(ctx, first.ID.String())
	if err != nil || cancelled.State != job.Cancelled {
		t.Fatalf("cancel: %+v, %v", cancelled, err)
	}
	if _, err := s.Client.Cancel(ctx, first.ID.String()); !client.IsConflict(err) {
		t.Fatalf("cancel twice: %v", err)
	}
	retried, err := s.Client.Retry(ctx, first.ID.String())
	if err != nil || retried.State != job.Queued || retried.Attempt != 0 {
		t.Fatalf("retry: %+v, %v", retried, err)
	}
	if _, err := s.Client.Retry(ctx, first.ID.String()); !client.IsConflict(err) {
		t.Fatalf("retry a queued job: %v", err)
	}

	page, err := s.Client.List(ctx, client.ListOptions{Queue: "cq", Limit: 2})
	if err != nil || len(page.Jobs) != 2 || page.NextCursor == "" {
		t.Fatalf("page 1: %+v, %v", page, err)
	}
	page2, err := s.Client.List(ctx, client.ListOptions{Queue: "cq", Limit: 2, Cursor: page.NextCursor})
	if err != nil || len(page2.Jobs) != 1 || page2.NextCursor != "" {
		t.Fatalf("page 2: %+v, %v", page2, err)
	}
	var all []job.ID
	for j, err := range s.Client.All(ctx, client.ListOptions{Queue: "cq", Limit: 1}) {
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, j.ID)
	}
	if len(all) != 3 || !slices.Contains(all, first.ID) || !slices.IsSortedFunc(all, func(a, b job.ID) int { return bytes.Compare(b[:], a[:]) }) {
		t.Fatalf("All: %v", all)
	}
	if _, err := s.Client.List(ctx, client.ListOptions{State: "bogus"}); err == nil || !strings.Contains(err.Error(), "not a state") {
		t.Fatalf("bad state: %v", err)
	}
	for _, err := range s.Client.All(ctx, client.ListOptions{Cursor: "!!"}) {
		if err == nil || !strings.Contains(err.Error(), "not a cursor") {
			t.Fatalf("bad cursor: %v", err)
		}
	}

	qs, unavailable, err := s.Client.Queues(ctx)
	if err != nil || len(unavailable) != 0 || len(qs) != 1 || qs[0].Name != "cq" || qs[0].Ready != 3 {
		t.Fatalf("queues: %+v, %v, %v", qs, unavailable, err)
	}
	now := time.Now().UTC()
	if err := s.Cache.PutWorker(ctx, cache.WorkerInfo{ID: "w9", Host: "h", PID: 9, StartedAt: now, LastHeartbeat: now}, time.Minute); err != nil {
		t.Fatal(err)
	}
	ws, err := s.Client.Workers(ctx)
	if err != nil || len(ws) != 1 || ws[0].ID != "w9" || ws[0].PID != 9 {
		t.Fatalf("workers: %+v, %v", ws, err)
	}
}
