package scheduler

import (
	"context"
	"errors"
	"log/slog"
	"time"
)

// depthGauge keeps the queue depth gauges up to date for every queue that
// has jobs.
type depthGauge struct {
	st interface {
		QueueNames(ctx context.Context) ([]string, error)
	}
	br interface {
		QueueDepth(ctx context.Context, queue string) (ready, consumers int, err error)
		Ready(ctx context.Context) error
	}
	m   *metrics
	log *slog.Logger

	known map[string]bool // queues with gauges set; touched by run only
}

func (g *depthGauge) run(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := g.br.Ready(ctx); err != nil {
		g.forget(nil)
		return err
	}
	// A shard that does not answer leaves out only its queues.
	queues, listErr := g.st.QueueNames(ctx)
	seen := make(map[string]bool, len(queues))
	var errs []error
	for _, q := range queues {
		ready, consumers, err := g.br.QueueDepth(ctx, q)
		if err != nil {
			// Most often the queue was never declared in RabbitMQ (only
			// delayed jobs so far); a stale figure would mislead, so the
			// gauge goes until a figure comes back.
			g.log.Debug("queue depth unavailable", "queue", q, "error", err)
			if ctx.Err() != nil {
				errs = append(errs, err)
				break
			}
			continue
		}
		seen[q] = true
		g.m.queueReady.WithLabelValues(q).Set(float64(ready))
		g.m.queueConsumers.WithLabelValues(q).Set(float64(consumers))
	}
	g.forget(seen)
	return errors.Join(append(errs, listErr)...)
}

// forget removes the gauges of the queues not in keep, and remembers keep.
func (g *depthGauge) forget(keep map[string]bool) {
	for q := range g.known {
		if !keep[q] {
			g.m.queueReady.DeleteLabelValues(q)
			g.m.queueConsumers.DeleteLabelValues(q)
		}
	}
	g.known = keep
}
