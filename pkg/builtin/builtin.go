// Package builtin holds the job types that Warren's stock worker process
// handles, written with the worker SDK as any user's handlers would be:
//
//   - echo: the result is the payload.
//   - sleep {"ms":N}: waits N milliseconds (or until cancelled); result {"slept_ms":N}.
//   - fail {"times":N}: fails the first N attempts, then succeeds with {"attempt":K}.
//   - http {"url":…,"method":"POST","headers":{…},"body":<any JSON>,"timeout":"10s"}:
//     calls the URL; result {"status":S,"body":…}. See HTTP.
package builtin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/warrenhq/warren/pkg/netguard"
	"github.com/warrenhq/warren/pkg/worker"
)

// Options configure the built-in job types.
type Options struct {
	// HTTPAllow lists the internal destinations (loopback, private,
	// link-local) the http job may call: host names, host:port pairs, IPs
	// or CIDRs, as in WARREN_HTTP_ALLOW. Public addresses need no entry.
	HTTPAllow []string
	// MaxResponseBytes caps the response body the http job reads; a larger
	// body fails the job for good. Default 1 MiB.
	MaxResponseBytes int64
}

// Register adds every built-in job type to w. Pass at most one Options;
// without, the http job may call public addresses only.
func Register(w *worker.Worker, opts ...Options) error {
	var o Options
	switch len(opts) {
	case 0:
	case 1:
		o = opts[0]
	default:
		return errors.New("builtin: Register takes at most one Options")
	}
	h, err := NewHTTP(o)
	if err != nil {
		return err
	}
	return errors.Join(
		worker.Handle(w, "echo", Echo),
		worker.Handle(w, "sleep", Sleep),
		worker.Handle(w, "fail", Fail),
		worker.Handle(w, "http", h.Handle),
	)
}

// Echo succeeds with its payload as the result.
func Echo(_ context.Context, j *worker.Job[json.RawMessage]) (json.RawMessage, error) {
	if len(j.Args) == 0 {
		return json.RawMessage("null"), nil
	}
	return j.Args, nil
}

// SleepArgs is the payload of a sleep job.
type SleepArgs struct {
	MS int64 `json:"ms"`
}

// SleepResult is the result of a sleep job.
type SleepResult struct {
	SleptMS int64 `json:"slept_ms"`
}

// Sleep waits Args.MS milliseconds, or until its context ends (a failed
// attempt then, like any handler that runs out of time).
func Sleep(ctx context.Context, j *worker.Job[SleepArgs]) (SleepResult, error) {
	if j.Args.MS < 0 {
		return SleepResult{}, worker.NoRetry(fmt.Errorf("ms is %d; must be zero or more", j.Args.MS))
	}
	t := time.NewTimer(time.Duration(j.Args.MS) * time.Millisecond)
	defer t.Stop()
	select {
	case <-t.C:
		return SleepResult{SleptMS: j.Args.MS}, nil
	case <-ctx.Done():
		return SleepResult{}, fmt.Errorf("sleep of %dms cut short: %w", j.Args.MS, context.Cause(ctx))
	}
}

// FailArgs is the payload of a fail job.
type FailArgs struct {
	Times int `json:"times"`
}

// FailResult is the result of a fail job once it succeeds.
type FailResult struct {
	Attempt int `json:"attempt"`
}

// Fail fails the first Args.Times attempts and then succeeds with the number
// of the attempt, for trying out retries.
func Fail(_ context.Context, j *worker.Job[FailArgs]) (FailResult, error) {
	if j.Args.Times < 0 {
		return FailResult{}, worker.NoRetry(fmt.Errorf("times is %d; must be zero or more", j.Args.Times))
	}
	if j.Attempt <= j.Args.Times {
		return FailResult{}, fmt.Errorf("attempt %d fails, as asked (the first %d do)", j.Attempt, j.Args.Times)
	}
	return FailResult{Attempt: j.Attempt}, nil
}

// NewHTTP returns the http job's handler for these options. Register uses
// it; call it to register the http job under another type name or with
// other options.
func NewHTTP(o Options) (*HTTP, error) {
	g, err := netguard.New(o.HTTPAllow)
	if err != nil {
		return nil, fmt.Errorf("builtin: WARREN_HTTP_ALLOW: %w", err)
	}
	if o.MaxResponseBytes <= 0 {
		o.MaxResponseBytes = 1 << 20
	}
	// One client for every job, so connections are reused; each request's
	// own timeout comes from its context.
	return &HTTP{client: g.Client(0), maxBody: o.MaxResponseBytes}, nil
}
