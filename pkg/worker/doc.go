// Package worker is Warren's worker SDK: a Go program registers typed
// handlers by job type and runs them for jobs submitted over Warren's REST
// API (or the Go client).
//
//	w, err := worker.New(worker.Config{DatabaseURLs: …, RabbitMQURL: …, RedisURL: …})
//	err = worker.Handle(w, "image.resize", func(ctx context.Context, j *worker.Job[Resize]) (Thumb, error) {
//		// j.ID, j.Attempt, j.Args; ctx carries the deadline and cancellation
//		return resize(ctx, j.Args)
//	}, worker.Concurrency(4), worker.Timeout(5*time.Minute))
//	err = w.Run(ctx) // until ctx is cancelled (SIGTERM), then drains gracefully
//
// # Handlers and their outcomes
//
// A handler receives a *Job[A] whose Args is the payload decoded from JSON
// into A, and returns a result R, stored as JSON. Its return is the control
// channel:
//
//   - nil error: the job succeeded; the result is stored (and cached in Redis).
//   - an error: the attempt failed; the job is retried after a backoff
//     (exponential with full jitter, or the type's Backoff) until its
//     attempts are used up, and then it is dead.
//   - NoRetry(err): the job is dead at once. A payload that does not decode
//     into A, or a result larger than Config.MaxResultBytes, ends the same way.
//   - Snooze(d): the job runs again after d without using an attempt.
//   - a panic: a failed attempt, like an error; the worker carries on.
//
// Job.Attempt counts the attempts started so far, this one included, and
// Job.MaxAttempts is the last one. Job.Progress stores a JSON progress
// report that GET /v1/jobs/{id} shows while the job runs.
//
// # Per-type options
//
// Handle takes options for its type: Queues (the queues it is consumed
// from, besides Config.Queues), Concurrency (how many of its jobs run at
// once in this process, within Config.Concurrency), Timeout (the attempt's
// deadline; a shorter timeout submitted with the job wins), MaxAttempts (a
// cap on the job's max_attempts) and Backoff (the delay before a retry).
//
// # Middleware
//
// Inside the worker every type is a Handler, which works on a *JobInfo (the
// job with its raw payload) and returns the JSON result. Worker.Use wraps
// every handler in middleware, func(Handler) Handler, the way net/http
// middleware wraps an http.Handler: for logging, metrics, tracing, or to
// change an outcome. The first middleware added is the outermost.
//
// # How jobs run
//
// The API stores a job in Postgres and publishes its id to RabbitMQ. The
// worker consumes the queues, claims the job in Postgres (queued → running,
// with a lease of Config.Lease held by this worker) and only then acks the
// message: from there Postgres owns the job, so a job may run for hours
// without RabbitMQ's consumer timeout getting in the way. A message whose
// job is no longer queued (finished, cancelled, a duplicate) is acked and
// dropped; a message of a type this worker has no handler for is parked and
// comes back later for a worker that has one; an undecodable message is
// rejected.
//
// While a job runs the worker renews its lease every Lease/3, for all its
// running jobs at once. If the worker dies, the scheduler gives the job to
// another worker once the lease has run out. If a renewal finds a job no
// longer held (cancelled, or given to another worker), its handler's
// context is cancelled with ErrLeaseLost.
//
// Messages received but not yet claimed wait in the worker, at most
// Config.Prefetch per queue, highest priority first, for a free slot; a type
// at its concurrency limit does not hold up other types.
//
// # Cancellation and deadlines
//
// The handler's context ends when the attempt's deadline passes (a failed
// attempt), when the job is cancelled through the API (within a second,
// through a Redis event; context.Cause(ctx) is ErrJobCancelled), or when a
// shutdown's grace is over (ErrShutdown). The outcome of a cancelled job is
// not recorded: every write is fenced by attempt and state, so it stays
// cancelled whatever the handler returns.
//
// # Shutdown
//
// When Run's context is cancelled (SIGTERM) the worker stops taking jobs,
// returns the messages it had not started, and lets running jobs finish
// within Config.ShutdownGrace. Then it cancels the rest; a job whose handler
// returns an error now is handed back: queued again without using an
// attempt and published for another worker. Run returns once every
// goroutine it started has exited.
//
// # Observability
//
// Worker.Metrics serves Prometheus metrics: warren_worker_jobs_started_total,
// warren_worker_jobs_finished_total by outcome (succeeded, retrying, dead,
// snoozed, handed_back, cancelled, error), warren_worker_job_duration_seconds,
// warren_worker_jobs_running, and counters of stale and parked messages and
// lease renewals. Every few seconds the worker writes a heartbeat to Redis
// (host, pid, queues, types, concurrency, busy) that GET /v1/workers lists,
// and removes it on shutdown.
//
// # Guarantees
//
// Execution is at least once and success at most once: a job whose worker
// died may run again, but it is marked succeeded only once, and a
// redelivered message of a finished job is not run. Handlers should be
// idempotent and honour their context.
package worker
