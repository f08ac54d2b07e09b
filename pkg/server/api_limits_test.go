package server_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/warrenhq/warren/pkg/broker"
	"github.com/warrenhq/warren/pkg/cache"
	"github.com/warrenhq/warren/pkg/server"
	"github.com/warrenhq/warren/pkg/stacktest"
	"github.com/warrenhq/warren/pkg/store"
)

// batchOf returns a batch body of n echo jobs on queue.
func batchOf(n int, queue string) string {
	items := make([]string, n)
	for i := range items {
		items[i] = `{"type":"echo","queue":"` + queue + `"}`
	}
	return `{"jobs":[` + strings.Join(items, ",") + `]}`
}

// problemDetail decodes a problem answer, failing unless the status is want.
func problemDetail(t *testing.T, r response, want int) string {
	t.Helper()
	if r.status != want {
		t.Fatalf("status %d, want %d; body %s", r.status, want, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("Content-Type %q", ct)
	}
	var p server.Problem
	if err := json.Unmarshal(r.body, &p); err != nil {
		t.Fatal(err)
	}
	return p.Detail
}

func TestRateLimitPerTenant(t *testing.T) {
	t.Parallel()
	// An hour's window, so that the test does not straddle two windows.
	s := stacktest.New(t, stacktest.Options{Shards: 1, Server: func(c *server.Config) {
		c.RateLimit = cache.Rate{Limit: 3, Window: time.Hour}
	}})
	post := func(token string) response { return call(t, "POST", s.URL+"/v1/jobs", token, `{"type":"echo"}`) }
	for range 3 {
		decodeJob(t, post(stacktest.Token), http.StatusAccepted)
	}
	r := post(stacktest.Token)
	detail := problemDetail(t, r, http.StatusTooManyRequests)
	if !strings.Contains(detail, "3 jobs per 1h0m0s") || !strings.Contains(detail, "default") {
		t.Errorf("detail %q does not name the limit and tenant", detail)
	}
	if secs, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || secs < 1 || secs > 3600 {
		t.Errorf("Retry-After %q, want 1..3600 seconds", r.header.Get("Retry-After"))
	}
	// The other tenant has its own count: a batch of 2 and a single job fit.
	decodeJob(t, post(stacktest.OtherToken), http.StatusAccepted)
	if r := call(t, "POST", s.URL+"/v1/jobs/batch", stacktest.OtherToken, batchOf(2, "default")); r.status != http.StatusAccepted {
		t.Fatalf("other tenant's batch: %d %s", r.status, r.body)
	}
	// ...and then its limit is reached too: a batch takes one unit per job.
	problemDetail(t, call(t, "POST", s.URL+"/v1/jobs/batch", stacktest.OtherToken, batchOf(1, "default")), http.StatusTooManyRequests)
	// A batch bigger than the limit can never pass: it says to split it.
	if d := problemDetail(t, call(t, "POST", s.URL+"/v1/jobs/batch", stacktest.Token, batchOf(4, "default")), http.StatusTooManyRequests); !strings.Contains(d, "split") {
		t.Errorf("detail %q", d)
	}
	if v, _ := metric(t, s, "warren_api_rate_limited_total", map[string]string{"tenant": "default"}); v != 2 {
		t.Errorf("rate limited metric for default: %v, want 2", v)
	}
}

func TestRateLimitBatchCountsEachJob(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{Shards: 1, Server: func(c *server.Config) {
		c.RateLimit = cache.Rate{Limit: 5, Window: time.Hour}
	}})
	if r := call(t, "POST", s.URL+"/v1/jobs/batch", stacktest.Token, batchOf(3, "default")); r.status != http.StatusAccepted {
		t.Fatalf("batch of 3: %d %s", r.status, r.body)
	}
	// 2 left: a batch of 3 is refused whole and takes nothing...
	problemDetail(t, call(t, "POST", s.URL+"/v1/jobs/batch", stacktest.Token, batchOf(3, "default")), http.StatusTooManyRequests)
	// ...so 2 single jobs still fit, and the next does not.
	submit(t, s, `{"type":"echo"}`)
	submit(t, s, `{"type":"echo"}`)
	problemDetail(t, call(t, "POST", s.URL+"/v1/jobs", stacktest.Token, `{"type":"echo"}`), http.StatusTooManyRequests)
}

func TestRateLimitFailsOpenWithoutRedis(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{Shards: 1, RedisURL: "redis://127.0.0.1:1/0", Server: func(c *server.Config) {
		c.RateLimit = cache.Rate{Limit: 1, Window: time.Hour}
	}})
	for range 3 {
		submit(t, s, `{"type":"echo"}`)
	}
	if v, _ := metric(t, s, "warren_api_rate_limit_errors_total", nil); v != 3 {
		t.Errorf("rate limit errors: %v, want 3", v)
	}
}

func TestBackpressureAboveMaxQueueDepth(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{Shards: 1, Server: func(c *server.Config) {
		c.MaxQueueDepth = 5
		c.DepthEvery = 20 * time.Millisecond
	}})
	// No worker: every submit grows the queue until the sampler sees it over 5.
	var full response
	stacktest.Eventually(t, 15*time.Second, "a submit to the full queue gets 503", func() bool {
		full = call(t, "POST", s.URL+"/v1/jobs", stacktest.Token, `{"type":"echo","queue":"bp"}`)
		if full.status != http.StatusAccepted && full.status != http.StatusServiceUnavailable {
			t.Fatalf("status %d: %s", full.status, full.body)
		}
		return full.status == http.StatusServiceUnavailable
	})
	detail := problemDetail(t, full, http.StatusServiceUnavailable)
	if !strings.Contains(detail, `"bp"`) || !strings.Contains(detail, "limit of 5") {
		t.Errorf("detail %q does not name the queue and the limit", detail)
	}
	if full.header.Get("Retry-After") != "1" {
		t.Errorf("Retry-After %q", full.header.Get("Retry-After"))
	}
	ready, _, err := s.Broker.QueueDepth(context.Background(), "bp")
	if err != nil || ready <= 5 || ready > 50 {
		t.Errorf("queue depth %d (%v): want just above the limit", ready, err)
	}
	// In a batch, only the items for the full queue are refused.
	r := call(t, "POST", s.URL+"/v1/jobs/batch", stacktest.Token, `{"jobs":[{"type":"echo","queue":"bp"},{"type":"echo"}]}`)
	var items struct{ Jobs []server.BatchItem }
	if r.status != http.StatusAccepted || json.Unmarshal(r.body, &items) != nil || len(items.Jobs) != 2 {
		t.Fatalf("batch: %d %s", r.status, r.body)
	}
	if e := items.Jobs[0].Error; e == nil || e.Status != http.StatusServiceUnavailable || !strings.Contains(e.Detail, `"bp"`) {
		t.Errorf("item for the full queue: %+v", items.Jobs[0])
	}
	if items.Jobs[1].Job == nil {
		t.Errorf("item for another queue: %+v", items.Jobs[1])
	}
	if v, _ := metric(t, s, "warren_api_backpressure_rejections_total", map[string]string{"queue": "bp"}); v < 2 {
		t.Errorf("backpressure rejections: %v, want at least 2", v)
	}

	// Drain the queue: submits are accepted again.
	ctx, cancel := context.WithCancel(context.Background())
	var consumer sync.WaitGroup
	consumer.Go(func() {
		_ = s.Broker.Consume(ctx, "bp", 100, func(_ context.Context, d *broker.Delivery) { _ = d.Ack() })
	})
	defer func() { cancel(); consumer.Wait() }()
	stacktest.Eventually(t, 15*time.Second, "a submit to the drained queue gets 202", func() bool {
		r := call(t, "POST", s.URL+"/v1/jobs", stacktest.Token, `{"type":"echo","queue":"bp"}`)
		return r.status == http.StatusAccepted
	})
}

// Past WARREN_MAX_SUBMITS_IN_FLIGHT submits at once, the next submit, single
// or batch, answers 503 with Retry-After at once and stores nothing; once
// the ones in flight are answered, submits are taken again.
func TestSubmitsBeyondTheInFlightLimitAreShed(t *testing.T) {
	t.Parallel()
	committed := make(chan struct{}, 2)
	release := make(chan struct{})
	s := stacktest.New(t, stacktest.Options{Shards: 1, Server: func(c *server.Config) {
		c.MaxSubmitsInFlight = 2
		c.Failpoint = func(name string) {
			if name == "after-commit" {
				committed <- struct{}{}
				<-release // held in flight, committed, until the test lets go
			}
		}
	}})
	held := make(chan response, 2)
	for range 2 {
		go func() {
			r, err := send("POST", s.URL+"/v1/jobs", stacktest.Token, `{"type":"echo","queue":"shed"}`, nil)
			if err != nil {
				r.body = []byte(err.Error()) // status 0: a failure
			}
			held <- r
		}()
	}
	for range 2 {
		<-committed
	}
	single := call(t, "POST", s.URL+"/v1/jobs", stacktest.Token, `{"type":"echo","queue":"shed"}`)
	batch := call(t, "POST", s.URL+"/v1/jobs/batch", stacktest.Token, `{"jobs":[{"type":"echo","queue":"shed"}]}`)
	for what, r := range map[string]response{"single": single, "batch": batch} {
		unavailableProblem(t, what+" submit past the limit", r, "WARREN_MAX_SUBMITS_IN_FLIGHT")
	}
	close(release)
	for range 2 {
		if r := <-held; r.status != http.StatusAccepted {
			t.Fatalf("a submit held in flight: %d %s", r.status, r.body)
		}
	}
	if r := call(t, "POST", s.URL+"/v1/jobs", stacktest.Token, `{"type":"echo","queue":"shed"}`); r.status != http.StatusAccepted {
		t.Fatalf("a submit after the others were answered: %d %s", r.status, r.body)
	}
	listed, _, err := s.Store.List(context.Background(), store.ListQuery{Tenant: "default", Limit: 50})
	if err != nil || len(listed) != 3 {
		t.Fatalf("%d jobs stored (%v), want the 3 accepted", len(listed), err)
	}
	if v, _ := metric(t, s, "warren_api_submits_shed_total", nil); v != 2 {
		t.Errorf("submits shed: %v, want 2", v)
	}
}
