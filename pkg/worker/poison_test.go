package worker_test

import (
	"context"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenhq/warren/pkg/broker"
	"github.com/warrenhq/warren/pkg/job"
	"github.com/warrenhq/warren/pkg/stacktest"
	"github.com/warrenhq/warren/pkg/worker"
)

func TestPoisonMessagesAreDeadLetteredWithTheReason(t *testing.T) {
	t.Parallel()
	s := stacktest.New(t, stacktest.Options{Shards: 1})
	w := newWorker(t, s, func(c *worker.Config) { c.Concurrency = 1 })
	must(t, worker.Handle(w, "ok", func(ctx context.Context, j *worker.Job[args]) (int, error) { return 0, nil }))
	stacktest.StartWorker(t, w)
	poison := map[string]string{ // body → what the reason must say
		"not json":                  "undecodable: invalid character",
		`{"type":"ok"}`:             "undecodable: the message has no job id",
		`{"id":"nope","type":"ok"}`: "undecodable:",
	}
	for body := range poison {
		must(t, s.Broker.Publish(context.Background(), broker.Message{Queue: "default", MessageID: "junk", Body: []byte(body)}))
	}
	if d := wait(t, s, submit(t, s, job.Request{Type: "ok"})); d.State != job.Succeeded {
		t.Fatalf("job after the poison: %+v", d)
	}

	conn, err := amqp.Dial(s.RabbitMQURL)
	must(t, err)
	defer conn.Close()
	ch, err := conn.Channel()
	must(t, err)
	got := map[string]amqp.Delivery{}
	stacktest.Eventually(t, 10*time.Second, "every poison message in the dead queue", func() bool {
		d, ok, err := ch.Get(s.Broker.DeadQueue("default"), true)
		must(t, err)
		if ok {
			got[string(d.Body)] = d
		}
		return len(got) == len(poison)
	})
	for body, want := range poison {
		d, ok := got[body]
		if !ok {
			t.Errorf("%q not dead-lettered", body)
			continue
		}
		reason, _ := d.Headers[broker.HeaderReason].(string)
		if !strings.HasPrefix(reason, want) {
			t.Errorf("%q: reason %q, want it to start with %q", body, reason, want)
		}
		if q, _ := d.Headers[broker.HeaderQueue].(string); q != "default" {
			t.Errorf("%q: queue header %q", body, q)
		}
		if d.MessageId != "junk" {
			t.Errorf("%q: message id %q", body, d.MessageId)
		}
	}
	ready, _, err := s.Broker.QueueDepth(context.Background(), "default")
	if err != nil || ready != 0 {
		t.Errorf("job queue: %d ready (%v), want 0: poison is not redelivered", ready, err)
	}
	// And the worker still runs jobs.
	if d := wait(t, s, submit(t, s, job.Request{Type: "ok"})); d.State != job.Succeeded {
		t.Fatalf("job after the dead-lettering: %+v", d)
	}
}
