package worker_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"go.uber.org/goleak"

	"github.com/warrenhq/warren/pkg/broker"
	"github.com/warrenhq/warren/pkg/cache"
	"github.com/warrenhq/warren/pkg/client"
	"github.com/warrenhq/warren/pkg/job"
	"github.com/warrenhq/warren/pkg/stacktest"
	"github.com/warrenhq/warren/pkg/worker"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// Keep-alive connections of the API client and the api's test server.
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
	)
}

// db opens the job's shard for the reads and writes the REST API does not offer.
func db(t *testing.T, s *stacktest.Stack, id job.ID) *sqlx.DB {
	t.Helper()
	d, err := sqlx.Open("postgres", s.DatabaseURLs[id.Shard()])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	return d
}

// exec runs a statement on the job's shard.
func exec(t *testing.T, s *stacktest.Stack, id job.ID, query string, args ...any) {
	t.Helper()
	if _, err := db(t, s, id).Exec(query, append([]any{id}, args...)...); err != nil {
		t.Fatal(err)
	}
}

// requeue does what the scheduler does for a retrying job that is due:
// queued again, and its message published.
func requeue(t *testing.T, s *stacktest.Stack, j *job.Job) {
	t.Helper()
	exec(t, s, j.ID, `UPDATE jobs SET state = 'queued' WHERE id = $1 AND state = 'retrying'`)
	publish(t, s, j)
}

func publish(t *testing.T, s *stacktest.Stack, j *job.Job) {
	t.Helper()
	body, _ := json.Marshal(job.Message{ID: j.ID, Type: j.Type})
	must(t, s.Broker.Publish(context.Background(), broker.Message{Queue: j.Queue, Priority: uint8(j.Priority), MessageID: j.ID.String(), Body: body}))
}

// How a test cancels a running job.
type cancelBy int

const (
	byAPI      cancelBy = iota // POST /v1/jobs/{id}/cancel
	byEvent                    // what the API does: the row, then the Redis event
	byRowAlone                 // as if Redis were down: the row only
)

func cancel(t *testing.T, s *stacktest.Stack, j *job.Job, by cancelBy) {
	t.Helper()
	if by == byAPI {
		c, err := s.Client.Cancel(context.Background(), j.ID.String())
		if err != nil || c.State != job.Cancelled {
			t.Fatalf("cancel: %+v, %v", c, err)
		}
		return
	}
	exec(t, s, j.ID, `UPDATE jobs SET state = 'cancelled', finished_at = now() WHERE id = $1 AND state = 'running'`)
	if by == byEvent {
		must(t, s.Cache.Publish(context.Background(), cache.Cancel, j.ID))
	}
}

func get(t *testing.T, s *stacktest.Stack, j *job.Job) *job.Job {
	t.Helper()
	got, err := s.Store.Get(context.Background(), "default", j.ID)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// within fails the test unless ch delivers within d.
func within[T any](t *testing.T, d time.Duration, what string, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(d):
		t.Fatalf("not within %v: %s", d, what)
		panic("unreachable")
	}
}

func near(t *testing.T, what string, got *time.Time, want time.Time, slack time.Duration) {
	t.Helper()
	if got == nil || got.Before(want.Add(-slack)) || got.After(want.Add(slack)) {
		t.Errorf("%s: got %v, want %v ± %v", what, got, want, slack)
	}
}

func TestSuccessIsCachedAndAnnounced(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{Shards: 1})
	w := newWorker(t, s, nil)
	must(t, worker.Handle(w, "ok", func(ctx context.Context, j *worker.Job[args]) (int, error) { return j.Args.N + 1, nil }))
	l := s.Cache.Listen(context.Background(), cache.Done, nil)
	defer l.Close()
	j := submit(t, s, job.Request{Type: "ok", Payload: json.RawMessage(`{"n":1}`)})
	woken, stop := l.Wait(j.ID)
	defer stop()
	stacktest.StartWorker(t, w)
	within(t, 30*time.Second, "done event", woken)
	c, err := s.Cache.GetJob(context.Background(), "default", j.ID)
	if err != nil || c.State != job.Succeeded || string(c.Result) != "2" || c.Attempt != 1 || c.FinishedAt == nil {
		t.Fatalf("cached job %+v, %v", c, err)
	}
}

func TestFailedAttemptRetriesAfterTheTypesBackoff(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{Shards: 1})
	w := newWorker(t, s, nil)
	var attempts []int
	var mu sync.Mutex
	must(t, worker.Handle(w, "flaky", func(ctx context.Context, j *worker.Job[args]) (int, error) {
		mu.Lock()
		attempts = append(attempts, j.Attempt)
		mu.Unlock()
		return 0, fmt.Errorf("attempt %d failed", j.Attempt)
	}, worker.Backoff(func(attempt int) time.Duration { return time.Duration(attempt) * time.Hour })))
	stacktest.StartWorker(t, w)
	j := submit(t, s, job.Request{Type: "flaky", MaxAttempts: ptr(2)})
	r := waitState(t, s, j, job.Retrying)
	near(t, "retry time after attempt 1", r.ScheduledAt, time.Now().Add(time.Hour), time.Minute)
	if r.Attempt != 1 || r.Error == nil || *r.Error != "attempt 1 failed" || r.FinishedAt != nil {
		t.Fatalf("after attempt 1: %+v", r)
	}
	requeue(t, s, j)
	d := wait(t, s, j)
	if d.State != job.Dead || d.Attempt != 2 || *d.Error != "attempt 2 failed" || d.FinishedAt == nil {
		t.Fatalf("after the last attempt: %+v", d)
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(attempts, []int{1, 2}) {
		t.Fatalf("attempts seen by the handler: %v", attempts)
	}
}

func TestMaxAttemptsOptionCapsTheJobs(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{Shards: 1})
	w := newWorker(t, s, nil)
	seen := make(chan int, 10)
	must(t, worker.Handle(w, "capped", func(ctx context.Context, j *worker.Job[args]) (int, error) {
		seen <- j.MaxAttempts
		return 0, errors.New("nope")
	}, worker.MaxAttempts(2)))
	stacktest.StartWorker(t, w)
	j := submit(t, s, job.Request{Type: "capped", MaxAttempts: ptr(10)})
	waitState(t, s, j, job.Retrying)
	requeue(t, s, j)
	d := wait(t, s, j)
	if d.State != job.Dead || d.Attempt != 2 {
		t.Fatalf("job with max_attempts 10 under MaxAttempts(2): %+v", d)
	}
	if m := <-seen; m != 2 {
		t.Fatalf("handler saw MaxAttempts %d, want the cap 2", m)
	}
}

func TestSnoozeReschedulesWithoutUsingAnAttempt(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{Shards: 1})
	w := newWorker(t, s, nil)
	must(t, worker.Handle(w, "later", func(ctx context.Context, j *worker.Job[args]) (int, error) {
		return 0, worker.Snooze(time.Hour)
	}))
	stacktest.StartWorker(t, w)
	j := submit(t, s, job.Request{Type: "later", MaxAttempts: ptr(1)})
	got := waitState(t, s, j, job.Scheduled)
	near(t, "snoozed until", got.ScheduledAt, time.Now().Add(time.Hour), time.Minute)
	if got.Attempt != 0 || got.Error != nil || got.StartedAt != nil {
		t.Fatalf("snoozed job: %+v", got)
	}
}

func TestCancelStopsTheRunningHandler(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		by     cancelBy
		lease  time.Duration
		within time.Duration
		cause  error
	}{
		{"api", byAPI, time.Minute, time.Second, worker.ErrJobCancelled},
		{"event", byEvent, time.Minute, time.Second, worker.ErrJobCancelled},
		// Redis missed it: the lease renewal notices.
		{"lease renewal", byRowAlone, 900 * time.Millisecond, 2 * time.Second, worker.ErrLeaseLost},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := stacktest.New(t, stacktest.Options{Shards: 1})
			w := newWorker(t, s, func(c *worker.Config) { c.Lease = tc.lease })
			started := make(chan struct{})
			type end struct {
				cause    error
				at       time.Time
				progress error
			}
			ended := make(chan end, 1)
			must(t, worker.Handle(w, "long", func(ctx context.Context, j *worker.Job[args]) (string, error) {
				close(started)
				<-ctx.Done()
				ended <- end{cause: context.Cause(ctx), at: time.Now(), progress: j.Progress(context.Background(), "too late")}
				return "finished anyway", nil // refused: the job is cancelled
			}))
			stacktest.StartWorker(t, w)
			j := submit(t, s, job.Request{Type: "long", Timeout: "1m"})
			within(t, 30*time.Second, "handler starts", started)
			at := time.Now()
			cancel(t, s, j, tc.by)
			e := within(t, 10*time.Second, "handler's context cancelled", ended)
			if took := e.at.Sub(at); took > tc.within {
				t.Errorf("handler saw the cancel after %v, want within %v", took, tc.within)
			}
			if !errors.Is(e.cause, tc.cause) {
				t.Errorf("cause %v, want %v", e.cause, tc.cause)
			}
			if !errors.Is(e.progress, worker.ErrJobCancelled) {
				t.Errorf("progress of a cancelled job: %v, want ErrJobCancelled", e.progress)
			}
			// The success the handler returned is refused: cancelled stays cancelled.
			stacktest.Eventually(t, 10*time.Second, "outcome refused", func() bool {
				return strings.Contains(scrape(t, w), `warren_worker_jobs_finished_total{outcome="cancelled",queue="default",type="long"} 1`)
			})
			if got := get(t, s, j); got.State != job.Cancelled || got.Result != nil {
				t.Fatalf("cancelled job after its handler returned: %+v", got)
			}
		})
	}
}

func TestHeartbeatsExtendTheLease(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{Shards: 1})
	const lease = 900 * time.Millisecond
	w := newWorker(t, s, func(c *worker.Config) { c.Lease = lease })
	started, release := make(chan struct{}), make(chan struct{})
	must(t, worker.Handle(w, "long", func(ctx context.Context, j *worker.Job[args]) (string, error) {
		close(started)
		select {
		case <-release:
			return "done", nil
		case <-ctx.Done():
			return "", context.Cause(ctx)
		}
	}))
	stacktest.StartWorker(t, w)
	j := submit(t, s, job.Request{Type: "long"})
	within(t, 30*time.Second, "handler starts", started)
	d := db(t, s, j.ID)
	var first struct {
		LeaseUntil time.Time `db:"lease_until"`
		WorkerID   string    `db:"worker_id"`
	}
	must(t, d.Get(&first, `SELECT lease_until, worker_id FROM jobs WHERE id = $1`, j.ID))
	if first.WorkerID != w.ID() {
		t.Fatalf("worker_id %q, want %q", first.WorkerID, w.ID())
	}
	// The worker acked the message when it claimed the job: RabbitMQ holds
	// no delivery for the running job, so its consumer timeout cannot cut a
	// long job short. (The management API's figures lag: the ack count
	// shows they cover the delivery.)
	stacktest.Eventually(t, 20*time.Second, "no unacked message while the handler runs", func() bool {
		f := figures(t, s, "default")
		return f.MessageStats.Ack >= 1 && f.Unacked == 0 && f.Ready == 0 && f.Consumers >= 1
	})
	if got := get(t, s, j); got.State != job.Running {
		t.Fatalf("job %s while its handler is blocked, want running", got.State)
	}
	// Well past the first lease, the job is still running, its lease renewed.
	stacktest.Eventually(t, 10*time.Second, "lease renewed past the first one", func() bool {
		var row struct {
			LeaseUntil  time.Time  `db:"lease_until"`
			HeartbeatAt *time.Time `db:"heartbeat_at"`
			State       job.State  `db:"state"`
		}
		must(t, d.Get(&row, `SELECT lease_until, heartbeat_at, state FROM jobs WHERE id = $1`, j.ID))
		if row.State != job.Running {
			t.Fatalf("job left running: %s", row.State)
		}
		return row.HeartbeatAt != nil && time.Now().After(first.LeaseUntil.Add(lease)) && row.LeaseUntil.After(time.Now())
	})
	close(release)
	if got := wait(t, s, j); got.State != job.Succeeded || got.Attempt != 1 {
		t.Fatalf("job: %+v", got)
	}
}

func TestProgressIsVisibleWhileRunning(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{Shards: 1})
	w := newWorker(t, s, nil)
	release := make(chan struct{})
	type report struct {
		Done  int `json:"done"`
		Total int `json:"total"`
	}
	must(t, worker.Handle(w, "steps", func(ctx context.Context, j *worker.Job[args]) (int, error) {
		if err := j.Progress(ctx, report{Done: 1, Total: 2}); err != nil {
			return 0, err
		}
		<-release
		return 2, j.Progress(ctx, report{Done: 2, Total: 2})
	}))
	stacktest.StartWorker(t, w)
	j := submit(t, s, job.Request{Type: "steps"})
	stacktest.Eventually(t, 30*time.Second, "progress in GET /v1/jobs/{id}", func() bool {
		got, err := s.Client.Get(context.Background(), j.ID.String())
		must(t, err)
		var p report
		return got.State == job.Running && json.Unmarshal(got.Progress, &p) == nil && p == report{Done: 1, Total: 2}
	})
	close(release)
	d := wait(t, s, j)
	var p report
	if d.State != job.Succeeded || json.Unmarshal(d.Progress, &p) != nil || p.Done != 2 {
		t.Fatalf("finished job keeps its last progress: %+v (%s)", d, d.Progress)
	}
}

func TestProgressOnAHandMadeJobDoesNothing(t *testing.T) {
	t.Parallel()
	j := &worker.Job[args]{ID: "x", Attempt: 1}
	if err := j.Progress(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
}

func TestTypeConcurrencyIsRespected(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{Shards: 2})
	w := newWorker(t, s, func(c *worker.Config) { c.Concurrency = 8 })
	var now, peak atomic.Int32
	must(t, worker.Handle(w, "limited", func(ctx context.Context, j *worker.Job[args]) (int, error) {
		n := now.Add(1)
		defer now.Add(-1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		pause(ctx, 100*time.Millisecond)
		return 0, nil
	}, worker.Concurrency(2)))
	must(t, worker.Handle(w, "free", func(ctx context.Context, j *worker.Job[args]) (int, error) { return 0, nil }))
	stacktest.StartWorker(t, w)
	var limited []*job.Job
	for range 10 {
		limited = append(limited, submit(t, s, job.Request{Type: "limited"}))
	}
	// A free job submitted behind the limited ones is not held up by them.
	free := wait(t, s, submit(t, s, job.Request{Type: "free"}))
	if free.State != job.Succeeded {
		t.Fatalf("free: %+v", free)
	}
	for _, j := range limited {
		if d := wait(t, s, j); d.State != job.Succeeded {
			t.Fatalf("limited: %+v", d)
		}
	}
	if p := peak.Load(); p != 2 {
		t.Fatalf("at most %d limited jobs ran at once, want 2", p)
	}
}

func TestHighPriorityOvertakesABacklog(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{Shards: 1})
	var low []*job.Job
	for range 30 {
		low = append(low, submit(t, s, job.Request{Type: "work", Queue: "prio", Priority: ptr(0)}))
	}
	high := submit(t, s, job.Request{Type: "work", Queue: "prio", Priority: ptr(9)})
	w := newWorker(t, s, func(c *worker.Config) { c.Concurrency = 1; c.Queues = []string{"prio"} })
	var mu sync.Mutex
	var order []string
	must(t, worker.Handle(w, "work", func(ctx context.Context, j *worker.Job[args]) (int, error) {
		mu.Lock()
		order = append(order, j.ID)
		mu.Unlock()
		return j.Priority, nil
	}))
	stacktest.StartWorker(t, w)
	for _, j := range append(low, high) {
		if d := wait(t, s, j); d.State != job.Succeeded {
			t.Fatalf("job %+v", d)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if i := slices.Index(order, high.ID.String()); i < 0 || i > 1 {
		t.Fatalf("the priority-9 job started as number %d of %d, want among the first 2", i+1, len(order))
	}
}

func TestTimeouts(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{Shards: 1})
	w := newWorker(t, s, nil)
	budgets := make(chan time.Duration, 2)
	slow := func(ctx context.Context, j *worker.Job[args]) (int, error) {
		deadline, _ := ctx.Deadline()
		budgets <- time.Until(deadline)
		<-ctx.Done()
		return 0, ctx.Err()
	}
	must(t, worker.Handle(w, "short", slow, worker.Timeout(300*time.Millisecond)))
	must(t, worker.Handle(w, "long", slow, worker.Timeout(time.Hour)))
	stacktest.StartWorker(t, w)

	// The type's timeout is shorter than the job's default of 10m.
	short := waitState(t, s, submit(t, s, job.Request{Type: "short", MaxAttempts: ptr(3)}), job.Retrying)
	if b := <-budgets; b > 300*time.Millisecond {
		t.Errorf("short: handler had %v, want at most 300ms", b)
	}
	if short.Error == nil || !strings.Contains(*short.Error, "timed out after 300ms") {
		t.Errorf("short: %+v", short)
	}
	// The job's timeout is shorter than the type's.
	long := waitState(t, s, submit(t, s, job.Request{Type: "long", Timeout: "1s", MaxAttempts: ptr(3)}), job.Retrying)
	if b := <-budgets; b > time.Second || b < 500*time.Millisecond {
		t.Errorf("long: handler had %v, want about the job's 1s", b)
	}
	if long.Error == nil || !strings.Contains(*long.Error, "timed out after 1s") {
		t.Errorf("long: %+v", long)
	}
}

func TestMiddlewareWrapsEveryJobInOrder(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{Shards: 1})
	w := newWorker(t, s, nil)
	var mu sync.Mutex
	var trace []string
	note := func(s string) {
		mu.Lock()
		trace = append(trace, s)
		mu.Unlock()
	}
	named := func(name string) worker.Middleware {
		return func(next worker.Handler) worker.Handler {
			return worker.WorkFunc(func(ctx context.Context, j *worker.JobInfo) (job.JSON, error) {
				note(name + ">" + j.Type)
				res, err := next.Work(ctx, j)
				note("<" + name)
				return res, err
			})
		}
	}
	w.Use(named("a"), named("b"))
	// Middleware can turn an outcome into another: here a failure into a
	// final one.
	w.Use(func(next worker.Handler) worker.Handler {
		return worker.WorkFunc(func(ctx context.Context, j *worker.JobInfo) (job.JSON, error) {
			res, err := next.Work(ctx, j)
			if err != nil {
				return nil, worker.NoRetry(err)
			}
			return res, nil
		})
	})
	must(t, worker.Handle(w, "t", func(ctx context.Context, j *worker.Job[args]) (int, error) {
		note("handler")
		if j.Args.N < 0 {
			return 0, errors.New("negative")
		}
		return j.Args.N, nil
	}))
	stacktest.StartWorker(t, w)
	if d := wait(t, s, submit(t, s, job.Request{Type: "t", Payload: json.RawMessage(`{"n":7}`)})); d.State != job.Succeeded || string(d.Result) != "7" {
		t.Fatalf("job: %+v", d)
	}
	if d := wait(t, s, submit(t, s, job.Request{Type: "t", Payload: json.RawMessage(`{"n":-1}`)})); d.State != job.Dead || d.Attempt != 1 {
		t.Fatalf("failure made final by middleware: %+v", d)
	}
	mu.Lock()
	defer mu.Unlock()
	want := []string{"a>t", "b>t", "handler", "<b", "<a"}
	if !slices.Equal(trace[:5], want) || !slices.Equal(trace[5:], want) {
		t.Fatalf("trace %v, want %v twice", trace, want)
	}
}

func TestTypeQueuesAreConsumedWithTheConfiguredOnes(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{Shards: 1})
	w := newWorker(t, s, nil) // Config.Queues: default
	must(t, worker.Handle(w, "resize", func(ctx context.Context, j *worker.Job[args]) (string, error) { return j.Queue, nil }, worker.Queues("images", "images.bulk")))
	must(t, worker.Handle(w, "echo", func(ctx context.Context, j *worker.Job[args]) (string, error) { return j.Queue, nil }))
	stacktest.StartWorker(t, w)
	for _, q := range []string{"images", "images.bulk", "default"} {
		if d := wait(t, s, submit(t, s, job.Request{Type: "resize", Queue: q})); d.State != job.Succeeded || string(d.Result) != `"`+q+`"` {
			t.Fatalf("resize on %s: %+v", q, d)
		}
	}
	if d := wait(t, s, submit(t, s, job.Request{Type: "echo"})); d.State != job.Succeeded {
		t.Fatalf("echo: %+v", d)
	}
}

func TestWorkerHeartbeatInRedis(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{Shards: 1})
	w := newWorker(t, s, func(c *worker.Config) { c.Concurrency = 3 })
	must(t, worker.Handle(w, "b", func(ctx context.Context, j *worker.Job[args]) (int, error) { return 0, nil }, worker.Queues("extra")))
	must(t, worker.Handle(w, "a", func(ctx context.Context, j *worker.Job[args]) (int, error) { return 0, nil }))
	stop := stacktest.StartWorker(t, w)
	var info cache.WorkerInfo
	stacktest.Eventually(t, 10*time.Second, "worker listed", func() bool {
		ws, err := s.Cache.Workers(context.Background(), time.Now())
		must(t, err)
		for _, x := range ws {
			if x.ID == w.ID() {
				info = x
				return true
			}
		}
		return false
	})
	if info.Concurrency != 3 || !slices.Equal(info.Types, []string{"a", "b"}) || !slices.Equal(info.Queues, []string{"default", "extra"}) ||
		info.PID == 0 || info.Host == "" || info.StartedAt.IsZero() {
		t.Fatalf("heartbeat %+v", info)
	}
	must(t, stop())
	ws, err := s.Cache.Workers(context.Background(), time.Now())
	must(t, err)
	if len(ws) != 0 {
		t.Fatalf("a stopped worker is still listed: %+v", ws)
	}
}

func TestUndecodableMessageDoesNotStopTheWorker(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{Shards: 1})
	w := newWorker(t, s, func(c *worker.Config) { c.Concurrency = 1 })
	must(t, worker.Handle(w, "ok", func(ctx context.Context, j *worker.Job[args]) (int, error) { return 0, nil }))
	stacktest.StartWorker(t, w)
	must(t, s.Broker.Publish(context.Background(), broker.Message{Queue: "default", MessageID: "junk", Body: []byte("not json")}))
	if d := wait(t, s, submit(t, s, job.Request{Type: "ok"})); d.State != job.Succeeded {
		t.Fatalf("job after the junk: %+v", d)
	}
	stacktest.Eventually(t, 10*time.Second, "queue empty", func() bool {
		ready, _, err := s.Broker.QueueDepth(context.Background(), "default")
		return err == nil && ready == 0
	})
}

func TestShutdownMidJobNothingLostNothingTwice(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{Shards: 2})
	// Two jobs run in the first worker when it is told to stop: one finishes
	// within the grace, one does not and is handed back to the second.
	first := newWorker(t, s, func(c *worker.Config) { c.ShutdownGrace = 500 * time.Millisecond })
	var successes atomic.Int32
	started := make(chan string, 2)
	causes := make(chan error, 2)
	handler := func(ctx context.Context, j *worker.Job[args]) (int, error) {
		started <- j.ID
		if j.Args.N == 0 { // quick: finishes inside the grace
			pause(ctx, 200*time.Millisecond)
			successes.Add(1)
			return 0, nil
		}
		<-ctx.Done()
		causes <- context.Cause(ctx)
		return 0, ctx.Err()
	}
	must(t, worker.Handle(first, "job", handler))
	stop := stacktest.StartWorker(t, first)
	quick := submit(t, s, job.Request{Type: "job", Payload: json.RawMessage(`{"n":0}`)})
	stubborn := submit(t, s, job.Request{Type: "job", Payload: json.RawMessage(`{"n":1}`)})
	within(t, 30*time.Second, "first job starts", started)
	within(t, 30*time.Second, "second job starts", started)
	must(t, stop())
	if c := <-causes; !errors.Is(c, worker.ErrShutdown) {
		t.Fatalf("cause %v, want ErrShutdown", c)
	}
	if q := get(t, s, quick); q.State != job.Succeeded || q.Attempt != 1 {
		t.Fatalf("job inside the grace: %+v", q)
	}
	if h := get(t, s, stubborn); h.State != job.Queued || h.Attempt != 0 || h.Error != nil || h.StartedAt != nil {
		t.Fatalf("handed-back job: %+v", h)
	}
	second := newWorker(t, s, nil)
	var ran atomic.Int32
	must(t, worker.Handle(second, "job", func(ctx context.Context, j *worker.Job[args]) (int, error) {
		ran.Add(1)
		successes.Add(1)
		return j.Args.N, nil
	}))
	stacktest.StartWorker(t, second)
	if d := wait(t, s, stubborn); d.State != job.Succeeded || d.Attempt != 1 || string(d.Result) != "1" {
		t.Fatalf("handed-back job on the second worker: %+v", d)
	}
	// A marker job behind it: once it is done any duplicate message of the
	// two jobs has been consumed too.
	if d := wait(t, s, submit(t, s, job.Request{Type: "job", Payload: json.RawMessage(`{"n":2}`)})); d.State != job.Succeeded {
		t.Fatalf("marker: %+v", d)
	}
	if n := successes.Load(); n != 3 || ran.Load() != 2 {
		t.Fatalf("%d successes (%d on the second worker), want 3 (2): no job lost or run twice", n, ran.Load())
	}
}

func TestMetricsCountOutcomes(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{Shards: 1})
	w := newWorker(t, s, nil)
	must(t, worker.Handle(w, "ok", func(ctx context.Context, j *worker.Job[args]) (int, error) { return 0, nil }))
	must(t, worker.Handle(w, "bad", func(ctx context.Context, j *worker.Job[args]) (int, error) {
		return 0, worker.NoRetry(errors.New("bad"))
	}))
	must(t, worker.Handle(w, "flaky", func(ctx context.Context, j *worker.Job[args]) (int, error) { return 0, errors.New("again") }))
	stacktest.StartWorker(t, w)
	wait(t, s, submit(t, s, job.Request{Type: "ok"}))
	wait(t, s, submit(t, s, job.Request{Type: "bad"}))
	waitState(t, s, submit(t, s, job.Request{Type: "flaky"}), job.Retrying)
	stacktest.Eventually(t, 10*time.Second, "metrics", func() bool {
		m := scrape(t, w)
		for _, want := range []string{
			`warren_worker_jobs_started_total{queue="default",type="ok"} 1`,
			`warren_worker_jobs_finished_total{outcome="succeeded",queue="default",type="ok"} 1`,
			`warren_worker_jobs_finished_total{outcome="dead",queue="default",type="bad"} 1`,
			`warren_worker_jobs_finished_total{outcome="retrying",queue="default",type="flaky"} 1`,
			`warren_worker_job_duration_seconds_count{outcome="succeeded",type="ok"} 1`,
			`warren_worker_jobs_running{type="ok"} 0`,
			`go_goroutines`,
		} {
			if !strings.Contains(m, want) {
				return false
			}
		}
		return true
	})
}

func TestHandleRejectsBadOptions(t *testing.T) {
	t.Parallel()
	w, err := worker.New(worker.Config{DatabaseURLs: []string{"postgres://x/y"}, RabbitMQURL: "amqp://x", RedisURL: "redis://x"})
	must(t, err)
	h := func(context.Context, *worker.Job[args]) (int, error) { return 0, nil }
	for _, o := range []worker.HandlerOption{
		worker.Concurrency(0), worker.Timeout(0), worker.MaxAttempts(0), worker.Backoff(nil), worker.Queues(""),
	} {
		if err := worker.Handle(w, "t", h, o); err == nil {
			t.Errorf("option accepted")
		}
	}
}

func scrape(t *testing.T, w *worker.Worker) string {
	t.Helper()
	srv := httptest.NewServer(w.Metrics())
	defer srv.Close()
	c := srv.Client()
	defer c.CloseIdleConnections()
	resp, err := c.Get(srv.URL)
	must(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	must(t, err)
	return string(b)
}

func pause(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// A worker dedicated to a tenant runs that tenant's jobs and parks the
// others' untouched, for a worker that serves them.
func TestTenantWorkerRunsOnlyItsTenantsJobs(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{Shards: 1})
	other, err := client.New(s.URL, stacktest.OtherToken)
	must(t, err)
	var (
		mu  sync.Mutex
		ran = map[string]string{} // job id → worker
	)
	handler := func(name string) func(context.Context, *worker.Job[args]) (int, error) {
		return func(ctx context.Context, j *worker.Job[args]) (int, error) {
			mu.Lock()
			defer mu.Unlock()
			ran[j.ID] = name
			return 0, nil
		}
	}
	dedicated := newWorker(t, s, func(c *worker.Config) { c.Tenants = []string{"other"} })
	must(t, worker.Handle(dedicated, "t", handler("dedicated")))
	stacktest.StartWorker(t, dedicated)

	mine := submit(t, s, job.Request{Type: "t"})
	theirs, err := other.Submit(context.Background(), job.Request{Type: "t"})
	must(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if done, err := other.Wait(ctx, theirs.ID.String()); err != nil || done.State != job.Succeeded {
		t.Fatalf("the dedicated tenant's job: %+v, %v", done, err)
	}
	stacktest.Eventually(t, 10*time.Second, "the other tenant's message parked", func() bool {
		m := scrape(t, dedicated)
		return strings.Contains(m, "\nwarren_worker_parked_messages_total ") && !strings.Contains(m, "\nwarren_worker_parked_messages_total 0\n")
	})
	if j := get(t, s, mine); j.State != job.Queued || j.Attempt != 0 {
		t.Fatalf("job of a tenant the worker does not serve: %s, attempt %d", j.State, j.Attempt)
	}

	shared := newWorker(t, s, nil)
	must(t, worker.Handle(shared, "t", handler("shared")))
	stacktest.StartWorker(t, shared)
	if done := wait(t, s, mine); done.State != job.Succeeded {
		t.Fatalf("after a shared worker started: %s", done.State)
	}
	mu.Lock()
	defer mu.Unlock()
	if ran[theirs.ID.String()] != "dedicated" || ran[mine.ID.String()] != "shared" {
		t.Errorf("ran %v", ran)
	}
}
