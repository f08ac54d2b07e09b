// Package scaletest runs the autoscaler's local backend for real: the built
// api and scheduler against the services `make test` starts, the scheduler
// running the worker fleet as its own child processes. A burst of sleep jobs
// must take the fleet from its minimum to several workers and back after the
// drain, and from zero (WARREN_AUTOSCALE_MIN=0) back to zero, without a job
// lost or cut short.
package scaletest
