package broker

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Every message Warren writes survives a RabbitMQ restart: jobs published,
// and the copies that Park and DeadLetter make, are persistent
// (delivery_mode 2) in durable queues.
func TestMessagesArePersistent(t *testing.T) {
	t.Parallel()
	// A long park delay keeps the parked copy in the park queue to look at.
	bun := setup(t, func(c *Config) { c.ParkDelay = time.Hour })
	b := bun.broker()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	q := bun.queue("persist")
	raw := dialRaw(t)

	if err := b.Publish(ctx,
		Message{Queue: q, MessageID: "job-1", Body: []byte("one")},
		Message{Queue: q, MessageID: "job-2", Body: []byte("two")},
	); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	deliveries, stop := consume(t, b, q, 2)
	got := map[string]*Delivery{}
	for range 2 {
		d := next(t, deliveries, 10*time.Second)
		got[d.MessageID] = d
		if d.raw.DeliveryMode != amqp.Persistent {
			t.Errorf("published message %s: delivery mode %d, want %d (persistent)", d.MessageID, d.raw.DeliveryMode, amqp.Persistent)
		}
	}
	if got["job-1"] == nil || got["job-2"] == nil {
		t.Fatalf("deliveries %v", got)
	}
	if err := got["job-1"].Park(ctx); err != nil {
		t.Fatalf("Park: %v", err)
	}
	if err := got["job-2"].DeadLetter(ctx, "undecodable"); err != nil {
		t.Fatalf("DeadLetter: %v", err)
	}
	if err := stop(); err != nil {
		t.Fatalf("Consume: %v", err)
	}
	for _, tc := range []struct{ what, queue, id string }{
		{"parked copy", b.parkQueue(q), "job-1"},
		{"dead-lettered copy", b.deadQueue(q), "job-2"},
	} {
		rawDo(t, raw, func(ch *amqp.Channel) error {
			m, ok, err := ch.Get(tc.queue, true)
			switch {
			case err != nil:
				return err
			case !ok:
				t.Errorf("%s: queue %s is empty", tc.what, tc.queue)
			case m.MessageId != tc.id || m.DeliveryMode != amqp.Persistent:
				t.Errorf("%s: message %s with delivery mode %d, want %s with %d (persistent)", tc.what, m.MessageId, m.DeliveryMode, tc.id, amqp.Persistent)
			}
			return nil
		})
	}
}

// A consumer with prefetch N has at most N unacknowledged deliveries: the
// rest stay ready in the queue, for other workers, until it acks.
func TestConsumerPrefetchIsHonoured(t *testing.T) {
	t.Parallel()
	bun := setup(t, nil)
	b := bun.broker()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	q := bun.queue("prefetch")
	raw := dialRaw(t)
	name := b.jobQueue(q)

	const n, prefetch = 10, 3
	msgs := make([]Message, n)
	for i, id := range ids("job", n) {
		msgs[i] = Message{Queue: q, MessageID: id}
	}
	if err := b.Publish(ctx, msgs...); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	deliveries, stop := consume(t, b, q, prefetch)
	var held []*Delivery
	take := func() int {
		for {
			select {
			case d := <-deliveries:
				held = append(held, d)
			default:
				return len(held)
			}
		}
	}
	// RabbitMQ counts ready messages exactly: with n−prefetch ready, exactly
	// prefetch were delivered, and they stay the only ones while unacked.
	eventually(t, 10*time.Second, "prefetch deliveries and the rest ready", func() bool {
		return take() == prefetch && rawReady(t, raw, name) == n-prefetch
	})
	// The management API (its figures lag by a few seconds) agrees: the
	// consumer's prefetch count is N and N messages are unacknowledged.
	eventually(t, 20*time.Second, "the management API to show the prefetch", func() bool {
		var info struct {
			Unacked   int `json:"messages_unacknowledged"`
			Ready     int `json:"messages_ready"`
			Consumers []struct {
				PrefetchCount int `json:"prefetch_count"`
			} `json:"consumer_details"`
		}
		if err := jsonGet(t, "api/queues/%2F/"+url.PathEscape(name), &info); err != nil {
			t.Fatal(err)
		}
		if info.Unacked > prefetch {
			t.Fatalf("%d messages unacknowledged with prefetch %d", info.Unacked, prefetch)
		}
		return info.Unacked == prefetch && info.Ready == n-prefetch &&
			len(info.Consumers) == 1 && info.Consumers[0].PrefetchCount == prefetch
	})
	if got := take(); got != prefetch {
		t.Fatalf("%d deliveries with prefetch %d", got, prefetch)
	}

	// Each ack lets exactly one more in.
	for acked := 1; acked <= 2; acked++ {
		if err := held[acked-1].Ack(); err != nil {
			t.Fatalf("Ack: %v", err)
		}
		eventually(t, 10*time.Second, "one more delivery after an ack", func() bool {
			return take() == prefetch+acked && rawReady(t, raw, name) == n-prefetch-acked
		})
	}
	if err := stop(); err != nil {
		t.Fatalf("Consume: %v", err)
	}
	take()
	for _, d := range held[2:] {
		if err := d.Nack(true); err != nil {
			t.Fatalf("Nack: %v", err)
		}
	}
	if got := len(held); got != prefetch+2 {
		t.Fatalf("%d deliveries in all, want %d", got, prefetch+2)
	}
}

// jsonGet decodes a management API answer into v.
func jsonGet(t testing.TB, path string, v any) error {
	t.Helper()
	return json.Unmarshal(mgmt(t, http.MethodGet, path), v)
}
