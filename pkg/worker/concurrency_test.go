package worker_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warrenhq/warren/pkg/client"
	"github.com/warrenhq/warren/pkg/job"
	"github.com/warrenhq/warren/pkg/servicetest"
	"github.com/warrenhq/warren/pkg/stacktest"
	"github.com/warrenhq/warren/pkg/worker"
)

// Config.Concurrency caps the handlers running at once in the process, all
// types together, however many jobs the worker has taken from RabbitMQ.
func TestConcurrencyCapsTheHandlersOfEveryType(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{Shards: 2})
	const limit, jobs = 3, 12
	// A prefetch above the backlog: every message reaches the worker, so
	// only the cap keeps jobs waiting.
	w := newWorker(t, s, func(c *worker.Config) { c.Concurrency = limit; c.Prefetch = 2 * jobs })
	var now, peak atomic.Int32
	release := make(chan struct{})
	blocking := func(ctx context.Context, j *worker.Job[args]) (int, error) {
		n := now.Add(1)
		defer now.Add(-1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		select {
		case <-release:
			return j.Attempt, nil
		case <-ctx.Done():
			return 0, context.Cause(ctx)
		}
	}
	must(t, worker.Handle(w, "a", blocking))
	must(t, worker.Handle(w, "b", blocking))
	var all []*job.Job
	for i := range jobs {
		all = append(all, submit(t, s, job.Request{Type: []string{"a", "b"}[i%2]}))
	}
	stacktest.StartWorker(t, w)

	// Every message has left the queue for the worker (RabbitMQ's ready
	// count is exact), yet only `limit` handlers run and only `limit` jobs
	// are claimed.
	ctx := context.Background()
	stacktest.Eventually(t, 30*time.Second, "the backlog delivered and the cap reached", func() bool {
		ready, _, err := s.Broker.QueueDepth(ctx, "default")
		must(t, err)
		return ready == 0 && now.Load() == limit
	})
	running, err := s.Client.List(ctx, client.ListOptions{State: job.Running, Limit: 100})
	must(t, err)
	if len(running.Jobs) != limit {
		t.Fatalf("%d jobs running in Postgres, want %d", len(running.Jobs), limit)
	}
	if p := peak.Load(); p != limit {
		t.Fatalf("%d handlers ran at once before any finished, want %d", p, limit)
	}
	close(release)
	for _, j := range all {
		if d := wait(t, s, j); d.State != job.Succeeded {
			t.Fatalf("job %+v", d)
		}
	}
	if p := peak.Load(); p != limit {
		t.Fatalf("at most %d handlers ran at once, want exactly %d", p, limit)
	}
}

// queueFigures is the RabbitMQ management API's view of the job queue of
// the stack's Warren queue: messages ready, unacknowledged, acked so far.
// Its figures lag the queue by a few seconds.
type queueFigures struct {
	Ready        int `json:"messages_ready"`
	Unacked      int `json:"messages_unacknowledged"`
	Consumers    int `json:"consumers"`
	MessageStats struct {
		Ack int `json:"ack"`
	} `json:"message_stats"`
}

func figures(t *testing.T, s *stacktest.Stack, queue string) queueFigures {
	t.Helper()
	base := strings.TrimSuffix(servicetest.URL(t, servicetest.ManagmentVar), "/")
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(base + "/api/queues/%2F/" + url.PathEscape(s.Namespace+".q."+queue))
	if err != nil {
		t.Fatalf("management API: %v", err)
	}
	defer resp.Body.Close()
	var f queueFigures
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("management API: %s", resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&f); err != nil {
		t.Fatalf("management API: %v", err)
	}
	c.CloseIdleConnections()
	return f
}
