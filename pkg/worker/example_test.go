package worker_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"math/rand/v2"
	"os"
	"time"

	"github.com/warrenhq/warren/pkg/job"
	"github.com/warrenhq/warren/pkg/stacktest"
	"github.com/warrenhq/warren/pkg/worker"
)

// A worker program: register a typed handler, run, and see a submitted job
// come back with the handler's result.
func Example() {
	// stacktest stands in for your Warren deployment: an api and its services.
	stack, stop, err := stacktest.Start(stacktest.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer stop()

	type Greeting struct {
		Name string `json:"name"`
	}
	w, err := worker.New(stack.WorkerConfig()) // URLs of Postgres, RabbitMQ, Redis
	if err != nil {
		log.Fatal(err)
	}
	err = worker.Handle(w, "greet", func(ctx context.Context, j *worker.Job[Greeting]) (string, error) {
		if j.Args.Name == "" {
			return "", worker.NoRetry(errors.New("name is required"))
		}
		return "hello, " + j.Args.Name, nil
	})
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- w.Run(ctx) }()

	j, err := stack.Client.Submit(ctx, job.Request{Type: "greet", Payload: json.RawMessage(`{"name":"Ada"}`)})
	if err != nil {
		log.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	defer wcancel()
	j, err = stack.Client.Wait(wctx, j.ID.String())
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(j.State, string(j.Result))

	cancel() // as SIGTERM would: stop taking jobs, finish running ones
	if err := <-done; err != nil {
		log.Fatal(err)
	}
	// Output: succeeded "hello, Ada"
}

// Per-type options: the queues a type is consumed from, how many of its
// jobs run at once, their deadline, attempts and backoff.
func ExampleHandle() {
	stack, stop, err := stacktest.Start(stacktest.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer stop()
	w, err := worker.New(stack.WorkerConfig())
	if err != nil {
		log.Fatal(err)
	}
	type Resize struct {
		ImageID int64 `json:"image_id"`
		Width   int   `json:"width"`
	}
	err = worker.Handle(w, "image.resize", func(ctx context.Context, j *worker.Job[Resize]) (map[string]any, error) {
		if err := j.Progress(ctx, map[string]int{"percent": 50}); err != nil {
			return nil, err // cancelled meanwhile
		}
		return map[string]any{"image_id": j.Args.ImageID, "width": j.Args.Width}, nil
	},
		worker.Queues("images"),     // consumed from "images" as well as Config.Queues
		worker.Concurrency(2),       // at most 2 resizes at once in this process
		worker.Timeout(time.Minute), // per attempt (or the job's timeout, if shorter)
		worker.MaxAttempts(3),       // dead after the third failed attempt
		worker.Backoff(func(attempt int) time.Duration { return time.Duration(attempt) * 10 * time.Second }),
	)
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- w.Run(ctx) }()

	j, err := stack.Client.Submit(ctx, job.Request{Type: "image.resize", Queue: "images", Payload: json.RawMessage(`{"image_id":7,"width":640}`)})
	if err != nil {
		log.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	defer wcancel()
	if j, err = stack.Client.Wait(wctx, j.ID.String()); err != nil {
		log.Fatal(err)
	}
	var thumb struct {
		ImageID int64 `json:"image_id"`
		Width   int   `json:"width"`
	}
	var progress struct {
		Percent int `json:"percent"`
	}
	if err := errors.Join(json.Unmarshal(j.Result, &thumb), json.Unmarshal(j.Progress, &progress)); err != nil {
		log.Fatal(err)
	}
	fmt.Println(j.State, thumb.ImageID, thumb.Width, progress.Percent)
	cancel()
	if err := <-done; err != nil {
		log.Fatal(err)
	}
	// Output: succeeded 7 640 50
}

// Middleware wraps every job's handler, as net/http middleware wraps an
// http.Handler: here, a log line before and after each job.
func ExampleWorker_Use() {
	stack, stop, err := stacktest.Start(stacktest.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer stop()
	w, err := worker.New(stack.WorkerConfig())
	if err != nil {
		log.Fatal(err)
	}
	// Without the time, so that the output is always the same.
	logger := slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	}))
	logging := func(next worker.Handler) worker.Handler {
		return worker.WorkFunc(func(ctx context.Context, j *worker.JobInfo) (job.JSON, error) {
			logger.Info("job started", "type", j.Type, "attempt", j.Attempt)
			res, err := next.Work(ctx, j)
			logger.Info("job ended", "type", j.Type, "ok", err == nil)
			return res, err
		})
	}
	w.Use(logging)
	err = worker.Handle(w, "greet", func(ctx context.Context, j *worker.Job[string]) (string, error) {
		return "hello, " + j.Args, nil
	})
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- w.Run(ctx) }()

	j, err := stack.Client.Submit(ctx, job.Request{Type: "greet", Payload: json.RawMessage(`"Grace"`)})
	if err != nil {
		log.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	defer wcancel()
	if _, err = stack.Client.Wait(wctx, j.ID.String()); err != nil {
		log.Fatal(err)
	}
	cancel()
	if err := <-done; err != nil {
		log.Fatal(err)
	}
	// Output:
	// level=INFO msg="job started" type=greet attempt=1
	// level=INFO msg="job ended" type=greet ok=true
}

// The handler's error decides what happens next.
func ExampleNoRetry() {
	err := fmt.Errorf("charge card: %w", worker.NoRetry(errors.New("card declined")))
	var nr *worker.NoRetryError
	fmt.Println(errors.As(err, &nr), nr.Err)
	// Output: true card declined
}

func ExampleSnooze() {
	err := worker.Snooze(30 * time.Second)
	var s *worker.SnoozeError
	fmt.Println(errors.As(err, &s), s.Delay)
	// Output: true 30s
}

// A backoff with bounds of your own, for the Backoff option of Handle:
// after attempt n failed, a random delay up to 500ms·2^(n−1), at most 10s.
// A seeded source makes the delays reproducible; pass nil in production.
func ExampleExponentialBackoff() {
	backoff := worker.ExponentialBackoff(500*time.Millisecond, 10*time.Second, rand.NewPCG(1, 2))
	// Register it as: worker.Handle(w, "image.resize", resize, worker.Backoff(backoff))
	for attempt := 1; attempt <= 7; attempt++ {
		fmt.Println(attempt, backoff(attempt).Round(time.Millisecond))
	}
	// Output:
	// 1 385ms
	// 2 616ms
	// 3 1.569s
	// 4 3.186s
	// 5 1.874s
	// 6 412ms
	// 7 4.999s
}
