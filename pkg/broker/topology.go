package broker

import (
	"context"
	"errors"
	"fmt"

	amqp "github.com/rabbitmq/amqp091-go"
)

// maxQueueName bounds Warren queue names so that the derived RabbitMQ names
// stay far below AMQP's 255-byte limit.
const maxQueueName = 100

// DeclareQueue declares the exchange, job queue, park queue and dead queue of the Warren
// queue named queue (see the package documentation). It is idempotent, and
// the broker remembers the queue and declares it again after a reconnect.
// While disconnected it waits for the connection until ctx ends.
func (b *Broker) DeclareQueue(ctx context.Context, queue string) error {
	if err := checkQueue(queue); err != nil {
		return err
	}
	err := b.withChannel(ctx, func(ch *amqp.Channel) error {
		return b.declareOn(ch, queue)
	})
	if err != nil {
		return fmt.Errorf("broker: declare queue %s: %w", queue, err)
	}
	return nil
}

// QueueDepth returns the number of messages ready for delivery in the job
// queue of queue and the number of consumers on it. The queue must have been
// declared, by this process or another.
func (b *Broker) QueueDepth(ctx context.Context, queue string) (ready, consumers int, err error) {
	if err := checkQueue(queue); err != nil {
		return 0, 0, err
	}
	err = b.withChannel(ctx, func(ch *amqp.Channel) error {
		q, err := ch.QueueDeclarePassive(b.jobQueue(queue), true, false, false, false, nil)
		if err != nil {
			return err
		}
		ready, consumers = q.Messages, q.Consumers
		return nil
	})
	if err != nil {
		return 0, 0, fmt.Errorf("broker: queue depth %s: %w", queue, err)
	}
	return ready, consumers, nil
}

// ensureDeclared declares those of queues this broker has not declared yet.
// Publishing to a queue that is not bound would be confirmed and silently
// dropped, so Publish and Park call this first.
func (b *Broker) ensureDeclared(ctx context.Context, queues ...string) error {
	for _, q := range queues {
		b.mu.Lock()
		known := b.queues[q]
		b.mu.Unlock()
		if known {
			continue
		}
		if err := b.DeclareQueue(ctx, q); err != nil {
			return err
		}
	}
	return nil
}

// declareOn declares the topology of queue on ch and remembers queue. A
// failed declaration closes ch (RabbitMQ closes the channel on a channel
// error).
func (b *Broker) declareOn(ch *amqp.Channel, queue string) error {
	ex := b.cfg.Prefix
	if err := ch.ExchangeDeclare(ex, amqp.ExchangeDirect, true, false, false, false, nil); err != nil {
		return fmt.Errorf("exchange %s: %w", ex, err)
	}
	jq := b.jobQueue(queue)
	_, err := ch.QueueDeclare(jq, true, false, false, false, amqp.Table{
		"x-max-priority": int32(b.cfg.MaxPriority),
		"x-queue-type":   "classic",
	})
	if err != nil {
		return fmt.Errorf("queue %s: %w", jq, err)
	}
	if err := ch.QueueBind(jq, queue, ex, false, nil); err != nil {
		return fmt.Errorf("bind %s to %s: %w", jq, ex, err)
	}
	park := b.parkQueue(queue)
	_, err = ch.QueueDeclare(park, true, false, false, false, amqp.Table{
		"x-message-ttl":             b.cfg.ParkDelay.Milliseconds(),
		"x-dead-letter-exchange":    ex,
		"x-dead-letter-routing-key": queue,
		"x-queue-type":              "classic",
	})
	if err != nil {
		return fmt.Errorf("queue %s: %w", park, err)
	}
	// The dead queue keeps poison messages for a person to look at; nothing
	// consumes it, and messages stay until someone does.
	dead := b.deadQueue(queue)
	if _, err := ch.QueueDeclare(dead, true, false, false, false, amqp.Table{"x-queue-type": "classic"}); err != nil {
		return fmt.Errorf("queue %s: %w", dead, err)
	}
	b.mu.Lock()
	b.queues[queue] = true
	b.mu.Unlock()
	return nil
}

// withChannel runs fn on a fresh channel that it closes afterwards. fn must
// be idempotent: when the connection drops under it, withChannel waits for
// the reconnect and runs fn again, until ctx ends.
func (b *Broker) withChannel(ctx context.Context, fn func(*amqp.Channel) error) error {
	for {
		conn, err := b.connection(ctx)
		if err != nil {
			return err
		}
		ch, err := conn.Channel()
		if err == nil {
			err = fn(ch)
			closeChannel(ch)
		}
		if err != nil && conn.IsClosed() && ctx.Err() == nil {
			b.markDown(conn, err)
			continue
		}
		return err
	}
}

// jobQueue is the RabbitMQ name of the job queue of Warren queue q.
func (b *Broker) jobQueue(q string) string { return b.cfg.Prefix + ".q." + q }

// parkQueue is the RabbitMQ name of the park queue of Warren queue q.
func (b *Broker) parkQueue(q string) string { return b.cfg.Prefix + ".park." + q }

// deadQueue is the RabbitMQ name of the dead queue of Warren queue q, where
// messages no worker can decode are set aside (see Delivery.DeadLetter).
func (b *Broker) deadQueue(q string) string { return b.cfg.Prefix + ".dead." + q }

// DeadQueue returns the RabbitMQ name of the dead queue of Warren queue q,
// for operators and tests that read it.
func (b *Broker) DeadQueue(q string) string { return b.deadQueue(q) }

// checkQueue validates a Warren queue name.
func checkQueue(q string) error {
	if err := checkName(q); err != nil {
		return fmt.Errorf("%w %q: %w", ErrBadQueue, q, err)
	}
	return nil
}

// checkName reports why s is not a valid queue name or prefix: non-empty, at
// most maxQueueName bytes of [A-Za-z0-9_.:-].
func checkName(s string) error {
	switch {
	case s == "":
		return errors.New("empty")
	case len(s) > maxQueueName:
		return fmt.Errorf("longer than %d bytes", maxQueueName)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		ok := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			c == '_' || c == '.' || c == ':' || c == '-'
		if !ok {
			return fmt.Errorf("byte %q at %d is not one of [A-Za-z0-9_.:-]", c, i)
		}
	}
	return nil
}
