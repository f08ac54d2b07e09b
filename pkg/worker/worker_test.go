package worker_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warrenhq/warren/pkg/broker"
	"github.com/warrenhq/warren/pkg/job"
	"github.com/warrenhq/warren/pkg/stacktest"
	"github.com/warrenhq/warren/pkg/worker"
)

type args struct {
	N int `json:"n"`
}

func newWorker(t *testing.T, s *stacktest.Stack, tweak func(*worker.Config)) *worker.Worker {
	t.Helper()
	cfg := s.WorkerConfig()
	if tweak != nil {
		tweak(&cfg)
	}
	w, err := worker.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func submit(t *testing.T, s *stacktest.Stack, req job.Request) *job.Job {
	t.Helper()
	j, err := s.Client.Submit(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	return j
}

func wait(t *testing.T, s *stacktest.Stack, j *job.Job) *job.Job {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done, err := s.Client.Wait(ctx, j.ID.String())
	if err != nil {
		t.Fatal(err)
	}
	return done
}

// waitState polls Postgres until the job is in the state.
func waitState(t *testing.T, s *stacktest.Stack, j *job.Job, st job.State) *job.Job {
	t.Helper()
	var got *job.Job
	stacktest.Eventually(t, 30*time.Second, "job "+j.ID.String()+" reaches "+string(st), func() bool {
		var err error
		got, err = s.Store.Get(context.Background(), "default", j.ID)
		return err == nil && got.State == st
	})
	return got
}

func TestHandleTwiceIsAnError(t *testing.T) {
	t.Parallel()
	w, err := worker.New(worker.Config{DatabaseURLs: []string{"postgres://x/y"}, RabbitMQURL: "amqp://x", RedisURL: "redis://x"})
	if err != nil {
		t.Fatal(err)
	}
	h := func(context.Context, *worker.Job[args]) (int, error) { return 0, nil }
	if err := worker.Handle(w, "t", h); err != nil {
		t.Fatal(err)
	}
	if err := worker.Handle(w, "t", h); !errors.Is(err, worker.ErrDuplicateType) {
		t.Fatalf("second Handle: got %v, want ErrDuplicateType", err)
	}
}

func TestNewNeedsURLs(t *testing.T) {
	t.Parallel()
	if _, err := worker.New(worker.Config{}); err == nil || !strings.Contains(err.Error(), "DatabaseURLs") {
		t.Fatalf("got %v", err)
	}
}

func TestTypedHandlerSucceeds(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{})
	w := newWorker(t, s, nil)
	if err := worker.Handle(w, "double", func(ctx context.Context, j *worker.Job[args]) (map[string]int, error) {
		if _, ok := ctx.Deadline(); !ok {
			return nil, errors.New("no deadline on the handler's context")
		}
		return map[string]int{"n": j.Args.N * 2, "attempt": j.Attempt}, nil
	}); err != nil {
		t.Fatal(err)
	}
	stacktest.StartWorker(t, w)
	done := wait(t, s, submit(t, s, job.Request{Type: "double", Payload: json.RawMessage(`{"n":21}`)}))
	var res map[string]int
	if err := json.Unmarshal(done.Result, &res); err != nil || done.State != job.Succeeded || res["n"] != 42 || res["attempt"] != 1 {
		t.Fatalf("got %s %s (error %v)", done.State, done.Result, done.Error)
	}
}

func TestFailuresRetryThenDie(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{Shards: 1})
	w := newWorker(t, s, nil)
	var calls atomic.Int32
	must(t, worker.Handle(w, "flaky", func(ctx context.Context, j *worker.Job[args]) (int, error) {
		calls.Add(1)
		return 0, errors.New("flaky failure")
	}))
	must(t, worker.Handle(w, "hopeless", func(ctx context.Context, j *worker.Job[args]) (int, error) {
		return 0, worker.NoRetry(errors.New("bad input"))
	}))
	must(t, worker.Handle(w, "panics", func(ctx context.Context, j *worker.Job[args]) (int, error) {
		panic("handler bug")
	}))
	must(t, worker.Handle(w, "slow", func(ctx context.Context, j *worker.Job[args]) (int, error) {
		<-ctx.Done() // runs into its timeout
		return 0, ctx.Err()
	}))
	stacktest.StartWorker(t, w)

	flaky := submit(t, s, job.Request{Type: "flaky", MaxAttempts: ptr(3)})
	hopeless := submit(t, s, job.Request{Type: "hopeless"})
	panics := submit(t, s, job.Request{Type: "panics", MaxAttempts: ptr(1)})
	slow := submit(t, s, job.Request{Type: "slow", Timeout: "1s", MaxAttempts: ptr(2)})

	f := waitState(t, s, flaky, job.Retrying)
	if f.Attempt != 1 || f.Error == nil || *f.Error != "flaky failure" || f.ScheduledAt == nil || f.ScheduledAt.Before(f.CreatedAt) {
		t.Errorf("failed attempt: %+v", f)
	}
	h := wait(t, s, hopeless)
	if h.State != job.Dead || h.Attempt != 1 || h.Error == nil || !strings.Contains(*h.Error, "bad input") {
		t.Errorf("NoRetry: %+v", h)
	}
	p := wait(t, s, panics)
	if p.State != job.Dead || p.Error == nil || !strings.Contains(*p.Error, "handler panicked: handler bug") {
		t.Errorf("panic: %+v", p)
	}
	sl := waitState(t, s, slow, job.Retrying)
	if sl.Error == nil || !strings.Contains(*sl.Error, "deadline exceeded") {
		t.Errorf("timeout: %+v", sl)
	}
	// The worker survived the panic: it still runs jobs.
	if after := wait(t, s, submit(t, s, job.Request{Type: "hopeless"})); after.State != job.Dead {
		t.Errorf("job after the panic: %+v", after)
	}
	if calls.Load() != 1 {
		t.Errorf("flaky ran %d times before its backoff, want 1", calls.Load())
	}
}

func TestBadPayloadIsNotRetried(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{Shards: 1})
	w := newWorker(t, s, nil)
	must(t, worker.Handle(w, "typed", func(ctx context.Context, j *worker.Job[args]) (int, error) { return j.Args.N, nil }))
	stacktest.StartWorker(t, w)
	d := wait(t, s, submit(t, s, job.Request{Type: "typed", Payload: json.RawMessage(`{"n":"not a number"}`)}))
	if d.State != job.Dead || d.Error == nil || !strings.Contains(*d.Error, "decode payload") {
		t.Fatalf("got %+v", d)
	}
}

func TestResultTooLargeFails(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{Shards: 1})
	w := newWorker(t, s, func(c *worker.Config) { c.MaxResultBytes = 100 })
	must(t, worker.Handle(w, "big", func(ctx context.Context, j *worker.Job[args]) (string, error) {
		return strings.Repeat("x", 200), nil
	}))
	stacktest.StartWorker(t, w)
	d := wait(t, s, submit(t, s, job.Request{Type: "big"}))
	if d.State != job.Dead || d.Error == nil || !strings.Contains(*d.Error, "exceeds the limit of 100") {
		t.Fatalf("got %+v", d)
	}
}

func TestUnhandledTypeWaitsAndIsNeverDropped(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{Shards: 1})
	echoOnly := newWorker(t, s, nil)
	must(t, worker.Handle(echoOnly, "echo", func(ctx context.Context, j *worker.Job[json.RawMessage]) (json.RawMessage, error) {
		return j.Args, nil
	}))
	stopEcho := stacktest.StartWorker(t, echoOnly)
	odd := submit(t, s, job.Request{Type: "rare.type", Payload: json.RawMessage(`{"n":1}`)})
	// A job the running worker can handle goes through meanwhile, so the
	// worker has had the rare job's message in hand too.
	if e := wait(t, s, submit(t, s, job.Request{Type: "echo"})); e.State != job.Succeeded {
		t.Fatalf("echo: %+v", e)
	}
	got, err := s.Store.Get(context.Background(), "default", odd.ID)
	if err != nil || got.State != job.Queued || got.Attempt != 0 {
		t.Fatalf("unhandled job: %+v, %v; want visibly queued", got, err)
	}
	must(t, stopEcho())
	// A worker that knows the type arrives later and runs it.
	rare := newWorker(t, s, nil)
	must(t, worker.Handle(rare, "rare.type", func(ctx context.Context, j *worker.Job[args]) (int, error) { return j.Args.N, nil }))
	stacktest.StartWorker(t, rare)
	if d := wait(t, s, odd); d.State != job.Succeeded || string(d.Result) != "1" {
		t.Fatalf("rare job: %+v", d)
	}
}

func TestRedeliveredMessageOfFinishedJobDoesNotRun(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{Shards: 1})
	w := newWorker(t, s, nil)
	var calls atomic.Int32
	must(t, worker.Handle(w, "count", func(ctx context.Context, j *worker.Job[args]) (int, error) {
		return int(calls.Add(1)), nil
	}))
	stacktest.StartWorker(t, w)
	j := wait(t, s, submit(t, s, job.Request{Type: "count"}))
	if j.State != job.Succeeded {
		t.Fatalf("got %+v", j)
	}
	// Publish the job's message twice more, as a redelivery would.
	body, _ := json.Marshal(job.Message{ID: j.ID, Type: "count"})
	msg := broker.Message{Queue: "default", MessageID: j.ID.String(), Body: body}
	must(t, s.Broker.Publish(context.Background(), msg, msg))
	// A marker job published after the duplicates runs only once they are consumed.
	marker := wait(t, s, submit(t, s, job.Request{Type: "count"}))
	if marker.State != job.Succeeded {
		t.Fatalf("marker: %+v", marker)
	}
	if n := calls.Load(); n != 2 {
		t.Fatalf("handler ran %d times for 2 jobs and 2 duplicate messages, want 2", n)
	}
	again, err := s.Store.Get(context.Background(), "default", j.ID)
	if err != nil || again.Attempt != 1 || string(again.Result) != "1" {
		t.Fatalf("finished job changed: %+v", again)
	}
}

func TestGracefulShutdownFinishesRunningJob(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{Shards: 1})
	w := newWorker(t, s, func(c *worker.Config) { c.ShutdownGrace = 20 * time.Second })
	started := make(chan struct{})
	release := make(chan struct{})
	must(t, worker.Handle(w, "long", func(ctx context.Context, j *worker.Job[args]) (string, error) {
		close(started)
		select {
		case <-release:
			return "finished", nil
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}))
	stop := stacktest.StartWorker(t, w)
	j := submit(t, s, job.Request{Type: "long"})
	<-started
	stopped := make(chan error, 1)
	go func() { stopped <- stop() }()
	// Shutdown has begun; the job is still running and must be allowed to finish.
	select {
	case err := <-stopped:
		t.Fatalf("Run returned before its running job finished: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	close(release)
	if err := <-stopped; err != nil {
		t.Fatalf("Run: %v", err)
	}
	got, err := s.Store.Get(context.Background(), "default", j.ID)
	if err != nil || got.State != job.Succeeded || string(got.Result) != `"finished"` {
		t.Fatalf("job after graceful shutdown: %+v, %v", got, err)
	}
}

func TestShutdownHandsBackJobsPastTheGrace(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{Shards: 1})
	w := newWorker(t, s, func(c *worker.Config) { c.ShutdownGrace = 100 * time.Millisecond })
	started := make(chan struct{}, 1)
	must(t, worker.Handle(w, "stubborn", func(ctx context.Context, j *worker.Job[args]) (string, error) {
		started <- struct{}{}
		<-ctx.Done()
		return "", ctx.Err()
	}))
	stop := stacktest.StartWorker(t, w)
	j := submit(t, s, job.Request{Type: "stubborn"})
	<-started
	must(t, stop())
	got, err := s.Store.Get(context.Background(), "default", j.ID)
	if err != nil || got.State != job.Queued || got.Attempt != 0 || got.Error != nil {
		t.Fatalf("handed-back job: %+v, %v; want queued with no attempt counted", got, err)
	}
	// Another worker picks it up from the queue.
	next := newWorker(t, s, nil)
	must(t, worker.Handle(next, "stubborn", func(ctx context.Context, j *worker.Job[args]) (string, error) { return "done", nil }))
	stacktest.StartWorker(t, next)
	if d := wait(t, s, j); d.State != job.Succeeded || d.Attempt != 1 {
		t.Fatalf("after hand-back: %+v", d)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func ptr[T any](v T) *T { return &v }
