package worker

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime/debug"

	"github.com/warrenhq/warren/pkg/job"
)

// Job is what a handler receives: the job's identity and its decoded payload.
type Job[A any] struct {
	ID          string
	Type        string
	Queue       string
	Priority    int
	Attempt     int // attempts started so far, this one included
	MaxAttempts int
	Args        A
}

// HandlerFunc handles jobs whose payload decodes into A and whose result
// encodes from R.
type HandlerFunc[A, R any] func(ctx context.Context, j *Job[A]) (R, error)

// handler runs a stored job and returns its JSON result.
type handler interface {
	run(ctx context.Context, j *job.Job) (job.JSON, error)
}

type typed[A, R any] struct{ fn HandlerFunc[A, R] }

func (t typed[A, R]) run(ctx context.Context, j *job.Job) (job.JSON, error) {
	in := &Job[A]{
		ID: j.ID.String(), Type: j.Type, Queue: j.Queue, Priority: j.Priority,
		Attempt: j.Attempt, MaxAttempts: j.MaxAttempts,
	}
	if len(j.Payload) > 0 && string(j.Payload) != "null" {
		if err := json.Unmarshal(j.Payload, &in.Args); err != nil {
			// The payload will never decode: retrying cannot help.
			return nil, NoRetry(fmt.Errorf("decode payload of %s job: %w", j.Type, err))
		}
	}
	out, err := t.fn(ctx, in)
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(out)
	if err != nil {
		return nil, NoRetry(fmt.Errorf("encode result of %s job: %w", j.Type, err))
	}
	return b, nil
}

// Handle registers fn for jobs of type typ. Registering a type twice returns
// ErrDuplicateType; registering after Run has started is an error too.
func Handle[A, R any](w *Worker, typ string, fn HandlerFunc[A, R]) error {
	if typ == "" || fn == nil {
		return fmt.Errorf("worker: Handle needs a job type and a function")
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.started {
		return fmt.Errorf("worker: Handle(%q) after Run", typ)
	}
	if _, ok := w.handlers[typ]; ok {
		return fmt.Errorf("worker: %q: %w", typ, ErrDuplicateType)
	}
	w.handlers[typ] = typed[A, R]{fn: fn}
	return nil
}

// call runs h, turning a panic into a failed attempt.
func call(ctx context.Context, h handler, j *job.Job) (res job.JSON, err error) {
	defer func() {
		if v := recover(); v != nil {
			err = &PanicError{Value: v, Stack: string(debug.Stack())}
		}
	}()
	return h.run(ctx, j)
}
