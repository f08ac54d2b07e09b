package client_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"time"

	"github.com/warrenhq/warren/pkg/builtin"
	"github.com/warrenhq/warren/pkg/client"
	"github.com/warrenhq/warren/pkg/job"
	"github.com/warrenhq/warren/pkg/stacktest"
	"github.com/warrenhq/warren/pkg/worker"
)

// Submit a job and wait for its result.
func Example() {
	// stacktest stands in for a running Warren (api, workers and services).
	stack, stop, err := stacktest.Start(stacktest.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer stop()
	defer runWorkers(stack)()

	c, err := client.New(stack.URL, stacktest.Token) // e.g. http://localhost:8080 and $WARREN_TOKEN
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	j, err := c.Submit(ctx, job.Request{Type: "echo", Payload: json.RawMessage(`{"hello":"world"}`)})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(j.State)
	j, err = c.Wait(ctx, j.ID.String())
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(j.State, string(j.Result))
	// Output:
	// queued
	// succeeded {"hello":"world"}
}

// API errors carry the problem document.
func ExampleError() {
	stack, stop, err := stacktest.Start(stacktest.Options{Shards: 1})
	if err != nil {
		log.Fatal(err)
	}
	defer stop()
	c, err := client.New(stack.URL, stacktest.Token)
	if err != nil {
		log.Fatal(err)
	}
	_, err = c.Submit(context.Background(), job.Request{Type: "echo", Priority: new(int(12))})
	fmt.Println(err)
	// Output: submit echo job: warren: 422 Unprocessable Entity: the job request has invalid fields; priority: must be between 0 and 9 (higher runs first)
}

// runWorkers starts the stock workers on the stack and returns their stop.
func runWorkers(stack *stacktest.Stack) (stop func()) {
	w, err := worker.New(stack.WorkerConfig())
	if err != nil {
		log.Fatal(err)
	}
	if err := builtin.Register(w); err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = w.Run(ctx); close(done) }()
	return func() { cancel(); <-done }
}

// Submit and get the result in one request: the API holds the answer until
// the job ends (here within a second) or the wait is over.
func ExampleWithWait() {
	stack, stop, err := stacktest.Start(stacktest.Options{Shards: 1})
	if err != nil {
		log.Fatal(err)
	}
	defer stop()
	defer runWorkers(stack)()
	c, err := client.New(stack.URL, stacktest.Token)
	if err != nil {
		log.Fatal(err)
	}
	j, err := c.Submit(context.Background(), job.Request{Type: "echo", Payload: json.RawMessage(`"pong"`)}, client.WithWait(30*time.Second))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(j.State, string(j.Result))
	// Output: succeeded "pong"
}
