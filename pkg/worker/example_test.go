package worker_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
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
