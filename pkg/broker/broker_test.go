package broker

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

func TestDeclareQueueIsIdempotent(t *testing.T) {
	t.Parallel()
	bun := setup(t, nil)
	b := bun.broker()
	ctx := context.Background()
	q := bun.queue("jobs")

	for i := range 2 {
		if err := b.DeclareQueue(ctx, q); err != nil {
			t.Fatalf("DeclareQueue #%d: %v", i+1, err)
		}
	}
	// Another process declaring the same topology is fine too.
	if err := bun.broker().DeclareQueue(ctx, q); err != nil {
		t.Fatalf("DeclareQueue from a second broker: %v", err)
	}
	ready, consumers, err := b.QueueDepth(ctx, q)
	if err != nil || ready != 0 || consumers != 0 {
		t.Fatalf("QueueDepth = %d, %d, %v; want 0, 0, nil", ready, consumers, err)
	}

	main := queueInfo(t, bun.cfg.Prefix+".q.jobs")
	args, _ := main["arguments"].(map[string]any)
	if main["durable"] != true || args["x-max-priority"] != float64(DefaultMaxPriority) || args["x-queue-type"] != "classic" {
		t.Errorf("job queue: durable=%v arguments=%v", main["durable"], args)
	}
	park := queueInfo(t, bun.cfg.Prefix+".park.jobs")
	args, _ = park["arguments"].(map[string]any)
	if park["durable"] != true || args["x-message-ttl"] != float64(DefaultParkDelay.Milliseconds()) ||
		args["x-dead-letter-exchange"] != bun.cfg.Prefix || args["x-dead-letter-routing-key"] != "jobs" {
		t.Errorf("park queue: durable=%v arguments=%v", park["durable"], args)
	}
}

func TestPublishAndConsumeABatchExactlyOnce(t *testing.T) {
	t.Parallel()
	bun := setup(t, nil)
	b := bun.broker()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	q := bun.queue("batch")

	const n = 1000
	msgs := make([]Message, n)
	for i, id := range ids("job", n) {
		msgs[i] = Message{Queue: q, MessageID: id, Body: []byte("body-" + id)}
	}
	if err := b.Publish(ctx, msgs...); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	if ready, _, err := b.QueueDepth(ctx, q); err != nil || ready != n {
		t.Fatalf("QueueDepth after confirmed publish = %d, %v; want %d", ready, err, n)
	}

	deliveries, stop := consume(t, b, q, 50)
	seen := make(map[string]bool, n)
	var last *Delivery
	for len(seen) < n {
		d := next(t, deliveries, 10*time.Second)
		if seen[d.MessageID] {
			t.Fatalf("message %s delivered twice", d.MessageID)
		}
		seen[d.MessageID] = true
		if string(d.Body) != "body-"+d.MessageID || d.Redelivered {
			t.Fatalf("delivery %s: body %q redelivered %v", d.MessageID, d.Body, d.Redelivered)
		}
		if len(seen) == n {
			last = d // settled after Consume returns
			break
		}
		if err := d.Ack(); err != nil {
			t.Fatalf("Ack: %v", err)
		}
	}
	if err := stop(); err != nil {
		t.Fatalf("Consume returned %v after cancel; want nil", err)
	}
	// A delivery handed out before Consume returned can still be acked.
	if err := last.Ack(); err != nil {
		t.Fatalf("Ack after Consume returned: %v", err)
	}
	if err := last.Ack(); err == nil {
		t.Fatal("second Ack of one delivery succeeded; want an error")
	}
	select {
	case d := <-deliveries:
		t.Fatalf("extra delivery %s", d.MessageID)
	default:
	}
	// Nothing was left unacked: the channel closed after the last ack, so
	// anything unacked would be ready again.
	eventually(t, 5*time.Second, "consumer gone", func() bool {
		_, consumers, err := b.QueueDepth(ctx, q)
		return err == nil && consumers == 0
	})
	if ready, _, err := b.QueueDepth(ctx, q); err != nil || ready != 0 {
		t.Fatalf("QueueDepth after acking all = %d, %v; want 0", ready, err)
	}
}

func TestConcurrentPublishers(t *testing.T) {
	t.Parallel()
	bun := setup(t, func(c *Config) { c.PublishChannels = 3 })
	b := bun.broker()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	q := bun.queue("concurrent")

	const publishers, batches, batch = 12, 10, 5
	var wg sync.WaitGroup
	errs := make(chan error, publishers*batches)
	for p := range publishers {
		wg.Go(func() {
			for i := range batches {
				msgs := make([]Message, batch)
				for j := range msgs {
					msgs[j] = Message{Queue: q, MessageID: fmt.Sprintf("p%02d-%02d-%d", p, i, j), Priority: uint8(j)}
				}
				if err := b.Publish(ctx, msgs...); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("Publish: %v", err)
	}
	const n = publishers * batches * batch
	if ready, _, err := b.QueueDepth(ctx, q); err != nil || ready != n {
		t.Fatalf("QueueDepth = %d, %v; want %d", ready, err, n)
	}
	b.mu.Lock()
	pooled := len(b.freePub)
	b.mu.Unlock()
	if pooled > 3 {
		t.Errorf("%d idle publish channels; want at most PublishChannels=3", pooled)
	}

	deliveries, stop := consume(t, b, q, 100)
	seen := map[string]bool{}
	for len(seen) < n {
		d := next(t, deliveries, 10*time.Second)
		if seen[d.MessageID] {
			t.Fatalf("message %s delivered twice", d.MessageID)
		}
		seen[d.MessageID] = true
		if err := d.Ack(); err != nil {
			t.Fatalf("Ack: %v", err)
		}
	}
	if err := stop(); err != nil {
		t.Fatalf("Consume: %v", err)
	}
}

func TestPriority(t *testing.T) {
	t.Parallel()
	bun := setup(t, nil)
	b := bun.broker()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	q := bun.queue("prio")

	low := make([]Message, 50)
	for i, id := range ids("low", len(low)) {
		low[i] = Message{Queue: q, MessageID: id, Priority: 0}
	}
	if err := b.Publish(ctx, low...); err != nil {
		t.Fatalf("Publish low: %v", err)
	}
	// 200 is above MaxPriority: clamped to 9, still the highest.
	if err := b.Publish(ctx, Message{Queue: q, MessageID: "high", Priority: 200}); err != nil {
		t.Fatalf("Publish high: %v", err)
	}

	deliveries, stop := consume(t, b, q, 1)
	first := next(t, deliveries, 10*time.Second)
	if first.MessageID != "high" || first.Priority != DefaultMaxPriority {
		t.Fatalf("first delivery %s priority %d; want high with priority %d", first.MessageID, first.Priority, DefaultMaxPriority)
	}
	if err := first.Ack(); err != nil {
		t.Fatalf("Ack: %v", err)
	}
	for range low {
		d := next(t, deliveries, 10*time.Second)
		if err := d.Ack(); err != nil {
			t.Fatalf("Ack: %v", err)
		}
	}
	if err := stop(); err != nil {
		t.Fatalf("Consume: %v", err)
	}
}

func TestUnackedMessageIsRedeliveredWhenConnectionGoes(t *testing.T) {
	t.Parallel()
	bun := setup(t, nil)
	b1 := bun.broker()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	q := bun.queue("redeliver")

	if err := b1.Publish(ctx, Message{Queue: q, MessageID: "job-1", Body: []byte("x")}); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	deliveries1, stop1 := consume(t, b1, q, 1)
	d := next(t, deliveries1, 10*time.Second)
	if d.MessageID != "job-1" || d.Redelivered {
		t.Fatalf("got %s redelivered=%v; want job-1, first delivery", d.MessageID, d.Redelivered)
	}

	// The worker dies without acking.
	if err := b1.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := stop1(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Consume after Close = %v; want ErrClosed", err)
	}
	if err := d.Ack(); err == nil {
		t.Fatal("Ack on a closed channel succeeded; want an error")
	}

	b2 := bun.broker()
	deliveries2, stop2 := consume(t, b2, q, 1)
	d = next(t, deliveries2, 10*time.Second)
	if d.MessageID != "job-1" || !d.Redelivered || string(d.Body) != "x" {
		t.Fatalf("got %s redelivered=%v body %q; want job-1 redelivered", d.MessageID, d.Redelivered, d.Body)
	}
	if err := d.Ack(); err != nil {
		t.Fatalf("Ack: %v", err)
	}
	if err := stop2(); err != nil {
		t.Fatalf("Consume: %v", err)
	}
}

func TestNackRequeues(t *testing.T) {
	t.Parallel()
	bun := setup(t, nil)
	b := bun.broker()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	q := bun.queue("nack")

	if err := b.Publish(ctx, Message{Queue: q, MessageID: "job-1"}); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	deliveries, stop := consume(t, b, q, 1)
	d := next(t, deliveries, 10*time.Second)
	if err := d.Nack(true); err != nil {
		t.Fatalf("Nack: %v", err)
	}
	if err := d.Ack(); err == nil {
		t.Fatal("Ack after Nack succeeded; want an error")
	}
	d = next(t, deliveries, 10*time.Second)
	if d.MessageID != "job-1" || !d.Redelivered {
		t.Fatalf("got %s redelivered=%v; want job-1 redelivered", d.MessageID, d.Redelivered)
	}
	if err := d.Nack(false); err != nil {
		t.Fatalf("Nack: %v", err)
	}
	if err := stop(); err != nil {
		t.Fatalf("Consume: %v", err)
	}
	if ready, _, err := b.QueueDepth(ctx, q); err != nil || ready != 0 {
		t.Fatalf("QueueDepth after Nack(false) = %d, %v; want 0", ready, err)
	}
}

func TestParkReturnsMessageAfterDelay(t *testing.T) {
	t.Parallel()
	const delay = 200 * time.Millisecond
	bun := setup(t, func(c *Config) { c.ParkDelay = delay })
	b := bun.broker()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	q := bun.queue("park")
	raw := dialRaw(t)

	if err := b.Publish(ctx, Message{Queue: q, MessageID: "job-1", Priority: 3, Body: []byte("payload")}); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	deliveries, stop := consume(t, b, q, 10)
	d := next(t, deliveries, 10*time.Second)

	// Twice round: the x-death bookkeeping of the first trip must not get in
	// the way of the second.
	for round := 1; round <= 2; round++ {
		start := time.Now()
		if err := d.Park(ctx); err != nil {
			t.Fatalf("round %d: Park: %v", round, err)
		}
		if err := d.Ack(); err == nil {
			t.Fatalf("round %d: Ack after Park succeeded; want an error", round)
		}
		d = next(t, deliveries, 10*time.Second)
		if elapsed := time.Since(start); elapsed < delay {
			t.Fatalf("round %d: parked message back after %s; want at least %s", round, elapsed, delay)
		}
		if d.MessageID != "job-1" || d.Priority != 3 || string(d.Body) != "payload" {
			t.Fatalf("round %d: got %s priority %d body %q", round, d.MessageID, d.Priority, d.Body)
		}
		if n := rawReady(t, raw, bun.cfg.Prefix+".park."+q); n != 0 {
			t.Fatalf("round %d: park queue holds %d messages; want 0", round, n)
		}
	}
	if err := d.Ack(); err != nil {
		t.Fatalf("Ack: %v", err)
	}
	if err := stop(); err != nil {
		t.Fatalf("Consume: %v", err)
	}
	if ready, _, err := b.QueueDepth(ctx, q); err != nil || ready != 0 {
		t.Fatalf("QueueDepth = %d, %v; want 0", ready, err)
	}
}

func TestPublishNackedIsNotConfirmed(t *testing.T) {
	t.Parallel()
	bun := setup(t, nil)
	b := bun.broker()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	q := bun.queue("nacked")
	if err := b.DeclareQueue(ctx, q); err != nil {
		t.Fatalf("DeclareQueue: %v", err)
	}

	// A second queue on the same routing key that refuses every message
	// makes RabbitMQ nack the publish.
	raw := dialRaw(t)
	full := bun.cfg.Prefix + ".full"
	rawDo(t, raw, func(ch *amqp.Channel) error {
		if _, err := ch.QueueDeclare(full, false, false, false, false, amqp.Table{
			"x-max-length": int32(0),
			"x-overflow":   "reject-publish",
		}); err != nil {
			return err
		}
		return ch.QueueBind(full, q, bun.cfg.Prefix, false, nil)
	})
	t.Cleanup(func() {
		rawDo(t, raw, func(ch *amqp.Channel) error { _, err := ch.QueueDelete(full, false, false, false); return err })
	})

	err := b.Publish(ctx, Message{Queue: q, MessageID: "a"}, Message{Queue: q, MessageID: "b"})
	if !errors.Is(err, ErrNotConfirmed) {
		t.Fatalf("Publish = %v; want ErrNotConfirmed", err)
	}

	rawDo(t, raw, func(ch *amqp.Channel) error { return ch.QueueUnbind(full, q, bun.cfg.Prefix, nil) })
	if err := b.Publish(ctx, Message{Queue: q, MessageID: "c"}); err != nil {
		t.Fatalf("Publish after unbinding the full queue: %v", err)
	}
}

func TestReconnectAfterServerClosesConnection(t *testing.T) {
	t.Parallel()
	bun := setup(t, nil)
	b := bun.broker()
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Second)
	defer cancel()
	q := bun.queue("reconnect")

	deliveries, stop := consume(t, b, q, 10)
	for _, id := range []string{"before", "inflight"} {
		if err := b.Publish(ctx, Message{Queue: q, MessageID: id}); err != nil {
			t.Fatalf("Publish %s: %v", id, err)
		}
	}
	if d := next(t, deliveries, 10*time.Second); d.MessageID != "before" {
		t.Fatalf("got %s; want before", d.MessageID)
	} else if err := d.Ack(); err != nil {
		t.Fatalf("Ack: %v", err)
	}
	inflight := next(t, deliveries, 10*time.Second) // left unacked across the drop

	var old []string
	eventually(t, 10*time.Second, "the connection in the management API", func() bool {
		old = connections(t, bun.cfg.ConnectionName)
		return len(old) == 1
	})
	mgmt(t, http.MethodDelete, "api/connections/"+url.PathEscape(old[0]))
	eventually(t, 10*time.Second, "the server to drop the connection", func() bool {
		names := connections(t, bun.cfg.ConnectionName)
		return len(names) == 0 || names[0] != old[0]
	})

	// The caller just retries until its deadline; the broker reconnects by
	// itself.
	var err error
	for err = b.Publish(ctx, Message{Queue: q, MessageID: "after"}); err != nil; err = b.Publish(ctx, Message{Queue: q, MessageID: "after"}) {
		if ctx.Err() != nil {
			t.Fatalf("Publish never succeeded after the drop: %v", err)
		}
		time.Sleep(50 * time.Millisecond) // retry pacing, as a caller would
	}
	if err := inflight.Ack(); err == nil {
		t.Error("Ack on the dead channel succeeded; want an error")
	}

	// The same Consume call re-subscribed: it gets the new message and the
	// one that was in flight, redelivered.
	got := map[string]bool{}
	for len(got) < 2 {
		d := next(t, deliveries, 15*time.Second)
		switch {
		case d.MessageID == "inflight" && d.Redelivered, d.MessageID == "after":
			got[d.MessageID] = true
		default:
			t.Fatalf("unexpected delivery %s redelivered=%v", d.MessageID, d.Redelivered)
		}
		if err := d.Ack(); err != nil {
			t.Fatalf("Ack %s: %v", d.MessageID, err)
		}
	}
	if err := b.Ready(ctx); err != nil {
		t.Fatalf("Ready after reconnect: %v", err)
	}
	// The management API lists a new connection after a short while.
	eventually(t, 10*time.Second, "one new connection in the management API", func() bool {
		names := connections(t, bun.cfg.ConnectionName)
		return len(names) == 1 && names[0] != old[0]
	})
	if err := stop(); err != nil {
		t.Fatalf("Consume: %v", err)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	t.Parallel()
	const secret = "s3cretPassw0rd"
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no URL", Config{}, "URL is required"},
		{"bad scheme", Config{URL: "http://u:" + secret + "@localhost/"}, "URL"},
		{"unparsable", Config{URL: "amqp://u:" + secret + "@host:port:x/"}, "URL"},
		{"bad prefix", Config{URL: "amqp://localhost/", Prefix: "a b"}, "Prefix"},
		{"negative channels", Config{URL: "amqp://localhost/", PublishChannels: -1}, "PublishChannels"},
		{"negative park delay", Config{URL: "amqp://localhost/", ParkDelay: -time.Second}, "ParkDelay"},
		{"nothing listening", Config{URL: "amqp://u:" + secret + "@127.0.0.1:1/"}, "connect"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			b, err := New(ctx, tt.cfg, nil)
			if err == nil {
				_ = b.Close()
				t.Fatal("New succeeded; want an error")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not mention %q", err, tt.want)
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("error %q shows the password", err)
			}
		})
	}

	t.Run("wrong password", func(t *testing.T) {
		t.Parallel()
		u, err := url.Parse(testURL(t))
		if err != nil {
			t.Fatal(err)
		}
		u.User = url.UserPassword(u.User.Username(), secret)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		b, err := New(ctx, Config{URL: u.String()}, nil)
		if err == nil {
			_ = b.Close()
			t.Fatal("New succeeded; want an error")
		}
		if strings.Contains(err.Error(), secret) {
			t.Errorf("error %q shows the password", err)
		}
	})
}

func TestBadQueueNames(t *testing.T) {
	t.Parallel()
	bun := setup(t, nil)
	b := bun.broker()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	for _, q := range []string{"", "has space", "slash/y", "ünïcode", "tab\t", strings.Repeat("x", 101)} {
		if err := b.DeclareQueue(ctx, q); !errors.Is(err, ErrBadQueue) {
			t.Errorf("DeclareQueue(%q) = %v; want ErrBadQueue", q, err)
		}
		if err := b.Publish(ctx, Message{Queue: q, MessageID: "x"}); !errors.Is(err, ErrBadQueue) {
			t.Errorf("Publish to %q = %v; want ErrBadQueue", q, err)
		}
		if err := b.Consume(ctx, q, 1, func(context.Context, *Delivery) {}); !errors.Is(err, ErrBadQueue) {
			t.Errorf("Consume(%q) = %v; want ErrBadQueue", q, err)
		}
		if _, _, err := b.QueueDepth(ctx, q); !errors.Is(err, ErrBadQueue) {
			t.Errorf("QueueDepth(%q) = %v; want ErrBadQueue", q, err)
		}
	}
	for _, q := range []string{"default", "a", "Mixed_Case-1.2:3", strings.Repeat("x", 100)} {
		if err := checkQueue(q); err != nil {
			t.Errorf("checkQueue(%q) = %v; want nil", q, err)
		}
	}
	if err := b.Consume(ctx, "ok", 0, func(context.Context, *Delivery) {}); err == nil {
		t.Error("Consume with prefetch 0 succeeded; want an error")
	}
}

func TestConsumeRefusesRedefinedQueue(t *testing.T) {
	t.Parallel()
	bun := setup(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	q := bun.queue("redefined")
	if err := bun.broker().DeclareQueue(ctx, q); err != nil {
		t.Fatalf("DeclareQueue: %v", err)
	}
	// Same names, a different MaxPriority: RabbitMQ refuses, and retrying
	// cannot help, so Consume returns instead of looping.
	other := bun.cfg
	other.MaxPriority = 5
	b, err := New(ctx, other, testLogger(t))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	defer b.Close()
	if err := b.Consume(ctx, q, 1, func(context.Context, *Delivery) {}); err == nil || ctx.Err() != nil {
		t.Fatalf("Consume = %v (ctx %v); want a prompt error", err, ctx.Err())
	}
	if err := b.DeclareQueue(ctx, q); err == nil {
		t.Fatal("DeclareQueue with another MaxPriority succeeded; want an error")
	}
}

func TestClose(t *testing.T) {
	t.Parallel()
	bun := setup(t, nil)
	b := bun.broker()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	q := bun.queue("close")

	if err := b.Ready(ctx); err != nil {
		t.Fatalf("Ready: %v", err)
	}
	if err := b.Publish(ctx, Message{Queue: q, MessageID: "x"}); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := b.Publish(ctx, Message{Queue: q, MessageID: "y"}); !errors.Is(err, ErrClosed) {
		t.Errorf("Publish after Close = %v; want ErrClosed", err)
	}
	if err := b.DeclareQueue(ctx, q); !errors.Is(err, ErrClosed) {
		t.Errorf("DeclareQueue after Close = %v; want ErrClosed", err)
	}
	if err := b.Consume(ctx, q, 1, func(context.Context, *Delivery) {}); !errors.Is(err, ErrClosed) {
		t.Errorf("Consume after Close = %v; want ErrClosed", err)
	}
	if _, _, err := b.QueueDepth(ctx, q); !errors.Is(err, ErrClosed) {
		t.Errorf("QueueDepth after Close = %v; want ErrClosed", err)
	}
	if err := b.Ready(ctx); !errors.Is(err, ErrClosed) {
		t.Errorf("Ready after Close = %v; want ErrClosed", err)
	}
}

func TestPublishWaitsForConnectionUntilDeadline(t *testing.T) {
	t.Parallel()
	bun := setup(t, nil)
	b := bun.broker()
	q := bun.queue("wait")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.DeclareQueue(ctx, q); err != nil {
		t.Fatalf("DeclareQueue: %v", err)
	}

	// Pretend the connection just dropped: Publish must wait, not fail at
	// once, and give up at its deadline.
	b.mu.Lock()
	conn := b.conn
	b.mu.Unlock()
	b.markDown(conn, errors.New("test: pretend drop"))
	if err := b.Ready(ctx); err == nil {
		t.Fatal("Ready while disconnected = nil; want an error")
	}
	short, cancelShort := context.WithTimeout(ctx, 150*time.Millisecond)
	defer cancelShort()
	start := time.Now()
	err := b.Publish(short, Message{Queue: q, MessageID: "x"})
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) < 100*time.Millisecond {
		t.Fatalf("Publish while disconnected = %v after %s; want DeadlineExceeded at the deadline", err, time.Since(start))
	}

	// The connection comes back: the waiting publisher goes through.
	done := make(chan error, 1)
	go func() { done <- b.Publish(ctx, Message{Queue: q, MessageID: "y"}) }()
	if _, ok := b.install(conn); !ok {
		t.Fatal("install refused")
	}
	if err := <-done; err != nil {
		t.Fatalf("Publish after reconnect: %v", err)
	}
}

func TestBackoff(t *testing.T) {
	t.Parallel()
	for n := range 40 {
		d := backoff(n)
		ceil := min(backoffInitial<<min(n, 16), backoffMax)
		if n >= 16 {
			ceil = backoffMax
		}
		if d < ceil/2 || d > ceil {
			t.Errorf("backoff(%d) = %s; want in [%s, %s]", n, d, ceil/2, ceil)
		}
	}
}

func TestRedact(t *testing.T) {
	t.Parallel()
	raw := "amqp://user:p%40ss@host:5672/"
	err := redact(fmt.Errorf("dial %s: auth p@ss p%%40ss failed", raw), raw)
	if got := err.Error(); strings.Contains(got, "p@ss") || strings.Contains(got, "p%40ss") || !strings.Contains(got, "amqp://user:xxxxx@host:5672/") {
		t.Errorf("redacted message %q", got)
	}
	inner := errors.New("inner")
	if !errors.Is(redact(inner, raw), inner) {
		t.Error("redact hides the wrapped error from errors.Is")
	}
}
