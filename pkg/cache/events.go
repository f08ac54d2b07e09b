package cache

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/warrenhq/warren/pkg/job"
)

// Event is a kind of job event carried over Redis pub/sub.
type Event string

// The events. Done: a job reached a terminal state (wakes ?wait requests).
// Cancel: a job was cancelled (its worker stops the handler).
const (
	Done   Event = "done"
	Cancel Event = "cancel"
)

func (c *Cache) channel(e Event) string { return c.prefix + "events:" + string(e) }

// Publish announces an event for a job to every listener.
func (c *Cache) Publish(ctx context.Context, e Event, id job.ID) error {
	if err := c.rdb.Publish(ctx, c.channel(e), id.String()).Err(); err != nil {
		return fmt.Errorf("publish %s event of job %s: %w", e, id, err)
	}
	return nil
}

// Listener holds one Redis subscription and fans its events out to any number
// of waiters, so thousands of waiting requests cost one connection and one
// goroutine, not one each. go-redis resubscribes by itself after a drop;
// waiters should still bound their wait and re-check the store, since events
// sent while the subscription was down are lost.
type Listener struct {
	ps      *redis.PubSub
	mu      sync.Mutex
	waiters map[job.ID]map[*waiter]struct{}
	done    chan struct{}
}

type waiter struct{ ch chan struct{} }

// Listen subscribes to the event and returns the listener; Close ends it.
func (c *Cache) Listen(ctx context.Context, e Event, log *slog.Logger) *Listener {
	l := &Listener{
		ps:      c.rdb.Subscribe(ctx, c.channel(e)),
		waiters: map[job.ID]map[*waiter]struct{}{},
		done:    make(chan struct{}),
	}
	go l.loop(log)
	return l
}

func (l *Listener) loop(log *slog.Logger) {
	defer close(l.done)
	ch := l.ps.Channel(redis.WithChannelHealthCheckInterval(10 * time.Second))
	for msg := range ch {
		id, err := job.ParseID(msg.Payload)
		if err != nil {
			if log != nil {
				log.Warn("ignoring a malformed job event", "channel", msg.Channel)
			}
			continue
		}
		l.mu.Lock()
		for w := range l.waiters[id] {
			close(w.ch)
		}
		delete(l.waiters, id)
		l.mu.Unlock()
	}
}

// Wait returns a channel closed when the event for id arrives, and a function
// to stop waiting (call it when done, whichever way the wait ended).
func (l *Listener) Wait(id job.ID) (<-chan struct{}, func()) {
	w := &waiter{ch: make(chan struct{})}
	l.mu.Lock()
	if l.waiters[id] == nil {
		l.waiters[id] = map[*waiter]struct{}{}
	}
	l.waiters[id][w] = struct{}{}
	l.mu.Unlock()
	return w.ch, func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		if ws := l.waiters[id]; ws != nil {
			delete(ws, w)
			if len(ws) == 0 {
				delete(l.waiters, id)
			}
		}
	}
}

// Waiting returns the number of ids being waited for.
func (l *Listener) Waiting() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.waiters)
}

// Close unsubscribes; its goroutine has exited when Close returns.
func (l *Listener) Close() error {
	err := l.ps.Close()
	<-l.done
	return err
}
