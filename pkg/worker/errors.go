package worker

import (
	"errors"
	"fmt"
	"time"
)

// ErrDuplicateType is returned by Handle when a job type already has a handler.
var ErrDuplicateType = errors.New("job type already has a handler")

// Why a handler's context was cancelled before its deadline, as
// context.Cause(ctx) reports it.
var (
	// ErrJobCancelled: the job was cancelled (POST /v1/jobs/{id}/cancel).
	// Its outcome is not recorded: it stays cancelled.
	ErrJobCancelled = errors.New("job cancelled")
	// ErrLeaseLost: the job is no longer held by this worker, e.g. its lease
	// ran out while Postgres was unreachable and the scheduler gave it to
	// another worker. Its outcome is not recorded.
	ErrLeaseLost = errors.New("job no longer held by this worker")
	// ErrShutdown: the worker is shutting down and the shutdown grace is
	// over. A handler that returns an error now has its job handed back to
	// the queue without using an attempt; one that returns a result succeeds.
	ErrShutdown = errors.New("worker shutting down")
)

// NoRetryError fails a job for good: it goes to dead without further attempts.
type NoRetryError struct{ Err error }

// NoRetry wraps err so that the job is not retried.
func NoRetry(err error) error { return &NoRetryError{Err: err} }

func (e *NoRetryError) Error() string { return fmt.Sprintf("no retry: %v", e.Err) }

// Unwrap returns the wrapped error.
func (e *NoRetryError) Unwrap() error { return e.Err }

// SnoozeError asks for the job to run again after Delay without using an attempt.
type SnoozeError struct{ Delay time.Duration }

// Snooze returns an error that reschedules the job after d, not counting the attempt.
func Snooze(d time.Duration) error { return &SnoozeError{Delay: d} }

func (e *SnoozeError) Error() string { return fmt.Sprintf("snooze for %v", e.Delay) }

// PanicError is the error recorded when a handler panics.
type PanicError struct {
	Value any
	Stack string
}

func (e *PanicError) Error() string { return fmt.Sprintf("handler panicked: %v", e.Value) }

func isNoRetry(err error) bool {
	var nr *NoRetryError
	return errors.As(err, &nr)
}
