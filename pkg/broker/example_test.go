package broker_test

import (
	"context"
	"log"
	"log/slog"
	"time"

	"github.com/warrenhq/warren/pkg/broker"
)

// The api publishes a job id once its row is committed; a worker consumes
// the queue, hands each delivery to its pool and settles it when done. (No
// Output: it needs a running RabbitMQ.)
func Example() {
	ctx := context.Background()
	b, err := broker.New(ctx, broker.Config{URL: "amqp://guest:guest@localhost:5672/"}, slog.Default())
	if err != nil {
		log.Fatal(err)
	}
	defer b.Close()

	pubCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	err = b.Publish(pubCtx, broker.Message{Queue: "default", Priority: 5, MessageID: "job_01", Body: []byte("job_01")})
	if err != nil {
		log.Fatal(err) // not confirmed: the outbox relay publishes it again later
	}

	jobs := make(chan *broker.Delivery)
	go func() {
		for d := range jobs {
			known := true // does this worker handle the job's type?
			if !known {
				_ = d.Park(ctx) // back in the queue after ParkDelay, for another worker
				continue
			}
			// ... run the job ...
			_ = d.Ack()
		}
	}()
	err = b.Consume(ctx, "default", 16, func(ctx context.Context, d *broker.Delivery) {
		select {
		case jobs <- d:
		case <-ctx.Done():
			_ = d.Nack(true)
		}
	})
	close(jobs)
	if err != nil {
		log.Fatal(err)
	}
}
