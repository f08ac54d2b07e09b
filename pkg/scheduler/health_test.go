package scheduler_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/warrenhq/warren/pkg/broker"
	"github.com/warrenhq/warren/pkg/job"
	"github.com/warrenhq/warren/pkg/scheduler"
)

func TestQueueDepthMetricsAndHealth(t *testing.T) {
	t.Parallel()
	b := setup(t, 2)
	br := b.broker("")
	// Two jobs waiting in RabbitMQ on "default", one on "mail" never
	// declared there (its jobs are all delayed).
	a, c := newJob(0, job.Queued, time.Now()), newJob(1, job.Queued, time.Now())
	m := newJob(1, job.Scheduled, time.Now().Add(time.Hour))
	m.Queue = "mail"
	b.insert(a, c, m)
	for _, j := range []*job.Job{a, c} {
		if err := br.Publish(context.Background(), broker.Message{Queue: "default", MessageID: j.ID.String(), Body: []byte(`{}`)}); err != nil {
			t.Fatal(err)
		}
	}
	// Published, so marked as the api marks its jobs: the relay leaves them.
	if err := b.st.MarkPublished(context.Background(), []job.ID{a.ID, c.ID}); err != nil {
		t.Fatal(err)
	}
	s, _ := b.start(scheduler.Config{Tick: 50 * time.Millisecond, DepthEvery: 50 * time.Millisecond}, b.st, br)
	eventually(t, 10*time.Second, "queue depth gauge", func() bool {
		return counter(t, s.Registry(), "warren_scheduler_queue_ready_messages", "queue", "default") == 2
	})
	if v := counter(t, s.Registry(), "warren_scheduler_queue_consumers", "queue", "default"); v != 0 {
		t.Errorf("consumers = %v", v)
	}
	if v := counter(t, s.Registry(), "warren_scheduler_queue_ready_messages", "queue", "mail"); v != -1 {
		t.Errorf("a queue unknown to RabbitMQ has a depth gauge: %v", v)
	}

	// Every duty's first round is over before /metrics is read: a round's
	// duration is observed when it ends.
	eventually(t, 10*time.Second, "every duty to finish a round", func() bool {
		for _, d := range s.Health().Duties {
			if d.LastFinished == nil {
				return false
			}
		}
		return true
	})
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	body := get(t, srv.URL+"/metrics", http.StatusOK)
	for _, name := range []string{
		"warren_scheduler_jobs_dispatched_total", "warren_scheduler_dispatch_batches_total",
		"warren_scheduler_dispatch_errors_total", "warren_scheduler_callback_attempts_total",
		"warren_scheduler_callbacks_delivered_total", "warren_scheduler_callbacks_failed_total",
		`warren_scheduler_tick_duration_seconds_count{duty="dispatch"}`, `warren_scheduler_queue_ready_messages{queue="default"} 2`,
		"go_goroutines",
	} {
		if !strings.Contains(body, name) {
			t.Errorf("/metrics lacks %s", name)
		}
	}
	var h scheduler.Health
	if err := json.Unmarshal([]byte(get(t, srv.URL+"/healthz", http.StatusOK)), &h); err != nil {
		t.Fatal(err)
	}
	names := map[string]int{}
	for _, d := range h.Duties {
		names[d.Duty]++
	}
	if !h.OK || names["dispatch"] != 2 || names["callbacks"] != 2 || names["queue_depth"] != 1 || names["alive"] != 1 {
		t.Errorf("/healthz: %+v", h)
	}
}

func get(t *testing.T, url string, status int) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != status {
		t.Fatalf("GET %s: %s: %s", url, resp.Status, b)
	}
	return string(b)
}
