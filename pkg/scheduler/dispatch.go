package scheduler

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/warrenhq/warren/pkg/broker"
	"github.com/warrenhq/warren/pkg/job"
	"github.com/warrenhq/warren/pkg/store"
)

// batchTimeout bounds one dispatch batch on a shard (select, publish,
// update, commit), so a shard that stops answering costs that shard's
// dispatch a round, not the scheduler.
const batchTimeout = 30 * time.Second

// dispatcher publishes one shard's due scheduled and retrying jobs: it
// marks them queued (committed), publishes them, and marks them published
// so that the relay leaves them alone. A batch whose publish fails stays
// queued and goes out with the relay.
type dispatcher struct {
	st interface {
		PublishDue(ctx context.Context, shard, limit int, publish func(context.Context, []store.DueJob) error) (int, error)
	}
	br             publisher
	shard          int
	batch          int
	publishTimeout time.Duration
	m              *metrics
	log            *slog.Logger
}

// run publishes due jobs batch after batch until a batch comes back short,
// so that a backlog drains at the speed of RabbitMQ's confirms rather than
// one batch per tick.
func (d *dispatcher) run(ctx context.Context) error {
	// While RabbitMQ is down, due jobs wait as they are: moving them to
	// queued would only hand them to the relay.
	if err := d.br.Ready(ctx); err != nil {
		d.m.dispatchErrors.Inc()
		return fmt.Errorf("dispatch shard %d: %w", d.shard, err)
	}
	for ctx.Err() == nil {
		bctx, cancel := context.WithTimeout(ctx, batchTimeout)
		n, err := d.st.PublishDue(bctx, d.shard, d.batch, d.publish)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			d.m.dispatchErrors.Inc()
			return err
		}
		if n > 0 {
			d.m.batches.Inc()
			d.m.dispatched.Add(float64(n))
			d.log.Debug("dispatched due jobs", "jobs", n)
		}
		if n < d.batch {
			return nil
		}
	}
	return nil
}

// publish sends the jobs' messages in one confirmed batch.
func (d *dispatcher) publish(ctx context.Context, due []store.DueJob) error {
	if err := publishJobs(ctx, d.br, d.publishTimeout, due); err != nil {
		return fmt.Errorf("dispatch %d due jobs of shard %d: %w", len(due), d.shard, err)
	}
	return nil
}

// publisher is what the duties that publish jobs need from the broker.
type publisher interface {
	Publish(ctx context.Context, msgs ...broker.Message) error
	Ready(ctx context.Context) error
}

// publishJobs sends the jobs' messages in one call and waits, at most
// timeout, for RabbitMQ to confirm them all.
func publishJobs(ctx context.Context, br publisher, timeout time.Duration, jobs []store.DueJob) error {
	msgs := make([]broker.Message, len(jobs))
	for i, j := range jobs {
		body, err := json.Marshal(job.Message{ID: j.ID, Type: j.Type})
		if err != nil {
			return fmt.Errorf("encode message of job %s: %w", j.ID, err)
		}
		msgs[i] = broker.Message{Queue: j.Queue, Priority: uint8(min(max(j.Priority, 0), 255)), MessageID: j.ID.String(), Body: body}
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return br.Publish(ctx, msgs...)
}
