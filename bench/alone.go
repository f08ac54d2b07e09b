package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/warrenhq/warren/pkg/broker"
	"github.com/warrenhq/warren/pkg/job"
)

// Floor is the floor phase's figures, in milliseconds: the durable steps of
// a job alone, one job at a time, at the latency phase's offered rate.
type Floor struct {
	Rate           int     `json:"rate"`
	Seconds        float64 `json:"seconds"`
	Jobs           int     `json:"jobs"`
	SubmitP50      float64 `json:"submit_p50_ms"`
	SubmitP99      float64 `json:"submit_p99_ms"`
	SucceededP50   float64 `json:"submit_to_succeeded_p50_ms"`
	SucceededP99   float64 `json:"submit_to_succeeded_p99_ms"`
	AchievedPerSec float64 `json:"achieved_submit_per_sec"`
	// The median of each step alone: the INSERT and its commit, the publish
	// and its confirm, the claim's UPDATE and commit, the completion's.
	InsertP50   float64 `json:"insert_p50_ms"`
	PublishP50  float64 `json:"publish_p50_ms"`
	ClaimP50    float64 `json:"claim_p50_ms"`
	CompleteP50 float64 `json:"complete_p50_ms"`
	Steps       string  `json:"steps"`
	Usage       *Usage  `json:"usage,omitempty"`
}

// floorSteps says what the floor phase does for each job.
const floorSteps = "prepared statements; INSERT of the job's row into a copy of the jobs table (same columns and indexes) and its commit; " +
	"a persistent message published on Warren's topology and its confirm (submit ends here); " +
	"on delivery (prefetch = worker concurrency), UPDATE to running and its commit, UPDATE to succeeded and its commit, then the ack"

// floor offers cfg.Rate jobs per second for cfg.Duration through the
// durable steps every Warren job takes, done directly with the services
// (the first shard's Postgres and the stack's RabbitMQ) and no Warren
// process: no HTTP, no load balancer, no group commit, no Redis. It is what
// these steps cost on this machine when each job takes them alone, the
// reference for the latency phase: what the services need, and what
// Warren adds. Submit is timed from before the INSERT to the confirm, and
// succeeded from there to the commit of the UPDATE to succeeded. The table
// is a scratch copy, dropped afterwards.
func floor(ctx context.Context, cfg Config, m *meter) (*Floor, error) {
	db, table, drop, err := scratchJobs(ctx, cfg.DatabaseURLs[0], 2*cfg.Concurrency)
	if err != nil {
		return nil, err
	}
	defer drop()

	prefix := fmt.Sprintf("bench_%x", rand.Uint64())
	// A channel per job in flight, so that each job's publish waits only
	// for its own confirm, not for other jobs' turns.
	b, err := broker.New(ctx, broker.Config{URL: cfg.RabbitMQURL, Prefix: prefix, ConnectionName: "warren-bench-floor",
		PublishChannels: 2 * cfg.Concurrency},
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		return nil, err
	}
	defer b.Close()
	defer deleteTopology(cfg.RabbitMQURL, prefix)
	const queue = "bench"
	if err := b.DeclareQueue(ctx, queue); err != nil {
		return nil, err
	}

	total := int(float64(cfg.Rate) * cfg.Duration.Seconds())
	var (
		mu        sync.Mutex
		begun     = make(map[string]time.Time, total)
		submit    []float64
		succeeded []float64
		failures  atomic.Int64
		ended     atomic.Int64
	)
	done := make(chan struct{})
	end := func() {
		if ended.Add(1) == int64(total) {
			close(done)
		}
	}
	var firstErr error
	var errOnce sync.Once
	fail := func(err error) {
		errOnce.Do(func() { firstErr = err })
		failures.Add(1)
		end()
	}

	insert := `INSERT INTO ` + table + ` (id, tenant, type, queue, priority, state, max_attempts, timeout_ms, payload, created_at)
		VALUES ($1, 'default', 'echo', 'default', 0, 'queued', 3, 60000, $2, now())`
	claim := `UPDATE ` + table + ` SET state = 'running', attempt = attempt + 1, started_at = now(),
		worker_id = 'floor', lease_until = now() + interval '30 seconds', heartbeat_at = now()
		WHERE id = $1 AND state = 'queued'`
	complete := `UPDATE ` + table + ` SET state = 'succeeded', result = $2, finished_at = now(), lease_until = NULL
		WHERE id = $1 AND state = 'running' AND attempt = 1`
	var stmts [3]*sqlx.Stmt
	for i, q := range []string{insert, claim, complete} {
		if stmts[i], err = db.PreparexContext(ctx, q); err != nil {
			return nil, fmt.Errorf("prepare the floor's statements: %w", err)
		}
		defer stmts[i].Close()
	}
	insertStmt, claimStmt, completeStmt := stmts[0], stmts[1], stmts[2]
	// Each step's own time, in milliseconds, by step.
	steps := map[string][]float64{}
	step := func(name string, since time.Time) {
		d := ms(time.Since(since))
		mu.Lock()
		steps[name] = append(steps[name], d)
		mu.Unlock()
	}
	work := func(d *broker.Delivery) {
		var id job.ID
		err := id.UnmarshalText([]byte(d.MessageID))
		if err == nil {
			t := time.Now()
			if _, err = claimStmt.ExecContext(ctx, id); err == nil {
				step("claim", t)
			}
		}
		if err == nil {
			t := time.Now()
			if _, err = completeStmt.ExecContext(ctx, id, `{"echo":true}`); err == nil {
				step("complete", t)
			}
		}
		if err != nil {
			_ = d.Nack(false)
			fail(fmt.Errorf("claim or complete: %w", err))
			return
		}
		if err := d.Ack(); err != nil {
			fail(fmt.Errorf("ack: %w", err))
			return
		}
		mu.Lock()
		succeeded = append(succeeded, ms(time.Since(begun[d.MessageID])))
		mu.Unlock()
		end()
	}
	// Like pkg/worker: at most concurrency deliveries in hand, each worked on
	// in its own goroutine.
	cctx, stopConsume := context.WithCancel(ctx)
	consumed := make(chan error, 1)
	go func() {
		consumed <- b.Consume(cctx, queue, cfg.Concurrency, func(_ context.Context, d *broker.Delivery) { go work(d) })
	}()
	defer func() { stopConsume(); <-consumed }()

	w := m.begin(ctx)
	elapsed := offer(cfg.Rate, total, func(i int) {
		id := job.NewID(time.Now(), 0)
		t0 := time.Now()
		mu.Lock()
		begun[id.String()] = t0
		mu.Unlock()
		if _, err := insertStmt.ExecContext(ctx, id, fmt.Sprintf(`{"i":%d}`, i)); err != nil {
			fail(fmt.Errorf("insert: %w", err))
			return
		}
		step("insert", t0)
		body := fmt.Appendf(nil, `{"id":%q,"type":"echo"}`, id.String())
		t := time.Now()
		if err := b.Publish(ctx, broker.Message{Queue: queue, MessageID: id.String(), Body: body}); err != nil {
			fail(fmt.Errorf("publish: %w", err))
			return
		}
		step("publish", t)
		mu.Lock()
		submit = append(submit, ms(time.Since(t0)))
		mu.Unlock()
	})
	select {
	case <-done:
	case <-ctx.Done():
		return nil, fmt.Errorf("%d of %d floor jobs ended: %w", ended.Load(), total, ctx.Err())
	}
	usage := w.end(ctx, total-int(failures.Load()))
	if n := failures.Load(); n > 0 {
		return nil, fmt.Errorf("%d of %d floor jobs failed, the first with: %w", n, total, firstErr)
	}
	mu.Lock()
	defer mu.Unlock()
	return &Floor{
		Rate: cfg.Rate, Seconds: elapsed.Seconds(), Jobs: total, AchievedPerSec: float64(total) / elapsed.Seconds(),
		SubmitP50: pct(submit, 50), SubmitP99: pct(submit, 99),
		SucceededP50: pct(succeeded, 50), SucceededP99: pct(succeeded, 99),
		Steps: floorSteps, Usage: usage,
		InsertP50: pct(steps["insert"], 50), PublishP50: pct(steps["publish"], 50),
		ClaimP50: pct(steps["claim"], 50), CompleteP50: pct(steps["complete"], 50),
	}, nil
}

// pgCeiling writes n jobs' rows the way Warren's batches do, with nothing
// else on the path: from clients connections at once, each takes the next
// batch of up to batch ids and, each statement its own transaction and
// commit, inserts them in one multi-row INSERT, moves them to running in one
// UPDATE and to succeeded in another, into a copy of the jobs table (same
// columns and indexes) on the first shard. It times the first INSERT to the
// last commit: the most jobs per second Postgres can record on this machine
// when it has the machine to itself.
func pgCeiling(ctx context.Context, url string, n, clients, batch int) (*Throughput, error) {
	db, table, drop, err := scratchJobs(ctx, url, clients)
	if err != nil {
		return nil, err
	}
	defer drop()
	insert := `INSERT INTO ` + table + ` (id, tenant, type, queue, priority, state, max_attempts, timeout_ms, payload, created_at)
		SELECT id, 'default', 'echo', 'default', 0, 'queued', 3, 60000, jsonb_build_object('i', i), now()
		FROM unnest($1::uuid[]) WITH ORDINALITY AS r(id, i)`
	claim := `UPDATE ` + table + ` SET state = 'running', attempt = attempt + 1, started_at = now(),
		worker_id = 'ceiling', lease_until = now() + interval '30 seconds', heartbeat_at = now()
		WHERE id = ANY($1::uuid[]) AND state = 'queued'`
	complete := `UPDATE ` + table + ` SET state = 'succeeded', result = '{"echo":true}', finished_at = now(), lease_until = NULL
		WHERE id = ANY($1::uuid[]) AND state = 'running'`
	var next atomic.Int64
	start := time.Now()
	err = fanOut(clients, func() error {
		for {
			lo := int(next.Add(int64(batch))) - batch
			if lo >= n {
				return nil
			}
			ids := make([]string, 0, batch)
			for range min(batch, n-lo) {
				ids = append(ids, uuidText(job.NewID(time.Now(), 0)))
			}
			for _, q := range []string{insert, claim, complete} {
				res, err := db.ExecContext(ctx, q, pq.Array(ids))
				if err != nil {
					return err
				}
				if k, _ := res.RowsAffected(); k != int64(len(ids)) {
					return fmt.Errorf("a statement wrote %d rows of %d", k, len(ids))
				}
			}
		}
	})
	if err != nil {
		return nil, err
	}
	return throughput(n, time.Since(start)), nil
}

// scratchJobs opens url with a pool of conns and creates a copy of the jobs
// table (same columns, defaults, constraints and indexes; no triggers);
// drop removes it and closes the pool.
func scratchJobs(ctx context.Context, url string, conns int) (db *sqlx.DB, table string, drop func(), err error) {
	db, err = sqlx.Open("postgres", url)
	if err != nil {
		return nil, "", nil, err
	}
	db.SetMaxOpenConns(conns)
	db.SetMaxIdleConns(conns)
	table = fmt.Sprintf("warren_bench_%x", rand.Uint32())
	if _, err := db.ExecContext(ctx, `CREATE TABLE `+table+` (LIKE jobs INCLUDING ALL)`); err != nil {
		_ = db.Close()
		return nil, "", nil, fmt.Errorf("create a scratch copy of the jobs table: %w", err)
	}
	return db, table, func() {
		_, _ = db.ExecContext(context.WithoutCancel(ctx), `DROP TABLE `+table)
		_ = db.Close()
	}, nil
}

// uuidText is id in Postgres's uuid text form.
func uuidText(id job.ID) string {
	v, _ := id.Value() // never fails
	return v.(string)
}
