package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jmoiron/sqlx"
	_ "github.com/lib/pq" // the Postgres driver
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenhq/warren/pkg/broker"
	"github.com/warrenhq/warren/pkg/client"
	"github.com/warrenhq/warren/pkg/job"
)

// ceiling publishes n persistent messages with pipelined confirms (several
// publishers, 100 messages per Publish, broker.DefaultPublishChannels channels
// in flight) to a queue declared by pkg/broker under its own prefix, so the
// topology is Warren's, and consumes them with manual acks; it times the
// first publish to the last ack.
func ceiling(ctx context.Context, url string, n int) (*Throughput, error) {
	prefix := fmt.Sprintf("bench_%x", rand.Uint64())
	b, err := broker.New(ctx, broker.Config{URL: url, Prefix: prefix, ConnectionName: "warren-bench"},
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		return nil, err
	}
	defer b.Close()
	defer deleteTopology(url, prefix)
	const queue = "bench"
	if err := b.DeclareQueue(ctx, queue); err != nil {
		return nil, err
	}
	var acked atomic.Int64
	done := make(chan struct{})
	cctx, stopConsume := context.WithCancel(ctx)
	consumed := make(chan error, 1)
	go func() {
		consumed <- b.Consume(cctx, queue, 256, func(_ context.Context, d *broker.Delivery) {
			if err := d.Ack(); err == nil && acked.Add(1) == int64(n) {
				close(done)
			}
		})
	}()
	defer func() { stopConsume(); <-consumed }()

	body := []byte(`{"type":"echo","payload":{"hello":"world"}}`)
	const per = 100
	var next atomic.Int64
	errs := make(chan error, 8)
	start := time.Now()
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for {
				lo := int(next.Add(per)) - per
				if lo >= n {
					return
				}
				msgs := make([]broker.Message, 0, per)
				for i := lo; i < min(lo+per, n); i++ {
					msgs = append(msgs, broker.Message{Queue: queue, MessageID: fmt.Sprint(i), Body: body})
				}
				if err := b.Publish(ctx, msgs...); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	select {
	case err := <-errs:
		return nil, err
	default:
	}
	select {
	case <-done:
	case <-ctx.Done():
		return nil, fmt.Errorf("%d of %d messages acked: %w", acked.Load(), n, ctx.Err())
	}
	return throughput(n, time.Since(start)), nil
}

// deleteTopology removes the ceiling's queues and exchange, best effort.
func deleteTopology(url, prefix string) {
	conn, err := amqp.Dial(url)
	if err != nil {
		return
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return
	}
	for _, q := range []string{".q.bench", ".park.bench", ".dead.bench"} {
		_, _ = ch.QueueDelete(prefix+q, false, false, false)
	}
	_ = ch.ExchangeDelete(prefix, false, false)
}

func echoReq(cfg Config, i int) job.Request {
	return job.Request{Type: "echo", Queue: cfg.Queue, Payload: json.RawMessage(fmt.Sprintf(`{"i":%d}`, i))}
}

// batchPath submits cfg.N echo jobs in batches from cfg.Clients clients and
// times the first submit to the last job succeeded (see finish).
func batchPath(ctx context.Context, c *client.Client, cfg Config, m *meter) (*Throughput, error) {
	if err := drained(ctx, c, cfg.Queue); err != nil {
		return nil, fmt.Errorf("waiting for an idle queue before starting: %w", err)
	}
	var next atomic.Int64
	ids := make([]string, cfg.N)
	w := m.begin(ctx)
	start := time.Now()
	err := fanOut(cfg.Clients, func() error {
		for {
			lo := int(next.Add(int64(cfg.BatchSize))) - cfg.BatchSize
			if lo >= cfg.N {
				return nil
			}
			reqs := make([]job.Request, 0, cfg.BatchSize)
			for i := lo; i < min(lo+cfg.BatchSize, cfg.N); i++ {
				reqs = append(reqs, echoReq(cfg, i))
			}
			items, err := c.SubmitBatch(ctx, reqs)
			if err != nil {
				return err
			}
			for _, it := range items {
				if it.Err != nil {
					return fmt.Errorf("batch item %d: %w", it.Index, it.Err)
				}
				ids[lo+it.Index] = it.Job.ID.String()
			}
		}
	})
	if err != nil {
		return nil, err
	}
	return finish(ctx, c, cfg.Queue, start, ids, w)
}

// singlePath submits cfg.N echo jobs one request each from 4×cfg.Clients
// clients and times the first submit to the last job succeeded.
func singlePath(ctx context.Context, c *client.Client, cfg Config, m *meter) (*Throughput, error) {
	if err := drained(ctx, c, cfg.Queue); err != nil {
		return nil, fmt.Errorf("waiting for an idle queue before starting: %w", err)
	}
	var next atomic.Int64
	ids := make([]string, cfg.N)
	w := m.begin(ctx)
	start := time.Now()
	err := fanOut(4*cfg.Clients, func() error {
		for {
			i := int(next.Add(1)) - 1
			if i >= cfg.N {
				return nil
			}
			j, err := c.Submit(ctx, echoReq(cfg, i))
			if err != nil {
				return err
			}
			ids[i] = j.ID.String()
		}
	})
	if err != nil {
		return nil, err
	}
	return finish(ctx, c, cfg.Queue, start, ids, w)
}

// lastJobs is how many of the newest jobs finish waits for.
const lastJobs = 200

// finish waits for a throughput phase's jobs (ids, in submission order) and
// times it: the end is the latest finished_at of the newest lastJobs jobs,
// which the queue's first-in, first-out order makes the last to finish.
// It waits for those jobs one by one with long polls (GET ?wait, woken by
// Redis: no load on Postgres while the stack works), fails unless each
// succeeded, then checks once that the queue has drained, so an older job
// still running cannot go unnoticed. The window w ends before that check.
func finish(ctx context.Context, c *client.Client, queue string, start time.Time, ids []string, w *window) (*Throughput, error) {
	var end time.Time
	for _, id := range ids[max(0, len(ids)-lastJobs):] {
		j, err := c.Wait(ctx, id)
		if err != nil {
			return nil, err
		}
		if j.State != job.Succeeded {
			return nil, fmt.Errorf("job %s is %s, not succeeded", j.ID, j.State)
		}
		if j.FinishedAt != nil && j.FinishedAt.After(end) {
			end = *j.FinishedAt
		}
	}
	usage := w.end(ctx, len(ids))
	if err := drained(ctx, c, queue); err != nil {
		return nil, err
	}
	t := throughput(len(ids), end.Sub(start))
	t.Usage = usage
	return t, nil
}

// latency offers cfg.Rate submits per second for cfg.Duration, each on its
// own schedule whatever the earlier ones take (open loop), then reads every
// job back for its timestamps. Its usage window ends when the queue has
// drained (found by polling every drainPoll, so up to that much idle time
// is in it), before the reads.
func latency(ctx context.Context, c *client.Client, cfg Config, m *meter) (*Latency, error) {
	if err := drained(ctx, c, cfg.Queue); err != nil {
		return nil, err
	}
	total := int(float64(cfg.Rate) * cfg.Duration.Seconds())
	submit := make([]float64, total)
	ids := make([]string, total)
	var failures atomic.Int64
	w := m.begin(ctx)
	elapsed := offer(cfg.Rate, total, func(i int) {
		t0 := time.Now()
		j, err := c.Submit(ctx, echoReq(cfg, i))
		submit[i] = ms(time.Since(t0))
		if err != nil {
			failures.Add(1)
			return
		}
		ids[i] = j.ID.String()
	})
	if err := drained(ctx, c, cfg.Queue); err != nil {
		return nil, err
	}
	usage := w.end(ctx, total-int(failures.Load()))
	var mu sync.Mutex
	var started, succeeded []float64
	notOK := 0
	var idx atomic.Int64
	err := fanOut(16, func() error {
		for {
			i := int(idx.Add(1)) - 1
			if i >= total {
				return nil
			}
			if ids[i] == "" {
				continue
			}
			j, err := c.Get(ctx, ids[i])
			if err != nil {
				return err
			}
			mu.Lock()
			if j.State != job.Succeeded || j.StartedAt == nil || j.FinishedAt == nil {
				notOK++
			} else {
				started = append(started, ms(j.StartedAt.Sub(j.CreatedAt)))
				succeeded = append(succeeded, ms(j.FinishedAt.Sub(j.CreatedAt)))
			}
			mu.Unlock()
		}
	})
	if err != nil {
		return nil, err
	}
	l := &Latency{
		Rate: cfg.Rate, Seconds: elapsed.Seconds(), Jobs: total,
		AchievedPerSec: float64(total) / elapsed.Seconds(),
		SubmitFailures: int(failures.Load()), NotSucceeded: notOK,
		ClockNote: "submit is measured by the client; started and succeeded are the job's started_at/finished_at minus its created_at (the api's clock)",
		Usage:     usage,
	}
	l.SubmitP50, l.SubmitP99 = pct(submit, 50), pct(submit, 99)
	l.StartedP50, l.StartedP99 = pct(started, 50), pct(started, 99)
	l.SucceededP50, l.SucceededP99 = pct(succeeded, 50), pct(succeeded, 99)
	return l, nil
}

// offer calls fn(i) for each i below total, each in its own goroutine at
// its own time, rate calls a second (open loop: a slow call delays no
// other), and returns, once every call has, how long the offering took.
func offer(rate, total int, fn func(i int)) time.Duration {
	interval := time.Second / time.Duration(rate)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range total {
		if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
			time.Sleep(d)
		}
		wg.Go(func() { fn(i) })
	}
	elapsed := time.Since(start)
	wg.Wait()
	return elapsed
}

// drained polls the queue's statistics until nothing is left to run in it.
func drained(ctx context.Context, c *client.Client, queue string) error {
	for {
		qs, _, err := c.Queues(ctx)
		if err != nil {
			return err
		}
		busy := int64(0)
		for _, q := range qs {
			if q.Name == queue {
				busy = q.Ready + q.Running + q.Scheduled + q.Retrying
			}
		}
		if busy == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("queue %s still has %d jobs to run: %w", queue, busy, ctx.Err())
		case <-time.After(drainPoll):
		}
	}
}

// drainPoll is how often the bench asks whether the queue has drained,
// before each phase and once after the throughput phases. Each GET
// /v1/queues counts the last minute's finished jobs on every shard (tens of
// milliseconds of Postgres under load), so the phases themselves never poll.
const drainPoll = time.Second

// fanOut runs fn in n goroutines and returns the first error.
func fanOut(n int, fn func() error) error {
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	for range n {
		wg.Go(func() {
			if err := fn(); err != nil {
				once.Do(func() { first = err })
			}
		})
	}
	wg.Wait()
	return first
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// pct is the p-th percentile of xs (nearest rank); 0 when empty.
func pct(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	k := int(p/100*float64(len(s))+0.5) - 1
	return s[max(0, min(k, len(s)-1))]
}

func pgDurability(ctx context.Context, url string) (fsync, syncCommit string, err error) {
	db, err := sqlx.Open("postgres", url)
	if err != nil {
		return "", "", err
	}
	defer db.Close()
	if err := db.GetContext(ctx, &fsync, "SHOW fsync"); err != nil {
		return "", "", err
	}
	if err := db.GetContext(ctx, &syncCommit, "SHOW synchronous_commit"); err != nil {
		return "", "", err
	}
	return fsync, syncCommit, nil
}
