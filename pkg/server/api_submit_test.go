package server_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/warrenhq/warren/pkg/job"
	"github.com/warrenhq/warren/pkg/stacktest"
	"github.com/warrenhq/warren/pkg/store"
)

func TestSubmitDelayedJobsAreScheduledNotPublished(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{Shards: 1})
	ctx := context.Background()
	before := time.Now()
	delayed := submit(t, s, `{"type":"echo","queue":"later","delay":"1h","callback_url":"https://example.com/done"}`)
	if delayed.State != job.Scheduled || delayed.ScheduledAt == nil {
		t.Fatalf("delayed job: %+v", delayed)
	}
	if at := delayed.ScheduledAt.Sub(before); at < time.Hour-time.Second || at > time.Hour+5*time.Second {
		t.Errorf("scheduled_at %v is not an hour from now", delayed.ScheduledAt)
	}
	if delayed.CallbackURL == nil || *delayed.CallbackURL != "https://example.com/done" {
		t.Errorf("callback_url: %v", delayed.CallbackURL)
	}
	runAt := time.Now().Add(48 * time.Hour).UTC().Truncate(time.Second)
	at := submit(t, s, fmt.Sprintf(`{"type":"echo","queue":"later","run_at":%q}`, runAt.Format(time.RFC3339)))
	if at.State != job.Scheduled || !at.ScheduledAt.Equal(runAt) {
		t.Fatalf("run_at job: state %s at %v, want scheduled at %v", at.State, at.ScheduledAt, runAt)
	}
	stored, err := s.Store.Get(ctx, "default", at.ID)
	if err != nil || stored.State != job.Scheduled || !stored.ScheduledAt.Equal(runAt) {
		t.Fatalf("stored: %+v, %v", stored, err)
	}
	// A past run_at, or no delay at all, runs now: queued and published.
	past := submit(t, s, `{"type":"echo","queue":"later","run_at":"2001-02-03T04:05:06Z"}`)
	zero := submit(t, s, `{"type":"echo","queue":"later","delay":"0s"}`)
	for _, j := range []*job.Job{past, zero} {
		if j.State != job.Queued || j.ScheduledAt == nil || j.ScheduledAt.Before(before.Add(-time.Second)) {
			t.Errorf("immediate job: state %s, scheduled_at %v", j.State, j.ScheduledAt)
		}
	}
	ready, _, err := s.Broker.QueueDepth(ctx, "later")
	if err != nil || ready != 2 {
		t.Fatalf("RabbitMQ holds %d messages (%v), want the 2 immediate jobs only", ready, err)
	}
}

func TestSubmitRejectsBadScheduleAndCallback(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{Shards: 1})
	far := time.Now().Add(400 * 24 * time.Hour).UTC().Format(time.RFC3339)
	for _, tc := range []struct {
		name, body string
		status     int
		want       string
	}{
		{"both", `{"type":"echo","delay":"1s","run_at":"2030-01-01T00:00:00Z"}`, 422, "not both"},
		{"bad delay", `{"type":"echo","delay":"soon"}`, 422, "not a duration"},
		{"negative delay", `{"type":"echo","delay":"-5s"}`, 422, "must not be negative"},
		{"delay too long", `{"type":"echo","delay":"9000h"}`, 422, "at most"},
		{"run_at too far", `{"type":"echo","run_at":"` + far + `"}`, 422, "366 days"},
		{"run_at not a time", `{"type":"echo","run_at":"tomorrow"}`, 422, `"run_at" must be an RFC 3339 time`},
		{"run_at a number", `{"type":"echo","run_at":5}`, 422, `"run_at" must be an RFC 3339 time`},
		{"callback relative", `{"type":"echo","callback_url":"/hook"}`, 422, "absolute http"},
		{"callback ftp", `{"type":"echo","callback_url":"ftp://example.com/x"}`, 422, "absolute http"},
		{"callback no host", `{"type":"echo","callback_url":"https:///x"}`, 422, "host"},
		{"callback too long", `{"type":"echo","callback_url":"https://example.com/` + strings.Repeat("a", 2048) + `"}`, 422, "at most 2048"},
		{"callback credentials", `{"type":"echo","callback_url":"https://u:p@example.com/"}`, 422, "credentials"},
		{"NUL in payload", `{"type":"echo","payload":{"a":"x\u0000y"}}`, 422, `\u0000`},
	} {
		r := call(t, "POST", s.URL+"/v1/jobs", stacktest.Token, tc.body)
		if r.status != tc.status {
			t.Errorf("%s: status %d, want %d; body %s", tc.name, r.status, tc.status, r.body)
			continue
		}
		p := problem(t, r)
		text := p.Detail
		for _, f := range p.Errors {
			text += " | " + f.Field + ": " + f.Detail
		}
		if !strings.Contains(text, tc.want) {
			t.Errorf("%s: problem %q does not say %q", tc.name, text, tc.want)
		}
	}
	for _, tc := range []struct {
		wait   string
		status int
		want   string
	}{
		{"soon", 400, "not a duration"},
		{"61s", 422, "between 0s and 1m0s"},
		{"-1s", 422, "between"},
	} {
		r := call(t, "POST", s.URL+"/v1/jobs?wait="+tc.wait, stacktest.Token, `{"type":"echo"}`)
		if r.status != tc.status || !strings.Contains(problem(t, r).Detail, tc.want) {
			t.Errorf("wait=%s: %d %s", tc.wait, r.status, r.body)
		}
	}
	// An escaped backslash before u0000 is an ordinary string, not a NUL.
	submit(t, s, `{"type":"echo","payload":{"a":"\\u0000"}}`)
}

func TestIdempotencyKey(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{Shards: 2})
	ctx := context.Background()
	url := s.URL + "/v1/jobs"
	key := map[string]string{"Idempotency-Key": "order-1234"}
	first := decodeJob(t, callWith(t, "POST", url, stacktest.Token, `{"type":"echo","payload":{"a":1,"b":[1,2]}}`, key), http.StatusAccepted)
	// The same request, formatted differently: a replay.
	r := callWith(t, "POST", url, stacktest.Token, "{ \"payload\": {\"b\":[1, 2], \"a\":1},\n \"type\":\"echo\" }", key)
	replay := decodeJob(t, r, http.StatusOK)
	if replay.ID != first.ID {
		t.Fatalf("replay returned job %s, want %s", replay.ID, first.ID)
	}
	if loc := r.header.Get("Location"); loc != "/v1/jobs/"+first.ID.String() {
		t.Errorf("replay Location %q", loc)
	}
	// A different request under the key: 409 naming the job.
	r = callWith(t, "POST", url, stacktest.Token, `{"type":"echo","payload":{"a":2}}`, key)
	if r.status != http.StatusConflict {
		t.Fatalf("different body: %d %s", r.status, r.body)
	}
	if p := problem(t, r); !strings.Contains(p.Detail, first.ID.String()) || !strings.Contains(p.Detail, "different request") {
		t.Errorf("409 detail: %q", p.Detail)
	}
	// Another tenant has its own keys.
	other := decodeJob(t, callWith(t, "POST", url, stacktest.OtherToken, `{"type":"echo","payload":{"a":2}}`, key), http.StatusAccepted)
	if other.ID == first.ID {
		t.Fatal("another tenant got the first tenant's job")
	}
	// The key routes to the same shard every time.
	for i := range 5 {
		k := fmt.Sprintf("route-%d", i)
		a := decodeJob(t, callWith(t, "POST", url, stacktest.Token, `{"type":"echo"}`, map[string]string{"Idempotency-Key": k}), http.StatusAccepted)
		b := decodeJob(t, callWith(t, "POST", url, stacktest.Token, `{"type":"echo"}`, map[string]string{"Idempotency-Key": k}), http.StatusOK)
		if a.ID != b.ID {
			t.Fatalf("key %s: %s then %s", k, a.ID, b.ID)
		}
	}
	// Only the first submit was published.
	ready, _, err := s.Broker.QueueDepth(ctx, "default")
	if err != nil || ready != 7 {
		t.Fatalf("RabbitMQ holds %d messages (%v), want 7 (one per created job)", ready, err)
	}
	for _, tc := range []struct {
		key, want string
	}{
		{"", "empty"},
		{strings.Repeat("k", 256), "at most 255"},
		{"tab\there", "printable"},
	} {
		r := callWith(t, "POST", url, stacktest.Token, `{"type":"echo"}`, map[string]string{"Idempotency-Key": tc.key})
		if r.status != http.StatusBadRequest || !strings.Contains(problem(t, r).Detail, tc.want) {
			t.Errorf("key %q: %d %s", tc.key, r.status, r.body)
		}
	}
}

func TestIdempotencyKeyConcurrentSubmitsMakeOneJob(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{Shards: 2})
	const n = 20
	var wg sync.WaitGroup
	answers := make([]response, n)
	for i := range n {
		wg.Go(func() {
			answers[i] = callWith(t, "POST", s.URL+"/v1/jobs", stacktest.Token, `{"type":"echo","payload":{"n":1}}`,
				map[string]string{"Idempotency-Key": "the-one-key"})
		})
	}
	wg.Wait()
	created, replayed := 0, 0
	var id job.ID
	for i, r := range answers {
		j := decodeJob(t, r, r.status)
		switch r.status {
		case http.StatusAccepted:
			created++
		case http.StatusOK:
			replayed++
		default:
			t.Fatalf("submit %d: %d %s", i, r.status, r.body)
		}
		if i > 0 && j.ID != id {
			t.Fatalf("submit %d returned job %s, others %s", i, j.ID, id)
		}
		id = j.ID
	}
	if created != 1 || replayed != n-1 {
		t.Fatalf("%d created, %d replayed; want 1 and %d", created, replayed, n-1)
	}
	jobs, _, err := s.Store.List(context.Background(), store.ListQuery{Tenant: "default", Limit: 100})
	if err != nil || len(jobs) != 1 {
		t.Fatalf("%d jobs stored (%v), want exactly 1", len(jobs), err)
	}
}

func TestSubmitWait(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{Shards: 1})
	// Nobody runs it: 202 after the wait, in its latest state.
	start := time.Now()
	r := call(t, "POST", s.URL+"/v1/jobs?wait=1s", stacktest.Token, `{"type":"nobody.handles.this"}`)
	j := decodeJob(t, r, http.StatusAccepted)
	if d := time.Since(start); d < time.Second || d > 10*time.Second {
		t.Errorf("wait=1s answered after %v", d)
	}
	if j.State != job.Queued {
		t.Errorf("state %s", j.State)
	}
	// The test finishes it while the submit waits: 200 with the result.
	ch := async(t, "POST", s.URL+"/v1/jobs?wait=30s", stacktest.Token, `{"type":"quick","queue":"waitq"}`)
	var id job.ID
	stacktest.Eventually(t, 10*time.Second, "the submitted job to appear", func() bool {
		jobs, _, err := s.Store.List(context.Background(), store.ListQuery{Tenant: "default", Queue: "waitq", Limit: 1})
		if err == nil && len(jobs) == 1 {
			id = jobs[0].ID
		}
		return !id.IsZero() && waiters(t, s) == 1
	})
	finish(t, s, id, `{"ok":true}`)
	done := decodeJob(t, within(t, ch, 5*time.Second, "submit ?wait after the job finished"), http.StatusOK)
	if done.ID != id || done.State != job.Succeeded || string(done.Result) != `{"ok":true}` {
		t.Fatalf("waited job: %+v", done)
	}
	// A replay of an idempotent submit of a finished job: 200 at once.
	key := map[string]string{"Idempotency-Key": "wait-key"}
	first := decodeJob(t, callWith(t, "POST", s.URL+"/v1/jobs", stacktest.Token, `{"type":"echo"}`, key), http.StatusAccepted)
	finish(t, s, first.ID, `1`)
	again := decodeJob(t, callWith(t, "POST", s.URL+"/v1/jobs?wait=30s", stacktest.Token, `{"type":"echo"}`, key), http.StatusOK)
	if again.ID != first.ID || again.State != job.Succeeded {
		t.Fatalf("replay: %+v", again)
	}
}
