package cache

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/redis/go-redis/v9"

	"github.com/warrenhq/warren/pkg/job"
)

// ListenConfirmed is Listen that first waits, until ctx ends, for Redis to
// confirm the subscription, so that every event published after it returns
// reaches the listener. When Redis does not confirm (it is down), it returns
// the listener anyway with the error: the listener subscribes by itself once
// Redis is back, and Close must still be called.
func (c *Cache) ListenConfirmed(ctx context.Context, e Event, log *slog.Logger) (*Listener, error) {
	l := &Listener{
		ps:      c.rdb.Subscribe(ctx, c.channel(e)),
		waiters: map[job.ID]map[*waiter]struct{}{},
		done:    make(chan struct{}),
	}
	var err error
	for {
		msg, rerr := l.ps.Receive(ctx)
		if rerr != nil {
			err = fmt.Errorf("subscribe to %s events: %w", e, rerr)
			break
		}
		if _, ok := msg.(*redis.Subscription); ok {
			break
		}
	}
	go l.loop(log)
	return l, err
}
