package broker

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Consume declares queue, then delivers its messages to handle, one call at
// a time in the calling goroutine, with at most prefetch messages
// unacknowledged. handle must settle every delivery with Ack, Nack or Park,
// typically after handing it to a worker pool; it should return quickly, as
// no other delivery is handled meanwhile.
//
// When the channel or connection is lost, Consume subscribes again by itself
// once the broker has reconnected; deliveries received before that can no
// longer be settled, and RabbitMQ redelivers them.
//
// Consume returns nil once ctx is cancelled and the consumer has been
// cancelled. Messages received but not yet handed to handle are requeued;
// deliveries already handed out can still be settled afterwards, and the
// channel closes when the last one is. Consume returns an error only for
// problems that retrying cannot fix: a bad argument, a queue that cannot be
// declared as specified (RabbitMQ refuses a redefinition), access refused,
// or ErrClosed.
func (b *Broker) Consume(ctx context.Context, queue string, prefetch int, handle func(context.Context, *Delivery)) error {
	if err := checkQueue(queue); err != nil {
		return fmt.Errorf("broker: consume: %w", err)
	}
	if prefetch < 1 || prefetch > math.MaxUint16 {
		return fmt.Errorf("broker: consume %s: prefetch %d is not in 1..%d", queue, prefetch, math.MaxUint16)
	}
	if handle == nil {
		return fmt.Errorf("broker: consume %s: nil handler", queue)
	}
	for failures := 0; ; failures++ {
		if ctx.Err() != nil {
			return nil
		}
		start := time.Now()
		err := b.subscribe(ctx, queue, prefetch, handle)
		var fatal *fatalError
		switch {
		case err == nil || ctx.Err() != nil:
			return nil
		case errors.Is(err, ErrClosed):
			return ErrClosed
		case errors.As(err, &fatal):
			return fmt.Errorf("broker: consume %s: %w", queue, fatal.err)
		}
		if time.Since(start) > backoffMax {
			failures = 0 // it ran fine for a while: this is a new incident
		}
		b.log.Warn("broker consumer interrupted, subscribing again", "queue", queue, "error", err)
		if !b.pause(ctx, backoff(failures)) {
			if ctx.Err() != nil {
				return nil
			}
			return ErrClosed
		}
	}
}

// subscribe runs one subscription of queue on a new channel until ctx ends
// (nil), the broker closes (ErrClosed) or the channel is lost (an error).
func (b *Broker) subscribe(ctx context.Context, queue string, prefetch int, handle func(context.Context, *Delivery)) error {
	conn, err := b.connection(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	ch, err := conn.Channel()
	if err != nil {
		if conn.IsClosed() {
			b.markDown(conn, err)
		}
		return fmt.Errorf("open channel: %w", err)
	}
	setupFailed := func(err error) error {
		closeChannel(ch)
		if !conn.IsClosed() && permanent(err) {
			return &fatalError{err: err}
		}
		return err
	}
	if err := b.declareOn(ch, queue); err != nil {
		return setupFailed(fmt.Errorf("declare: %w", err))
	}
	if err := ch.Qos(prefetch, 0, false); err != nil {
		return setupFailed(fmt.Errorf("qos: %w", err))
	}
	closes := ch.NotifyClose(make(chan *amqp.Error, 1))
	tag := fmt.Sprintf("%s.%s.%d", b.cfg.Prefix, queue, b.tags.Add(1))
	deliveries, err := ch.Consume(b.jobQueue(queue), tag, false, false, false, false, nil)
	if err != nil {
		return setupFailed(fmt.Errorf("consume: %w", err))
	}
	b.log.Debug("broker consumer subscribed", "queue", queue, "consumer_tag", tag)

	sub := &subscription{ch: ch}
	for {
		select {
		case <-ctx.Done():
			sub.cancel(tag, deliveries)
			return nil
		case <-b.done:
			sub.stop()
			return ErrClosed
		case raw, ok := <-deliveries:
			if !ok {
				sub.stop()
				var reason error
				select {
				case aerr, ok := <-closes:
					if ok && aerr != nil {
						reason = aerr
					}
				default:
				}
				if conn.IsClosed() {
					b.markDown(conn, reason)
				}
				if b.isClosed() {
					return ErrClosed
				}
				if reason != nil {
					return fmt.Errorf("channel closed: %w", reason)
				}
				return errors.New("consumer cancelled by RabbitMQ (queue deleted?)")
			}
			if ctx.Err() != nil {
				_ = raw.Nack(false, true)
				sub.cancel(tag, deliveries)
				return nil
			}
			sub.hold()
			handle(ctx, b.newDelivery(queue, sub, raw))
		}
	}
}

// pause waits for d; it reports false if ctx ended or the broker closed
// first.
func (b *Broker) pause(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	case <-b.done:
		return false
	}
}

// fatalError marks a Consume setup error that retrying cannot fix.
type fatalError struct{ err error }

func (e *fatalError) Error() string { return e.err.Error() }
func (e *fatalError) Unwrap() error { return e.err }

// permanent reports whether err is a channel error that the same request
// will hit again.
func permanent(err error) bool {
	var aerr *amqp.Error
	if !errors.As(err, &aerr) {
		return false
	}
	switch aerr.Code {
	case amqp.AccessRefused, amqp.ResourceLocked, amqp.PreconditionFailed:
		return true
	}
	return false
}

// subscription is one consumer channel. It stays open after the consumer
// stops until every delivery handed out has been settled, so that a graceful
// shutdown can still ack the jobs in flight.
type subscription struct {
	ch *amqp.Channel

	mu      sync.Mutex
	held    int  // deliveries handed out and not settled yet
	stopped bool // no more deliveries will be handed out
}

// hold counts one more delivery handed out.
func (s *subscription) hold() {
	s.mu.Lock()
	s.held++
	s.mu.Unlock()
}

// release counts one delivery settled.
func (s *subscription) release() {
	s.mu.Lock()
	s.held--
	last := s.stopped && s.held == 0
	s.mu.Unlock()
	if last {
		closeChannel(s.ch)
	}
}

// stop records that no more deliveries will be handed out.
func (s *subscription) stop() {
	s.mu.Lock()
	first := !s.stopped
	s.stopped = true
	last := first && s.held == 0
	s.mu.Unlock()
	if last {
		closeChannel(s.ch)
	}
}

// cancel cancels the consumer, requeues what arrived but was not handed out,
// and stops the subscription.
func (s *subscription) cancel(tag string, deliveries <-chan amqp.Delivery) {
	// On failure the channel is gone: deliveries is closed and RabbitMQ
	// requeues everything unacked.
	_ = s.ch.Cancel(tag, false)
	for raw := range deliveries {
		_ = raw.Nack(false, true)
	}
	s.stop()
}

// Delivery is one message received by Consume. Settle it exactly once, with
// Ack, Nack or Park. Its methods are safe to call from any goroutine.
type Delivery struct {
	// Body is the payload as published.
	Body []byte
	// MessageID is the job id.
	MessageID string
	// Priority is the message priority.
	Priority uint8
	// Redelivered is true when RabbitMQ delivered this message before and it
	// was not acked (a consumer died or requeued it). The job may have run.
	Redelivered bool

	b       *Broker
	queue   string
	sub     *subscription
	raw     amqp.Delivery
	settled atomic.Bool
}

// newDelivery wraps raw, handed out on sub.
func (b *Broker) newDelivery(queue string, sub *subscription, raw amqp.Delivery) *Delivery {
	return &Delivery{
		Body:        raw.Body,
		MessageID:   raw.MessageId,
		Priority:    raw.Priority,
		Redelivered: raw.Redelivered,
		b:           b,
		queue:       queue,
		sub:         sub,
		raw:         raw,
	}
}

// Ack tells RabbitMQ the message is done with; it is removed from the queue.
// It fails if the channel the message came on has closed; RabbitMQ will then
// redeliver the message.
func (d *Delivery) Ack() error {
	if err := d.settle(); err != nil {
		return err
	}
	defer d.sub.release()
	if err := d.raw.Ack(false); err != nil {
		return fmt.Errorf("broker: ack message %s: %w", d.MessageID, err)
	}
	return nil
}

// Nack rejects the message. With requeue it goes back to its queue, to be
// delivered again at once; without, RabbitMQ drops it. It fails if the
// channel the message came on has closed; RabbitMQ will then redeliver the
// message.
func (d *Delivery) Nack(requeue bool) error {
	if err := d.settle(); err != nil {
		return err
	}
	defer d.sub.release()
	if err := d.raw.Nack(false, requeue); err != nil {
		return fmt.Errorf("broker: nack message %s: %w", d.MessageID, err)
	}
	return nil
}

// Park sets the message aside for Config.ParkDelay, after which it returns to
// its queue. A worker calls it for a job type it has no handler for, so the
// job waits for a worker that has one instead of being dropped or bounced
// back at once. The copy is published (and confirmed) to the park queue
// before the original is acked; if Park fails the original is not settled
// and the caller may Nack it, or do nothing and let RabbitMQ redeliver it.
// Either way the message may then exist twice.
func (d *Delivery) Park(ctx context.Context) error {
	if d.settled.Load() {
		return fmt.Errorf("broker: park message %s: already settled", d.MessageID)
	}
	if err := d.b.ensureDeclared(ctx, d.queue); err != nil {
		return fmt.Errorf("broker: park message %s: %w", d.MessageID, err)
	}
	var headers amqp.Table
	for k, v := range d.raw.Headers {
		if strings.HasPrefix(k, "x-") {
			continue // RabbitMQ's own, e.g. x-death: it maintains them itself
		}
		if headers == nil {
			headers = amqp.Table{}
		}
		headers[k] = v
	}
	out := outgoing{
		key: d.b.parkQueue(d.queue), // through the default exchange
		msg: amqp.Publishing{
			Headers:         headers,
			ContentType:     d.raw.ContentType,
			ContentEncoding: d.raw.ContentEncoding,
			DeliveryMode:    amqp.Persistent,
			Priority:        d.raw.Priority,
			MessageId:       d.raw.MessageId,
			Timestamp:       d.raw.Timestamp,
			Body:            d.raw.Body,
		},
	}
	if err := d.b.publish(ctx, []outgoing{out}); err != nil {
		return fmt.Errorf("broker: park message %s: %w", d.MessageID, err)
	}
	return d.Ack()
}

// settle marks d settled, or fails if it already was: acking a delivery tag
// twice is a channel error that would close the channel under every other
// delivery on it.
func (d *Delivery) settle() error {
	if !d.settled.CompareAndSwap(false, true) {
		return fmt.Errorf("broker: message %s: already settled", d.MessageID)
	}
	return nil
}

// Headers of a dead-lettered message.
const (
	// HeaderReason says why the message was dead-lettered.
	HeaderReason = "x-warren-reason"
	// HeaderQueue names the Warren queue the message was taken from.
	HeaderQueue = "x-warren-queue"
)

// maxReason bounds the reason header: it quotes error messages, which may
// quote the message.
const maxReason = 1024

// DeadLetter sets a poison message aside for good: a copy with the same body
// and properties, and the reason and original queue in the headers
// HeaderReason and HeaderQueue, is published (and confirmed) to the dead
// queue of its Warren queue, then the original is acked. Like Park, if
// DeadLetter fails the original is not settled, and the caller may Nack it.
func (d *Delivery) DeadLetter(ctx context.Context, reason string) error {
	if d.settled.Load() {
		return fmt.Errorf("broker: dead-letter message %s: already settled", d.MessageID)
	}
	if err := d.b.ensureDeclared(ctx, d.queue); err != nil {
		return fmt.Errorf("broker: dead-letter message %s: %w", d.MessageID, err)
	}
	if len(reason) > maxReason {
		reason = strings.ToValidUTF8(reason[:maxReason], "") + "…"
	}
	headers := amqp.Table{HeaderReason: reason, HeaderQueue: d.queue}
	for k, v := range d.raw.Headers {
		if !strings.HasPrefix(k, "x-") {
			headers[k] = v
		}
	}
	out := outgoing{
		key: d.b.deadQueue(d.queue), // through the default exchange
		msg: amqp.Publishing{
			Headers:         headers,
			ContentType:     d.raw.ContentType,
			ContentEncoding: d.raw.ContentEncoding,
			DeliveryMode:    amqp.Persistent,
			MessageId:       d.raw.MessageId,
			Timestamp:       d.raw.Timestamp,
			Body:            d.raw.Body,
		},
	}
	if err := d.b.publish(ctx, []outgoing{out}); err != nil {
		return fmt.Errorf("broker: dead-letter message %s: %w", d.MessageID, err)
	}
	return d.Ack()
}
