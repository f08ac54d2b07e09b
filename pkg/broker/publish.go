package broker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Message is one job message to publish.
type Message struct {
	// Queue is the Warren queue name, e.g. "default"; it is the routing key.
	Queue string
	// Priority is the message priority; values above Config.MaxPriority are
	// clamped to it.
	Priority uint8
	// MessageID is the job id.
	MessageID string
	// Body is the payload, passed through untouched.
	Body []byte
}

// Publish sends msgs as persistent messages and returns once RabbitMQ has
// confirmed every one of them. The messages are written back to back and the
// confirms awaited together, so a batch costs about one round trip.
//
// Queues that this broker has not declared yet are declared first: RabbitMQ
// confirms, and drops, a message that no queue is bound for.
//
// A nack, or the channel or connection closing before every confirm has
// arrived, is an error wrapping ErrNotConfirmed (and the close reason, if
// any). Some of the messages may have been enqueued anyway: publish the batch
// again, consumers must tolerate duplicates. While the broker is
// disconnected, Publish waits for the reconnect until ctx ends. It is safe to
// call from many goroutines; at most Config.PublishChannels calls are in
// flight at once and the others wait their turn.
func (b *Broker) Publish(ctx context.Context, msgs ...Message) error {
	if b.isClosed() {
		return ErrClosed
	}
	queues := make([]string, 0, 1)
	for _, m := range msgs {
		if err := checkQueue(m.Queue); err != nil {
			return fmt.Errorf("broker: publish message %s: %w", m.MessageID, err)
		}
		if len(queues) == 0 || queues[len(queues)-1] != m.Queue {
			queues = append(queues, m.Queue)
		}
	}
	if len(msgs) == 0 {
		return nil
	}
	if err := b.ensureDeclared(ctx, queues...); err != nil {
		return fmt.Errorf("broker: publish: %w", err)
	}

	now := time.Now()
	out := make([]outgoing, len(msgs))
	for i, m := range msgs {
		out[i] = outgoing{
			exchange: b.cfg.Prefix,
			key:      m.Queue,
			msg: amqp.Publishing{
				DeliveryMode: amqp.Persistent,
				Priority:     min(m.Priority, b.cfg.MaxPriority),
				MessageId:    m.MessageID,
				Timestamp:    now,
				Body:         m.Body,
			},
		}
	}
	if err := b.publish(ctx, out); err != nil {
		return fmt.Errorf("broker: publish %d messages: %w", len(msgs), err)
	}
	return nil
}

// outgoing is one message with its destination.
type outgoing struct {
	exchange string
	key      string
	msg      amqp.Publishing
}

// pubChannel is a confirm-mode channel of the publish pool.
type pubChannel struct {
	conn   *amqp.Connection
	ch     *amqp.Channel
	closes chan *amqp.Error // receives the reason the channel closed
}

// publish sends out on one pooled confirm channel and waits for every
// confirm.
func (b *Broker) publish(ctx context.Context, out []outgoing) error {
	select {
	case b.pubSlots <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("waiting for a publish channel: %w", ctx.Err())
	case <-b.done:
		return ErrClosed
	}
	defer func() { <-b.pubSlots }()

	pc, err := b.takePub(ctx)
	if err != nil {
		return err
	}
	healthy := false
	defer func() { b.putPub(pc, healthy) }()

	pending := make([]*amqp.DeferredConfirmation, 0, len(out))
	for _, o := range out {
		dc, err := pc.ch.PublishWithDeferredConfirmWithContext(ctx, o.exchange, o.key, false, false, o.msg)
		if err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("%w: %w", ErrNotConfirmed, err)
			}
			return b.pubFailure(pc, fmt.Errorf("%w: %w", ErrNotConfirmed, err))
		}
		pending = append(pending, dc)
	}

	nacked := 0
	for _, dc := range pending {
		select {
		case <-dc.Done():
		case <-ctx.Done():
			return fmt.Errorf("%w: waiting for confirms: %w", ErrNotConfirmed, ctx.Err())
		}
		if !dc.Acked() {
			nacked++
		}
	}
	if nacked > 0 {
		if pc.ch.IsClosed() {
			return b.pubFailure(pc, fmt.Errorf("%w: channel closed before %d of %d confirms", ErrNotConfirmed, nacked, len(out)))
		}
		return fmt.Errorf("%w: RabbitMQ nacked %d of %d messages", ErrNotConfirmed, nacked, len(out))
	}
	healthy = true
	return nil
}

// pubFailure adds to err why pc's channel closed, if it did, and marks the
// connection down if it is gone, so the caller's retry waits for the next
// one instead of failing again at once.
func (b *Broker) pubFailure(pc *pubChannel, err error) error {
	var reason error
	select {
	case aerr, ok := <-pc.closes:
		if ok && aerr != nil {
			reason = aerr
		}
	default:
	}
	if pc.conn.IsClosed() {
		b.markDown(pc.conn, reason)
	}
	var aerr *amqp.Error
	if errors.As(reason, &aerr) && aerr.Code == amqp.NotFound {
		// Someone deleted the exchange: declare the topology again on the
		// next publish.
		b.mu.Lock()
		clear(b.queues)
		b.mu.Unlock()
	}
	if b.isClosed() {
		err = fmt.Errorf("%w: %w", ErrClosed, err)
	}
	if reason != nil {
		return fmt.Errorf("%w: %w", err, reason)
	}
	return err
}

// takePub returns an idle confirm channel on the live connection, opening a
// new one if there is none. It waits for a reconnect until ctx ends.
func (b *Broker) takePub(ctx context.Context) (*pubChannel, error) {
	for {
		conn, err := b.connection(ctx)
		if err != nil {
			return nil, err
		}
		b.mu.Lock()
		for len(b.freePub) > 0 {
			pc := b.freePub[len(b.freePub)-1]
			b.freePub = b.freePub[:len(b.freePub)-1]
			if pc.conn == conn && !pc.ch.IsClosed() {
				b.mu.Unlock()
				return pc, nil
			}
		}
		b.mu.Unlock()

		pc, err := b.openPubWithin(ctx, conn)
		if err == nil {
			return pc, nil
		}
		if ctx.Err() != nil {
			return nil, err
		}
		if conn.IsClosed() {
			b.markDown(conn, err)
			continue
		}
		return nil, err
	}
}

// putPub returns pc to the pool if it is still good, or closes it.
func (b *Broker) putPub(pc *pubChannel, healthy bool) {
	if healthy && !pc.ch.IsClosed() {
		b.mu.Lock()
		keep := !b.closed && b.conn == pc.conn && len(b.freePub) < cap(b.pubSlots)
		if keep {
			b.freePub = append(b.freePub, pc)
		}
		b.mu.Unlock()
		if keep {
			return
		}
	}
	// Closing waits for the server's reply. A server that has stopped
	// answering would hold the caller (a submit bounded by its publish
	// timeout) until it answers again, or the heartbeat gives up: close in
	// the background, which Close waits for.
	b.mu.Lock()
	closed := b.closed
	if !closed {
		b.wg.Add(1)
	}
	b.mu.Unlock()
	if closed {
		closeChannel(pc.ch) // the connection is closed: this returns at once
		return
	}
	go func() {
		defer b.wg.Done()
		closeChannel(pc.ch)
	}()
}

// openPubWithin opens a confirm channel on conn, giving up when ctx ends.
// Opening waits for the server's replies, and the client library takes no
// context: a server that stopped answering would hold the caller (a submit
// bounded by its publish timeout) until it answers again. A channel that
// opens after the caller gave up joins the pool.
func (b *Broker) openPubWithin(ctx context.Context, conn *amqp.Connection) (*pubChannel, error) {
	type opened struct {
		pc  *pubChannel
		err error
	}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil, ErrClosed
	}
	b.wg.Add(1)
	b.mu.Unlock()
	var (
		mu        sync.Mutex
		abandoned bool
		res       = make(chan opened, 1)
	)
	go func() {
		defer b.wg.Done()
		pc, err := openPub(conn)
		mu.Lock()
		defer mu.Unlock()
		if !abandoned {
			res <- opened{pc, err} // buffered: never blocks
		} else if err == nil {
			b.putPub(pc, true)
		}
	}()
	select {
	case r := <-res:
		return r.pc, r.err
	case <-ctx.Done():
		mu.Lock()
		defer mu.Unlock()
		abandoned = true
		select {
		case r := <-res: // it opened just now
			return r.pc, r.err
		default:
			return nil, fmt.Errorf("open a publish channel: %w", ctx.Err())
		}
	}
}

// openPub opens a channel on conn and puts it in confirm mode.
func openPub(conn *amqp.Connection) (*pubChannel, error) {
	ch, err := conn.Channel()
	if err != nil {
		return nil, fmt.Errorf("open channel: %w", err)
	}
	closes := ch.NotifyClose(make(chan *amqp.Error, 1))
	if err := ch.Confirm(false); err != nil {
		closeChannel(ch)
		return nil, fmt.Errorf("confirm mode: %w", err)
	}
	return &pubChannel{conn: conn, ch: ch, closes: closes}, nil
}
