package client_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"time"

	"github.com/warrenhq/warren/pkg/client"
	"github.com/warrenhq/warren/pkg/job"
	"github.com/warrenhq/warren/pkg/stacktest"
)

// newExampleClient starts a test stack (standing in for a running Warren)
// and returns a client for it.
func newExampleClient(shards int) (*client.Client, func()) {
	stack, stop, err := stacktest.Start(stacktest.Options{Shards: shards})
	if err != nil {
		log.Fatal(err)
	}
	c, err := client.New(stack.URL, stacktest.Token)
	if err != nil {
		log.Fatal(err)
	}
	return c, stop
}

// An Idempotency-Key makes a submit safe to retry: the same key and request
// return the original job; the key with a different request is a conflict.
func ExampleWithIdempotencyKey() {
	c, stop := newExampleClient(2)
	defer stop()
	ctx := context.Background()
	req := job.Request{Type: "invoice.send", Payload: json.RawMessage(`{"invoice":1042}`)}
	first, err := c.Submit(ctx, req, client.WithIdempotencyKey("invoice-1042"))
	if err != nil {
		log.Fatal(err)
	}
	again, err := c.Submit(ctx, req, client.WithIdempotencyKey("invoice-1042"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("same job:", again.ID == first.ID)

	req.Payload = json.RawMessage(`{"invoice":9999}`)
	_, err = c.Submit(ctx, req, client.WithIdempotencyKey("invoice-1042"))
	fmt.Println("conflict:", client.IsConflict(err))
	// Output:
	// same job: true
	// conflict: true
}

// Delay a job, then cancel it before it runs.
func ExampleClient_Cancel() {
	c, stop := newExampleClient(1)
	defer stop()
	ctx := context.Background()
	j, err := c.Submit(ctx, job.Request{Type: "reminder", Delay: "24h"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(j.State)
	j, err = c.Cancel(ctx, j.ID.String())
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(j.State)
	_, err = c.Retry(ctx, j.ID.String()) // a cancelled job can run after all
	fmt.Println(err)
	// Output:
	// scheduled
	// cancelled
	// <nil>
}

// Submit many jobs in one request; each item succeeds or fails on its own.
func ExampleClient_SubmitBatch() {
	c, stop := newExampleClient(2)
	defer stop()
	items, err := c.SubmitBatch(context.Background(), []job.Request{
		{Type: "thumbnail", Payload: json.RawMessage(`{"image":1}`)},
		{Type: "thumbnail", Priority: new(42)},
		{Type: "thumbnail", Payload: json.RawMessage(`{"image":3}`), Queue: "images"},
	})
	if err != nil {
		log.Fatal(err)
	}
	for _, it := range items {
		if it.Err != nil {
			fmt.Println(it.Index, "error:", it.Err.Errors[0].Field, it.Err.Errors[0].Detail)
			continue
		}
		fmt.Println(it.Index, it.Job.Queue, it.Job.State)
	}
	// Output:
	// 0 default queued
	// 1 error: priority must be between 0 and 9 (higher runs first)
	// 2 images queued
}

// Page through every job, newest first, across all shards.
func ExampleClient_All() {
	c, stop := newExampleClient(2)
	defer stop()
	ctx := context.Background()
	for i := range 5 {
		if _, err := c.Submit(ctx, job.Request{Type: "report", Payload: json.RawMessage(fmt.Sprint(i))}); err != nil {
			log.Fatal(err)
		}
		time.Sleep(2 * time.Millisecond) // distinct creation times, for a stable order in this example
	}
	for j, err := range c.All(ctx, client.ListOptions{Type: "report", Limit: 2}) {
		if err != nil {
			log.Fatal(err)
		}
		fmt.Print(string(j.Payload), " ")
	}
	fmt.Println()
	// Output: 4 3 2 1 0
}

// Per-queue statistics of this tenant's jobs.
func ExampleClient_Queues() {
	c, stop := newExampleClient(2)
	defer stop()
	ctx := context.Background()
	for _, req := range []job.Request{{Type: "mail", Queue: "emails"}, {Type: "mail", Queue: "emails"}, {Type: "mail", Queue: "emails", Delay: "1h"}} {
		if _, err := c.Submit(ctx, req); err != nil {
			log.Fatal(err)
		}
	}
	queues, _, err := c.Queues(ctx)
	if err != nil {
		log.Fatal(err)
	}
	for _, q := range queues {
		fmt.Printf("%s: ready %d, scheduled %d, consumers %d\n", q.Name, q.Ready, q.Scheduled, *q.Consumers)
	}
	// Output: emails: ready 2, scheduled 1, consumers 0
}
