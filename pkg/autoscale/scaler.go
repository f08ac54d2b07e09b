package autoscale

import (
	"context"
	"errors"
)

// Scaler runs the worker fleet: it tells how many worker processes are
// ordered and changes that number. Three backends have it: Local (child
// processes of the scheduler), Kubernetes (a Deployment's scale
// subresource) and Heroku (a formation). Surplus workers are stopped with
// SIGTERM, so that the worker SDK's graceful shutdown lets running jobs
// finish.
type Scaler interface {
	// Workers returns the number of worker processes ordered now.
	Workers(ctx context.Context) (int, error)
	// Scale orders n worker processes.
	Scale(ctx context.Context, n int) error
}

// Errors of the remote backends, matched with errors.Is. Neither is
// retried: only a change of settings or of the platform fixes them.
var (
	// ErrUnauthorized: the platform refused the credentials (401 or 403).
	ErrUnauthorized = errors.New("not authorized")
	// ErrNotFound: no such app, process type, namespace or deployment (404).
	ErrNotFound = errors.New("not found")
)
