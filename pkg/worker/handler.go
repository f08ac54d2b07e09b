package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime/debug"
	"time"

	"github.com/warrenhq/warren/pkg/job"
)

// Job is what a typed handler receives: the job's identity and its payload
// decoded into A.
type Job[A any] struct {
	ID          string
	Type        string
	Queue       string
	Priority    int
	Attempt     int // attempts started so far, this one included
	MaxAttempts int // after this attempt fails the job is dead
	Args        A

	run *active // nil when the Job was made by hand, e.g. in a unit test
}

// Progress records v, any value that encodes to JSON, as the job's progress;
// GET /v1/jobs/{id} shows the latest report while the job runs and after.
// It fails with ErrJobCancelled or ErrLeaseLost once the job is no longer
// this attempt's to report on. On a Job built by hand (a handler called
// directly in a unit test) it does nothing and returns nil.
func (j *Job[A]) Progress(ctx context.Context, v any) error { return j.run.progress(ctx, v) }

// HandlerFunc handles jobs whose payload decodes into A and whose result
// encodes from R. Handle registers one for a job type.
type HandlerFunc[A, R any] func(ctx context.Context, j *Job[A]) (R, error)

// JobInfo is a job as middleware sees it: its identity and raw payload.
type JobInfo struct {
	ID          string
	Type        string
	Queue       string
	Priority    int
	Attempt     int
	MaxAttempts int
	Payload     json.RawMessage
	CreatedAt   time.Time

	run *active
}

// Progress records v as the job's progress, like Job.Progress.
func (j *JobInfo) Progress(ctx context.Context, v any) error { return j.run.progress(ctx, v) }

// Handler runs one job and returns its result as JSON. Every registered type
// is a Handler inside the worker; middleware wraps Handlers, the way
// net/http's middleware wraps http.Handler. The returned error follows the
// same rules as a typed handler's: nil succeeds, NoRetry and Snooze steer,
// anything else fails the attempt.
type Handler interface {
	Work(ctx context.Context, j *JobInfo) (job.JSON, error)
}

// WorkFunc adapts a function to a Handler.
type WorkFunc func(ctx context.Context, j *JobInfo) (job.JSON, error)

// Work calls f.
func (f WorkFunc) Work(ctx context.Context, j *JobInfo) (job.JSON, error) { return f(ctx, j) }

// Middleware wraps a Handler, to run code around every job: logging,
// metrics, tracing, recovering, enriching the context.
type Middleware func(next Handler) Handler

// typed adapts a HandlerFunc to a Handler: it decodes the payload and
// encodes the result.
type typed[A, R any] struct{ fn HandlerFunc[A, R] }

func (t typed[A, R]) Work(ctx context.Context, info *JobInfo) (job.JSON, error) {
	in := &Job[A]{
		ID: info.ID, Type: info.Type, Queue: info.Queue, Priority: info.Priority,
		Attempt: info.Attempt, MaxAttempts: info.MaxAttempts, run: info.run,
	}
	if len(info.Payload) > 0 && string(info.Payload) != "null" {
		if err := json.Unmarshal(info.Payload, &in.Args); err != nil {
			// The payload will never decode: retrying cannot help.
			return nil, NoRetry(fmt.Errorf("decode payload of %s job: %w", info.Type, err))
		}
	}
	out, err := t.fn(ctx, in)
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(out)
	if err != nil {
		return nil, NoRetry(fmt.Errorf("encode result of %s job: %w", info.Type, err))
	}
	return b, nil
}

// Handle registers fn for jobs of type typ, with options for this type:
// the queues it is consumed from, its concurrency, timeout, maximum attempts
// and backoff. Registering a type twice returns ErrDuplicateType;
// registering after Run has started is an error too.
func Handle[A, R any](w *Worker, typ string, fn HandlerFunc[A, R], opts ...HandlerOption) error {
	if typ == "" || fn == nil {
		return errors.New("worker: Handle needs a job type and a function")
	}
	reg := &registration{typ: typ, handler: typed[A, R]{fn: fn}}
	for _, o := range opts {
		if o == nil {
			continue
		}
		if err := o(reg); err != nil {
			return fmt.Errorf("worker: Handle(%q): %w", typ, err)
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.started {
		return fmt.Errorf("worker: Handle(%q) after Run", typ)
	}
	if _, ok := w.regs[typ]; ok {
		return fmt.Errorf("worker: %q: %w", typ, ErrDuplicateType)
	}
	w.regs[typ] = reg
	return nil
}

// registration is a job type's handler and options.
type registration struct {
	typ         string
	handler     Handler // with the middleware applied, once Run starts
	queues      []string
	concurrency int // 0: bounded by Config.Concurrency only
	timeout     time.Duration
	maxAttempts int
	backoff     func(attempt int) time.Duration
}

// HandlerOption tunes how one job type is run; pass them to Handle.
type HandlerOption func(*registration) error

// Queues names the queues jobs of this type are consumed from, in addition
// to Config.Queues: the worker consumes the union of Config.Queues and every
// type's queues.
func Queues(names ...string) HandlerOption {
	return func(r *registration) error {
		for _, n := range names {
			if n == "" {
				return errors.New("Queues: empty queue name")
			}
		}
		r.queues = append(r.queues, names...)
		return nil
	}
}

// Concurrency caps how many jobs of this type run at once in this process
// (Config.Concurrency caps all types together).
func Concurrency(n int) HandlerOption {
	return func(r *registration) error {
		if n < 1 {
			return fmt.Errorf("Concurrency(%d): must be at least 1", n)
		}
		r.concurrency = n
		return nil
	}
}

// Timeout is the deadline of one attempt of this type. When the job was
// submitted with a timeout too, the smaller of the two applies.
func Timeout(d time.Duration) HandlerOption {
	return func(r *registration) error {
		if d <= 0 {
			return fmt.Errorf("Timeout(%v): must be positive", d)
		}
		r.timeout = d
		return nil
	}
}

// MaxAttempts caps the attempts of jobs of this type: once attempt n has
// failed the job is dead, even if it was submitted with a higher
// max_attempts. A lower max_attempts on the job still applies.
func MaxAttempts(n int) HandlerOption {
	return func(r *registration) error {
		if n < 1 {
			return fmt.Errorf("MaxAttempts(%d): must be at least 1", n)
		}
		r.maxAttempts = n
		return nil
	}
}

// Backoff sets the delay before the next attempt after the given attempt
// (1 for the first) failed. The default is DefaultBackoff;
// ExponentialBackoff makes one with other bounds or a seeded source. fn is
// called from many goroutines at once.
func Backoff(fn func(attempt int) time.Duration) HandlerOption {
	return func(r *registration) error {
		if fn == nil {
			return errors.New("Backoff: nil function")
		}
		r.backoff = fn
		return nil
	}
}

// call runs h, turning a panic into a failed attempt.
func call(ctx context.Context, h Handler, info *JobInfo) (res job.JSON, err error) {
	defer func() {
		if v := recover(); v != nil {
			err = &PanicError{Value: v, Stack: string(debug.Stack())}
		}
	}()
	return h.Work(ctx, info)
}
